"""Perplexity (edgekit.evaluation.perplexity): strided windows, batching, BOS, and refused input."""

from __future__ import annotations

import json
import math

import pytest
import tiny
import torch
import torch.nn.functional as F

from edgekit.errors import UsageError
from edgekit.evaluation.perplexity import perplexity

N_TOKENS = 300  # the text budget for perplexity tests: several windows, milliseconds per forward


def _ids(tokenizer, text: str = tiny.CORPUS, n: int = N_TOKENS) -> torch.Tensor:
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"][:n])


def test_perplexity_without_overlap_is_mean_cross_entropy_over_chunks(loaded):
    model, tokenizer = loaded
    ids = _ids(tokenizer)
    nll, count = 0.0, 0
    with torch.no_grad():
        for chunk in ids.split(64):  # 4 chunks of 64 and one of 44
            logits = model(chunk[None]).logits[0]
            nll += F.cross_entropy(logits[:-1], chunk[1:], reduction="sum").item()
            count += len(chunk) - 1
    result = perplexity(model, tokenizer, tiny.CORPUS, max_length=64, stride=64, max_tokens=N_TOKENS, progress=False)
    assert result.tokens == N_TOKENS and result.windows == 5
    assert result.tokens_scored == count == N_TOKENS - 5  # each window's first token has no context
    assert result.ppl == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert result.nll == pytest.approx(nll / count, rel=1e-5)
    assert result.max_length == 64 and result.stride == 64 and result.seconds > 0


def test_overlapping_windows_follow_the_hf_recipe_and_score_each_token_once(loaded):
    model, tokenizer = loaded
    ids = _ids(tokenizer)
    # The recipe's loop, written out independently: labels -100 on the overlap, the model's shifted loss.
    nll, count, prev_end = 0.0, 0, 0
    with torch.no_grad():
        for begin in range(0, len(ids), 16):
            end = min(begin + 64, len(ids))
            window = ids[begin:end]
            labels = window.clone()
            labels[: -(end - prev_end)] = -100
            logits = model(window[None]).logits[0]
            nll += F.cross_entropy(logits[:-1], labels[1:], ignore_index=-100, reduction="sum").item()
            count += int((labels[1:] != -100).sum())
            prev_end = end
            if end == len(ids):
                break
    result = perplexity(model, tokenizer, tiny.CORPUS, max_length=64, stride=16, max_tokens=N_TOKENS, progress=False)
    assert result.tokens_scored == count == N_TOKENS - 1
    assert result.windows == math.ceil((N_TOKENS - 64) / 16) + 1
    assert result.ppl == pytest.approx(math.exp(nll / count), rel=1e-5)
    no_overlap = perplexity(
        model, tokenizer, tiny.CORPUS, max_length=64, stride=64, max_tokens=N_TOKENS, progress=False
    )
    assert result.ppl != pytest.approx(no_overlap.ppl, rel=1e-4)


def test_batching_does_not_change_the_result(loaded):
    model, tokenizer = loaded
    kwargs = dict(max_length=48, stride=20, max_tokens=N_TOKENS, progress=False)
    one = perplexity(model, tokenizer, tiny.CORPUS, batch_size=1, **kwargs)
    for size in (3, 16):
        batched = perplexity(model, tokenizer, tiny.CORPUS, batch_size=size, **kwargs)
        assert batched.tokens_scored == one.tokens_scored == N_TOKENS - 1
        assert batched.windows == one.windows
        assert batched.ppl == pytest.approx(one.ppl, rel=1e-5)


def test_a_tokenizer_that_adds_bos_gets_it_prepended_once(loaded, tiny_llama_dir):
    from tokenizers import processors
    from transformers import AutoTokenizer

    model, plain = loaded
    bos_tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    bos = bos_tok.bos_token_id
    bos_tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos_tok.bos_token} $A", special_tokens=[(bos_tok.bos_token, bos)]
    )
    assert bos_tok("Paris")["input_ids"][0] == bos  # precondition: this tokenizer's config adds BOS
    text = tiny.CORPUS[:600]
    n_text = len(plain(text, add_special_tokens=False)["input_ids"])
    with_bos = perplexity(model, bos_tok, text, max_length=64, stride=32, progress=False)
    without = perplexity(model, plain, text, max_length=64, stride=32, progress=False)
    assert with_bos.tokens == n_text + 1 and with_bos.tokens_scored == n_text  # every text token, BOS as context
    assert without.tokens == n_text and without.tokens_scored == n_text - 1


def test_result_serialises(loaded):
    model, tokenizer = loaded
    data = perplexity(model, tokenizer, tiny.CORPUS, max_length=32, stride=32, max_tokens=64, progress=False).to_dict()
    assert set(data) >= {"ppl", "nll", "tokens_scored", "windows", "max_length", "stride", "seconds"}
    json.dumps(data)


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("", {}, "empty"),
        ("   \n", {}, "empty"),
        ("The capital of France is Paris.", {"max_length": 64, "stride": 32}, "fewer than one window of 64"),
        (tiny.CORPUS, {"max_length": 64, "stride": 32, "max_tokens": 40}, "max_tokens 40"),
        (tiny.CORPUS, {"max_length": 32, "stride": 33}, "stride must be between 1 and max_length"),
        (tiny.CORPUS, {"max_length": 32, "stride": 0}, "stride must be between 1 and max_length"),
        (tiny.CORPUS, {"max_length": 1024, "stride": 512}, "longer than the model's context of 512"),
    ],
)
def test_perplexity_refuses_bad_input(loaded, text, kwargs, message):
    model, tokenizer = loaded
    with pytest.raises(UsageError, match=message) as info:
        perplexity(model, tokenizer, text, progress=False, **kwargs)
    assert "\n" not in str(info.value)
