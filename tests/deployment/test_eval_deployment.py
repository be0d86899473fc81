"""`edgekit eval --deployment`: a deployment measured through its own runtime (ONNX Runtime GenAI here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime_genai")


def test_logits_through_ort_genai_give_the_perplexity_torch_gives(tiny_subnet: Path, tiny_ort_fp32: Path) -> None:
    import tiny
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgekit.engines import get_engine
    from edgekit.evaluation.model_io import SessionModel
    from edgekit.evaluation.perplexity import perplexity

    tokenizer = AutoTokenizer.from_pretrained(tiny_subnet)
    text = tiny.CORPUS * 2
    reference = perplexity(AutoModelForCausalLM.from_pretrained(tiny_subnet).eval(), tokenizer, text, 64, 32)
    through_ort = perplexity(SessionModel(get_engine("ort").open(tiny_ort_fp32)), tokenizer, text, 64, 32)
    assert through_ort.tokens_scored == reference.tokens_scored
    assert through_ort.ppl == pytest.approx(reference.ppl, rel=1e-4)


def test_eval_deployment_scores_the_int4_artifact_and_its_chat(
    cli, tiny_plan: Path, tiny_lut: Path, edgekit_home: Path, calib_text: Path, tmp_path: Path
) -> None:
    (edgekit_home / "luts").mkdir(parents=True, exist_ok=True)
    (edgekit_home / "luts" / tiny_lut.name).write_text(tiny_lut.read_text())
    out = edgekit_home / "dep"
    # a budget every shape meets (a measured LUT of a busy 2-core host is too noisy for a tight one here)
    r = cli("deploy", "--target", "host", "--budget", "100ms", "--plan", str(tiny_plan), "--out", str(out), "--json")
    assert r.code == 0, r.err
    shape = json.loads(r.out)["shape"]["shape"]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"question number {i}?"}) + "\n" for i in range(100)))
    r = cli("eval", "--deployment", str(out), "--text", str(calib_text), "--max-length", "64", "--stride", "64",
            "--chat", str(prompts), "--chat-limit", "3", "--chat-tokens", "8", "--json")  # fmt: skip
    assert r.code == 0, r.err
    got = json.loads(r.out)
    assert got["runtime"] == {"name": "ort", "precision": "int4", "device": "cpu"} and got["model"].endswith(shape)
    r = cli("eval", "--plan", str(tiny_plan), "--shape", shape, "--text", str(calib_text), "--max-length", "64",
            "--stride", "64", "--chat", str(prompts), "--chat-limit", "3", "--chat-tokens", "8", "--json")  # fmt: skip
    assert r.code == 0, r.err
    fp32 = json.loads(r.out)
    # the int4 artifact is not its fp32 weights: close, but measured apart
    int4_ppl, fp32_ppl = got["perplexity"]["ppl"], fp32["perplexity"]["ppl"]
    assert int4_ppl != fp32_ppl and 0.5 < int4_ppl / fp32_ppl < 2.0
    for figures in (got["chat"], fp32["chat"]):
        assert figures["chat_ppl"] > 1 and 0.0 <= figures["answer_rate"] <= 1.0
    r = cli("eval", "--deployment", str(out), "--plan", str(tiny_plan), "--text", str(calib_text))
    assert r.code == 2 and "--deployment alone" in r.err
