"""`edgekit chat`: the engine, the conversation store, the plain REPL and the Textual app (Pilot),
all on a tiny real model (torch runtime) so replies are real streamed tokens."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest

from edgekit.chat.engine import ChatEngine, Info, fit_context, render_ids
from edgekit.chat.store.conversations import Message, Store
from edgekit.engines import Sampling
from edgekit.errors import UsageError


class SlowSession:
    """A real session that waits between tokens, so a test can act in the middle of a reply."""

    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.runtime, self.device = inner.runtime, inner.device
        self.context_length, self.eos_ids = inner.context_length, set()  # never stops early at EOS

    def stream(self, ids, sampling):
        for token in self.inner.stream(ids, sampling):
            time.sleep(self.delay)
            yield token


@pytest.fixture(scope="module")
def torch_session(tiny_llama_dir: Path):
    from edgekit.engines import get_engine

    return get_engine("torch").open(tiny_llama_dir)


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def make_engine(session, tokenizer, context_length: int = 512, budget: float | None = 50.0) -> ChatEngine:
    info = Info("tiny", "d4-w100", "torch", "fp32", "cpu", budget, "50ms" if budget else None, "measured",
                context_length)  # fmt: skip
    return ChatEngine(session, tokenizer, info)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "conversations")


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


def test_store_round_trip_and_damage(store: Store) -> None:
    a = store.create("first", system="sys")
    store.append(a, Message("user", "hi ✓"))
    store.append(a, Message("assistant", "hello", stats={"new_tokens": 2}))
    time.sleep(0.01)
    b = store.create("second")
    store.rename(a, "renamed")
    loaded = store.load(a.id)
    assert loaded.title == "renamed" and loaded.system == "sys"
    assert [m.content for m in loaded.messages] == ["hi ✓", "hello"] and loaded.messages[1].stats == {"new_tokens": 2}
    assert [c.id for c in store.list()] == [a.id, b.id]  # a was changed last
    with open(store.root / f"{a.id}.jsonl", "a") as fh:
        fh.write('{"type": "message", "role": "user", "cont')  # a line cut short by a crash
    assert len(store.load(a.id).messages) == 2
    (store.root / "junk.jsonl").write_text("not json\n")
    store.delete(b)
    assert [c.id for c in store.list()] == [a.id]


def test_plain_repl_and_one_shot(torch_session, tokenizer, store: Store) -> None:
    from edgekit.chat.plain import run_plain

    engine = make_engine(torch_session, tokenizer)
    stdin = io.StringIO("Hello\n\n/system Be terse.\nAnd again\n/quit\n")
    out, err = io.StringIO(), io.StringIO()
    assert run_plain(engine, Sampling(max_new_tokens=6), store=store, stdin=stdin, stdout=out, stderr=err) == 0
    assert "empty message ignored" in err.getvalue() and "system prompt: Be terse." in err.getvalue()
    assert err.getvalue().count("ms/token") == 2 and "d4-w100 torch fp32 cpu" in err.getvalue()
    conv = store.list()[0]
    assert [m.role for m in conv.messages] == ["user", "assistant", "user", "assistant"] and conv.system == "Be terse."
    out = io.StringIO()
    run_plain(engine, Sampling(max_new_tokens=5), prompt="One turn", json_out=True, store=store, stdout=out)
    data = json.loads(out.getvalue())
    assert data["shape"] == "d4-w100" and data["stats"]["new_tokens"] >= 1 and isinstance(data["reply"], str)


def test_clean_text_handles_bad_pastes() -> None:
    from edgekit.chat.tui.app import clean_text

    assert clean_text("ok\udcff\x00 done\tx\n") == "ok? done\tx\n"


# ------------------------------------------------------------------------------- the Textual app


def _app(engine, store, **kw):
    from edgekit.chat.tui.app import ChatApp

    return ChatApp(engine, Sampling(max_new_tokens=kw.pop("max_new", 8)), store=store, **kw)


async def _send(pilot, text: str) -> None:
    await pilot.click("#prompt")
    for ch in text:
        await pilot.press(ch if ch != " " else "space")
    await pilot.press("enter")


async def _wait_idle(app, pilot, timeout: float = 20.0) -> None:
    start = time.perf_counter()
    while app.busy and time.perf_counter() - start < timeout:
        await pilot.pause(0.05)
    await pilot.pause()


async def test_tui_streams_a_reply_and_updates_stats(torch_session, tokenizer, store: Store) -> None:
    from edgekit.chat.tui.widgets.messages import MessageBlock
    from edgekit.chat.tui.widgets.stats import StatsPanel

    app = _app(make_engine(torch_session, tokenizer), store)
    async with app.run_test(size=(120, 36)) as pilot:
        await _send(pilot, "hi there")
        await _wait_idle(app, pilot)
        blocks = list(app.query(MessageBlock))
        assert [b.has_class("user") for b in blocks] == [True, False]
        panel = app.query_one(StatsPanel)
        assert panel.last is not None and panel.last.new_tokens >= 1
        assert "first token" in str(panel.query_one("#figures").render())
        conv = store.list()[0]
        assert conv.title == "hi there" and [m.role for m in conv.messages] == ["user", "assistant"]
        assert conv.messages[1].content == app.reply_text.strip() and conv.messages[1].stats["new_tokens"] >= 1


async def test_tui_escape_stops_the_reply(torch_session, tokenizer, store: Store) -> None:
    app = _app(make_engine(SlowSession(torch_session, 0.05), tokenizer), store, max_new=200)
    async with app.run_test(size=(120, 36)) as pilot:
        await _send(pilot, "go")
        await pilot.pause(0.4)
        assert app.busy
        await pilot.press("escape")
        await _wait_idle(app, pilot, timeout=5)
        assert not app.busy
        stats = store.list()[0].messages[-1].stats
        assert stats["cancelled"] and stats["new_tokens"] < 200


async def test_tui_reopens_history_and_manages_conversations(torch_session, tokenizer, store: Store) -> None:
    from edgekit.chat.tui.widgets.messages import MessageBlock
    from edgekit.chat.tui.widgets.sidebar import Sidebar

    old = store.create("older chat")
    store.append(old, Message("user", "remember me"))
    store.append(old, Message("assistant", "I do"))
    time.sleep(0.01)
    newest = store.create("newest chat")
    app = _app(make_engine(torch_session, tokenizer), store)
    async with app.run_test(size=(120, 36)) as pilot:
        assert app.conv.id == newest.id and not list(app.query(MessageBlock))
        sidebar = app.query_one(Sidebar)
        sidebar.focus()
        sidebar.index = 1
        await pilot.press("enter")
        await pilot.pause()
        assert app.conv.id == old.id
        assert [b.has_class("user") for b in app.query(MessageBlock)] == [True, False]
        await pilot.press("ctrl+r")
        await pilot.pause()
        for _ in range(20):
            await pilot.press("backspace")
        for ch in "kept":
            await pilot.press(ch)
        await pilot.press("enter")
        await pilot.pause()
        assert store.load(old.id).title == "kept"
        await pilot.press("ctrl+x")
        await pilot.press("y")
        await pilot.pause()
        assert old.id not in [c.id for c in store.list()]
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert len(store.list()) == 2


async def test_tui_context_overflow_shows_a_notice(torch_session, tokenizer, store: Store) -> None:
    from edgekit.chat.tui.widgets.messages import Notice

    conv = store.create("long")
    for i in range(4):
        store.append(conv, Message("user", f"question number {i} " * 6))
        store.append(conv, Message("assistant", "an answer " * 6))
    app = _app(make_engine(torch_session, tokenizer, context_length=120), store, max_new=4)
    async with app.run_test(size=(120, 36)) as pilot:
        await _send(pilot, "and now")
        await _wait_idle(app, pilot)
        notices = [str(n.render()) for n in app.query(Notice)]
        assert any("left out" in n for n in notices)
        assert store.load(conv.id).messages[-1].role == "assistant"


async def test_tui_refuses_empty_and_too_small(torch_session, tokenizer, store: Store) -> None:
    app = _app(make_engine(torch_session, tokenizer), store)
    async with app.run_test(size=(60, 15)) as pilot:
        assert app.screen.has_class("too-small")
        await pilot.resize_terminal(120, 36)
        await pilot.pause()
        assert not app.screen.has_class("too-small")
        await _send(pilot, "   ")
        await pilot.pause()
        assert not app.busy and not store.list()[0].messages


def test_chat_command_bad_input(cli, tmp_path: Path) -> None:
    r = cli("chat", str(tmp_path / "nowhere"), "--prompt", "hi")
    assert r.code == 2 and "no deployment" in r.err and "edgekit deploy" in r.err
    (tmp_path / "broken").mkdir()
    r = cli("chat", str(tmp_path / "broken"), "--prompt", "hi")
    assert r.code == 3 and "redeploy" in r.err and "Traceback" not in r.err
    r = cli("chat")
    assert r.code == 2 and "deployment" in r.err


def test_main_screen_snapshot(snap_compare, torch_session, tokenizer, store: Store, monkeypatch) -> None:
    """The main screen as a user first sees it (figures that vary run to run are pinned)."""
    import edgekit.chat.tui.widgets.stats as stats_mod

    monkeypatch.setattr(stats_mod, "process_memory_mb", lambda: 123.0)
    conv = store.create("A saved chat")
    store.append(conv, Message("user", "What is an **elastic** checkpoint?"))
    reply = "One set of weights from which a subnet of any shape is cut:\n\n- depth\n- width"
    store.append(conv, Message("assistant", reply))
    app = _app(make_engine(torch_session, tokenizer), store)
    assert snap_compare(app, terminal_size=(120, 32))


def test_live_reshape_matches_the_extracted_checkpoint(tiny_plan: Path, tmp_path: Path) -> None:
    """Torch on an elastic model: each shape built from memory decodes the same tokens as its extracted
    Hugging Face checkpoint, and switching shape is fast."""
    from edgekit.cli import main
    from edgekit.elastic.source import Source
    from edgekit.engines import get_engine
    from edgekit.engines.base import timed_stream

    source = Source.resolve(plan=str(tiny_plan))
    engine = ChatEngine.from_source(source, "d6-w100")
    assert engine.can_reshape and "d3-w50" in engine.shapes and engine.info.shape == "d6-w100"
    ids = [5, 17, 42, 99, 7]
    greedy = Sampling(max_new_tokens=8, min_new_tokens=8)
    for shape in ("d6-w100", "d3-w50"):
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


def test_plain_engine_cannot_reshape(torch_session, tokenizer) -> None:
    engine = make_engine(torch_session, tokenizer)
    assert not engine.can_reshape
    with pytest.raises(UsageError, match="torch runtime"):
        engine.reshape("d3-w50")


async def test_tui_shape_selector_reshapes_live(tiny_plan: Path, store: Store) -> None:
    from edgekit.chat.tui.widgets.messages import Notice
    from edgekit.elastic.source import Source

    source = Source.resolve(plan=str(tiny_plan))
    engine = ChatEngine.from_source(source, "d6-w100")
    app = _app(engine, store)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("ctrl+l")
        await pilot.pause()
        await pilot.press("down")
        await pilot.press("enter")
        await _wait_idle(app, pilot)
        assert engine.info.shape == engine.shapes[1] != "d6-w100"
        assert any("now running" in str(n.render()) for n in app.query(Notice))
        assert engine.shapes[1] in app.sub_title
        await _send(pilot, "hello")
        await _wait_idle(app, pilot)
        assert store.list()[0].messages[-1].role == "assistant"


async def test_tui_dialogs_settings_system_prompt_help_theme(torch_session, tokenizer, store: Store) -> None:
    from textual.widgets import Input

    from edgekit.chat.tui.screens.dialogs import HelpScreen, SettingsDialog

    app = _app(make_engine(torch_session, tokenizer), store)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("ctrl+g")
        await pilot.pause()
        assert isinstance(app.screen, SettingsDialog)
        app.screen.query_one("#temperature", Input).value = "-1"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, SettingsDialog)  # refused, with the rule shown
        app.screen.query_one("#temperature", Input).value = "0.7"
        app.screen.query_one("#max_tokens", Input).value = "5"
        await pilot.press("enter")
        await pilot.pause()
        assert app.settings.temperature == 0.7 and app.settings.max_tokens == 5
        await pilot.press("ctrl+s")
        await pilot.pause()
        for ch in "Be brief":
            await pilot.press("space" if ch == " " else ch)
        await pilot.press("enter")
        await pilot.pause()
        assert store.load(app.conv.id).system == "Be brief"
        await _send(pilot, "hi")
        await _wait_idle(app, pilot)
        assert store.load(app.conv.id).messages[-1].stats["new_tokens"] <= 5
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)
        before = app.theme
        await pilot.press("ctrl+t")
        assert app.theme != before
