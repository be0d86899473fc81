"""Multiple-choice scoring (edgekit.evaluation.multiple_choice): log-likelihoods, acc and byte-normalised acc_norm."""

from __future__ import annotations

import math

import pytest
import torch

from edgekit.errors import UsageError
from edgekit.evaluation.data import MCItem
from edgekit.evaluation.multiple_choice import multiple_choice

ITEMS = [
    MCItem("Question: What is the capital of France?\nAnswer:", ["Paris.", "a Jetson Orin board", "Python"], 0),
    MCItem("Question: Where do small language models run?\nAnswer:", ["on edge devices", "in the sea"], 1),
    MCItem("Question: What has unified memory?\nAnswer:", ["a desktop GPU", "A Jetson Orin board"], 1),
]


def _loglikelihood(model, tokenizer, context: str, choice: str) -> float:
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    whole = tokenizer(context + " " + choice, add_special_tokens=False)["input_ids"]
    assert whole[: len(ctx)] == ctx  # this tokenizer never merges across ":" and the space
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
    return sum(logprobs[t - 1, whole[t]].item() for t in range(len(ctx), len(whole)))


def test_multiple_choice_matches_independent_loglikelihoods(loaded):
    model, tokenizer = loaded
    expected = [[_loglikelihood(model, tokenizer, it.context, c) for c in it.choices] for it in ITEMS]
    preds = [max(range(len(s)), key=s.__getitem__) for s in expected]
    preds_norm = [
        max(range(len(s)), key=lambda k, s=s, it=it: s[k] / len(it.choices[k].encode()))
        for s, it in zip(expected, ITEMS, strict=True)
    ]
    result = multiple_choice(model, tokenizer, ITEMS, progress=False, batch_size=4)  # batches mix items
    for got, want in zip(result.loglikelihoods, expected, strict=True):
        assert got == pytest.approx(want, rel=1e-4)
    assert result.n == 3
    assert result.acc == pytest.approx(sum(p == it.label for p, it in zip(preds, ITEMS, strict=True)) / 3)
    assert result.acc_norm == pytest.approx(sum(p == it.label for p, it in zip(preds_norm, ITEMS, strict=True)) / 3)
    assert result.stderr == pytest.approx(math.sqrt(result.acc * (1 - result.acc) / 2))
    one_by_one = multiple_choice(model, tokenizer, ITEMS, progress=False, batch_size=1)
    assert one_by_one.acc == result.acc and one_by_one.acc_norm == result.acc_norm
    data = result.to_dict()
    assert set(data) >= {"acc", "acc_norm", "n", "stderr", "seconds"} and "loglikelihoods" not in data


class UniformLM:
    """Every token equally likely: a choice's log-likelihood is exactly -(its token count) * log(vocab)."""

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*input_ids.shape, self.vocab)


def test_acc_norm_divides_by_utf8_bytes_not_characters(loaded):
    _, tokenizer = loaded
    choices = ["éé", "zq"]  # " éé": 5 tokens, 4 bytes, 2 chars; " zq": 3 tokens, 2 bytes
    n_tokens = [len(tokenizer(" " + c, add_special_tokens=False)["input_ids"]) for c in choices]
    assert n_tokens == [5, 3]  # preconditions that make bytes and characters disagree
    assert 5 / 4 < 3 / 2 < 5 / 2
    result = multiple_choice(UniformLM(len(tokenizer)), tokenizer, [MCItem("Answer:", choices, 0)], progress=False)
    assert result.loglikelihoods[0] == pytest.approx([-5 * math.log(len(tokenizer)), -3 * math.log(len(tokenizer))])
    assert result.acc == 0.0  # fewer tokens wins unnormalised
    assert result.acc_norm == 1.0  # per byte "éé" wins; per character it would lose
    assert result.stderr == 0.0  # one item: no spread to estimate


def test_multiple_choice_refuses_no_items(loaded):
    model, tokenizer = loaded
    with pytest.raises(UsageError, match="no multiple-choice items"):
        multiple_choice(model, tokenizer, [], progress=False)
