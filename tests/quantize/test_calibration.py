"""Calibration data and Hessians for GPTQ (edgekit.quantize.calibration) on the tiny Llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgekit.errors import UsageError
from edgekit.quantize import calibration


def test_hessians_are_each_layers_input_gram_matrix_shared_where_the_input_is(tiny_llama_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    seqs = [[5, 9, 30, 2, 7, 11], [3, 4, 5, 6]]
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: seen.setdefault(n, []).append(inp[0][0].clone()))
             for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]  # fmt: skip
    with torch.no_grad():
        for s in seqs:
            model(torch.tensor([s]))
    for h in hooks:
        h.remove()
    got = calibration.hessians(model, seqs)
    assert set(got) == set(seen)
    for name, inputs in seen.items():
        x = torch.cat(inputs)
        torch.testing.assert_close(got[name], x.T @ x, rtol=1e-4, atol=1e-4)
    layer = "model.layers.1"
    assert got[f"{layer}.self_attn.k_proj"] is got[f"{layer}.self_attn.q_proj"]
    assert got[f"{layer}.mlp.up_proj"] is got[f"{layer}.mlp.gate_proj"]
    assert got[f"{layer}.self_attn.o_proj"] is not got[f"{layer}.self_attn.q_proj"]


def test_sequences_mix_text_and_chat_within_the_token_budget(tiny_llama_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    samples = [{"text": "The capital of France is Paris. " * 80}, {"prompt": "Hi?", "response": "Hello."},
               {"prompt": "Name a language.", "response": "Python."}]  # fmt: skip
    seqs = calibration.sequences(tok, samples, tokens=10_000, seq_len=64)
    assert all(1 < len(s) <= 64 for s in seqs)
    chat = [s for s in seqs if tok.eos_token_id in s]
    assert len(chat) == 2 and seqs[1] in chat  # the second sequence is already a chat turn: round robin
    assert tok.decode(chat[0]).rstrip().endswith("Hello.<|im_end|>")
    small = calibration.sequences(tok, samples, tokens=100, seq_len=64)
    assert sum(len(s) for s in small) < 100 + 64 and len(small) < len(seqs)


def test_the_shipped_calibration_file_reads_and_mixes_three_sources(tiny_llama_dir: Path) -> None:
    from transformers import AutoTokenizer

    rows = calibration.read_samples(calibration.default_file())
    sources = {json.dumps(r.get("source")) for r in rows}
    assert len(rows) >= 48 and len(sources) == 3
    got = calibration.load(AutoTokenizer.from_pretrained(tiny_llama_dir), tokens=4096)
    assert 4096 <= got.tokens < 4096 + calibration.SEQ_LEN and len(got.sha256) == 64
    assert got.record()["file"] == "default.jsonl"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "calibration file not found"),
        (b"", "is empty"),
        (b'{"text": "ok"}\nnot json\n', "line 2 is not JSON"),
        (b'{"text": "ok"}\n{"answer": "x"}\n', 'line 2 has neither "text" nor "prompt"'),
        (b"\xff\xfe bad", "is not UTF-8 text"),
    ],
)
def test_a_bad_calibration_file_is_one_clear_error(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "calib.jsonl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UsageError, match=message):
        calibration.read_samples(path)


def test_a_plain_text_file_is_one_sample(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("Some text.\n")
    assert calibration.read_samples(path) == [{"text": "Some text.\n"}]
