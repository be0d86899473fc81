"""The chat engine (edgekit.chat.engine): streaming, cancel, the context window, deployments, live reshape."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from chat_helpers import SlowSession, make_engine

from edgekit.chat.engine import ChatEngine, fit_context, render_ids
from edgekit.engines import Sampling
from edgekit.errors import UsageError


def test_engine_streams_text_with_live_figures(torch_session, tokenizer) -> None:
    engine = make_engine(torch_session, tokenizer)
    pieces = list(engine.reply([{"role": "user", "content": "Hello there"}], Sampling(max_new_tokens=10)))
    stats = pieces[-1].stats
    assert 1 <= stats.new_tokens <= 10 and stats.ttft_ms is not None and stats.ttft_ms > 0
    assert len(stats.ms_per_token) == stats.new_tokens - 1
    assert stats.context_tokens == stats.prompt_tokens + stats.new_tokens
    text = "".join(p.text for p in pieces)
    assert text == tokenizer.decode(tokenizer.encode(text), skip_special_tokens=True)
    with pytest.raises(UsageError):
        list(engine.reply([{"role": "user", "content": "   "}], Sampling()))


def test_engine_cancel_stops_at_once(torch_session, tokenizer) -> None:
    engine = make_engine(SlowSession(torch_session, 0.0), tokenizer)
    cancel = threading.Event()
    pieces = []
    for piece in engine.reply([{"role": "user", "content": "Tell me"}], Sampling(max_new_tokens=50), cancel):
        pieces.append(piece)
        if len(pieces) == 3:
            cancel.set()
    assert pieces[-1].stats.cancelled and pieces[-1].stats.new_tokens == 3


def test_context_window_drops_oldest_turns_but_keeps_system_and_newest(tokenizer) -> None:
    msgs = [{"role": "system", "content": "Be brief."}]
    for i in range(6):
        msgs += [{"role": "user", "content": f"question {i} " * 8}, {"role": "assistant", "content": "answer " * 8}]
    msgs.append({"role": "user", "content": "last one"})
    full = len(render_ids(tokenizer, msgs))
    kept, ids, dropped = fit_context(tokenizer, msgs, full - 20, reserve=16)
    assert dropped >= 2 and dropped % 2 == 0 and kept[0]["role"] == "system" and kept[-1]["content"] == "last one"
    assert kept[1]["role"] == "user" and len(ids) + 16 <= full - 20
    _, _, none = fit_context(tokenizer, msgs, full + 100, reserve=16)
    assert none == 0
    with pytest.raises(UsageError, match="context window"):
        fit_context(tokenizer, [{"role": "user", "content": "word " * 400}], 64, reserve=8)


def test_chat_command_bad_input(cli, tmp_path: Path) -> None:
    r = cli("chat", str(tmp_path / "nowhere"), "--prompt", "hi")
    assert r.code == 2 and "no deployment" in r.err and "edgekit deploy" in r.err
    (tmp_path / "broken").mkdir()
    r = cli("chat", str(tmp_path / "broken"), "--prompt", "hi")
    assert r.code == 3 and "redeploy" in r.err and "Traceback" not in r.err
    r = cli("chat")
    assert r.code == 2 and "deployment" in r.err


def test_live_reshape_matches_the_extracted_checkpoint(tiny_plan: Path, tmp_path: Path) -> None:
    """Torch on an elastic model: each shape built from memory decodes the same tokens as its extracted
    Hugging Face checkpoint, and switching shape is fast."""
    from edgekit.cli import main
    from edgekit.elastic.source import Source
    from edgekit.engines import get_engine
    from edgekit.engines.base import timed_stream

    source = Source.resolve(plan=str(tiny_plan))
    engine = ChatEngine.from_source(source, "d6-w100")
    assert engine.can_reshape and "d3-f50-h2" in engine.shapes and engine.info.shape == "d6-f100-h3"
    ids = [5, 17, 42, 99, 7]
    greedy = Sampling(max_new_tokens=8, min_new_tokens=8)
    # a coupled grid shape, then one off the grid: narrow FFN under full attention
    for shape in ("d6-f100-h3", "d3-f50-h2", "d4-f25-h3"):
        if shape != engine.info.shape:
            assert engine.reshape(shape) < 1.0 and engine.info.shape == shape
        out = tmp_path / shape
        try:
            main(["elastic", "extract", "--plan", str(tiny_plan), "--shape", shape, "--out", str(out)])
        except SystemExit as exc:
            assert exc.code in (0, None)
        live, _, _ = timed_stream(engine.session, ids, greedy)
        ref, _, _ = timed_stream(get_engine("torch").open(out), ids, greedy)
        assert live == ref, shape
    with pytest.raises(UsageError):
        engine.reshape("d99-w100")
    assert engine.reshape("d3-w50") < 1.0 and engine.info.shape == "d3-f50-h2"


def test_plain_engine_cannot_reshape(torch_session, tokenizer) -> None:
    engine = make_engine(torch_session, tokenizer)
    assert not engine.can_reshape
    with pytest.raises(UsageError, match="torch runtime"):
        engine.reshape("d3-w50")


def test_generate_answers_with_a_local_folder(cli, tiny_llama_dir):
    result = cli("generate", "Hello there", "--model", str(tiny_llama_dir), "--max-new-tokens", "5", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert 1 <= data["new_tokens"] <= 5 and data["prompt_tokens"] > 5 and data["ms_per_token"] > 0
    again = json.loads(
        cli("generate", "Hello there", "--model", str(tiny_llama_dir), "--max-new-tokens", "5", "--json").out
    )
    assert again["text"] == data["text"]  # greedy is deterministic
