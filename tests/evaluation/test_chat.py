"""Chat metrics (edgekit.evaluation.chat): the pure parts exactly, then on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from edgekit.evaluation.chat import (
    ChatReference,
    agreement,
    answered,
    chat_ppl,
    echoes,
    generation_scores,
    key_terms,
    looping,
    reference_for,
)


def test_key_terms_are_the_answer_words_not_the_question_or_function_words() -> None:
    assert key_terms("The capital of France is Paris.", "What is the capital of France?") == {"paris"}
    assert key_terms("It was in 1969.", "When did people land on the moon?") == {"1969"}
    assert agreement("Paris, of course!", {"paris"}) == 1.0
    assert agreement("I think it is Lyon.", {"paris"}) == 0.0
    assert agreement("Paris and Marseille", {"paris", "lyon"}) == 0.5


def test_an_answer_says_something_and_ends_properly() -> None:
    assert not answered("", [2], True)  # the end of turn at once: the empty reply
    assert not answered(" ... ", [5, 2], True)
    assert answered("Paris.", [9, 2], True)
    assert answered("a long reply cut at the limit", list(range(40)), False)
    assert looping([1, 2, 3, 4] * 10) and not answered("the the the", [1, 2, 3, 4] * 10, False)
    # reciting the system prompt or the question is not an answer; saying something of one's own is
    context = "system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face\nuser\nWhat is a list?"
    assert not answered("You are a helpful AI assistant named SmolLM, trained by Hugging Face", [9, 2], True, context)
    assert not answered("What is a list?", [9, 2], True, context)
    assert answered("A list is an ordered sequence.", [9, 2], True, context)
    assert answered("You are a helpful AI", [9, 2], True) and not echoes("", context)


def _reference(prompt_ids: list[list[int]], replies: list[list[int]], texts: list[str] | None = None) -> ChatReference:
    n = len(replies)
    texts = texts or ["x"] * n
    return ChatReference([f"p{i}" for i in range(n)], prompt_ids, replies, [True] * n, texts, {"max_new_tokens": 8})


def test_chat_ppl_scores_exactly_the_reply_tokens() -> None:
    vocab = 11
    ref = _reference([[1, 2, 3], [4]], [[5, 6, 0], [7, 0]])
    assert chat_ppl(lambda ids: torch.zeros(len(ids), vocab), ref) == pytest.approx(vocab)

    def oracle(ids: list[int]) -> torch.Tensor:
        # certain of every next token of the sequence: perplexity 1 only if the reply's positions line up
        logits = torch.full((len(ids), vocab), -50.0)
        for i, nxt in enumerate(ids[1:]):
            logits[i, nxt] = 50.0
        return logits

    assert chat_ppl(oracle, ref) == pytest.approx(1.0)

    def off_by_one(ids: list[int]) -> torch.Tensor:
        return oracle([0, *ids[:-1]])

    assert chat_ppl(off_by_one, ref) > 100


class Scripted:
    """A session that answers each prompt (keyed by its first token) with given tokens: the Session protocol."""

    runtime, device, context_length, eos_ids = "scripted", "cpu", 64, {0}

    def __init__(self, replies: dict[int, list[int]]) -> None:
        self.replies = replies

    def stream(self, ids, sampling):
        yield from self.replies[ids[0]][: sampling.max_new_tokens]


class Words:
    def decode(self, tokens, skip_special_tokens=True):
        return " ".join({9: "Paris", 8: "Lyon", 7: "the"}.get(t, "") for t in tokens if t).strip()


def test_answer_rate_and_agreement_count_what_the_replies_say() -> None:
    ref = ChatReference(["What is the capital of France?", "Tell me a story.", "Say a city."], [[1], [2], [3]],
                        [[9, 0], [7, 7, 0], [8, 0]], [True, True, True], ["Paris", "the the", "Lyon"],
                        {"max_new_tokens": 8})  # fmt: skip
    assert [i for i, _ in ref.facts] == [0, 2]  # "the the" has no key term
    same = generation_scores(Scripted({1: [9, 0], 2: [7, 0], 3: [8, 0]}), Words(), ref)
    assert same == {"answer_rate": 1.0, "agreement": 1.0}
    broken = generation_scores(Scripted({1: [0], 2: [7, 0], 3: [9, 0]}), Words(), ref)
    assert broken["answer_rate"] == pytest.approx(2 / 3) and broken["agreement"] == 0.0


def test_the_reference_is_made_once_and_the_full_model_agrees_with_itself(
    tiny_llama_dir: Path, tmp_path: Path, edgekit_home: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgekit.engines.torch_engine import TorchSession
    from edgekit.models.weights import weights_digest

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"question number {i}?"}) + "\n" for i in range(200)))
    digest = weights_digest(tiny_llama_dir)
    ref = reference_for(tiny_llama_dir, digest, prompts, 4, 6)
    assert len(ref.prompts) == 4 and ref.record["part"] == "dev" and ref.record["max_new_tokens"] == 6
    from edgekit.elastic.teacher_data import is_dev_prompt

    assert all(is_dev_prompt(p) for p in ref.prompts)  # never a prompt teacher data trains on
    assert len(list((edgekit_home / "chat-references").glob("*.json"))) == 1
    assert reference_for(tiny_llama_dir, digest, prompts, 4, 6).replies == ref.replies  # from the cache
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    session = TorchSession(model)
    scores = generation_scores(session, tokenizer, ref)
    contexts = [tokenizer.decode(p, skip_special_tokens=True) for p in ref.prompt_ids]
    rows = zip(ref.texts, ref.replies, ref.finished, contexts, strict=True)
    expect = sum(answered(t, r, f, c) for t, r, f, c in rows) / 4
    assert scores["answer_rate"] == pytest.approx(expect)
    assert scores["agreement"] in (None, 1.0)  # its own greedy replies, token for token
    # the greedy replies are the model's most likely tokens, so its perplexity on them is below a random
    # model's (the vocabulary) and well below its perplexity on another model's replies
    own = chat_ppl(session.sequence_logits, ref)
    assert 1.0 <= own < tokenizer.vocab_size
    other = ChatReference(ref.prompts, ref.prompt_ids, [[(t * 7 + 3) % 300 for t in r] for r in ref.replies],
                          ref.finished, ref.texts, ref.record)  # fmt: skip
    assert chat_ppl(session.sequence_logits, other) > own
    assert math.isfinite(own)
