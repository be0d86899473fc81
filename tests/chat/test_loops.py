"""Ending a reply that loops (edgekit.chat.loops): the rule, checked against brute force, and the engine's stop."""

from __future__ import annotations

import random

from chat_helpers import make_engine

from edgekit.chat.loops import LoopGuard, loop_start
from edgekit.engines import Sampling


def _first_stop(tokens: list[int], guard: LoopGuard = LoopGuard()) -> int | None:
    """How many tokens a reply has when the guard, asked after each one, first stops it."""
    return next((n for n in range(1, len(tokens) + 1) if loop_start(tokens[:n], guard) is not None), None)


def _brute(tokens: list[int], guard: LoopGuard) -> int | None:
    """Every period and every number of copies, the tail compared copy by copy."""
    n = len(tokens)
    for period in range(1, guard.max_period + 1):
        for copies in range(guard.copies, n // period + 1):
            if copies * period < guard.tokens:
                continue
            block = tokens[n - period :]
            if all(tokens[n - (c + 1) * period : n - c * period] == block for c in range(copies)):
                return period
    return None


def test_a_looping_phrase_is_stopped_at_the_token_that_completes_the_run():
    phrase = [11, 12, 13, 14]  # "the length of the length of ..."
    reply = [1, 2, 3, *phrase * 10]
    # a 4-token block needs 6 copies (24 tokens): the reply stops at the last token of the sixth
    assert _first_stop(reply) == 3 + 24
    assert loop_start(reply[: 3 + 24]) == 3
    sentence = list(range(100, 112))  # a 12-token sentence: three copies are enough
    assert _first_stop([5, *sentence * 4]) == 1 + 36
    assert loop_start([5, *sentence * 2]) is None  # said twice is not yet a loop


def test_short_or_broken_repeats_go_on():
    assert _first_stop([7, 8, 9, *[42] * 23]) is None  # one token 23 times: under 24 tokens
    assert _first_stop([42] * 24) == 24
    assert _first_stop([1, 2] * 11) is None  # 22 tokens of a 2-token block
    line = [30, 31, 32, 33, 34, 35, 36, 37]  # a line of code written twice, then other code
    assert _first_stop([*line, *line, 50, 51, 52, *line]) is None
    almost = [*range(200, 212)] * 3
    almost[-1] = 999  # the third copy differs in its last token
    assert _first_stop(almost) is None
    assert _first_stop(list(range(500))) is None


def test_the_rule_agrees_with_brute_force_on_random_replies():
    rng = random.Random(0)
    guard = LoopGuard(copies=3, tokens=12, max_period=9)
    for _ in range(3000):
        # few distinct tokens and spliced-in repeats, so that runs of every kind occur
        tokens = [rng.randrange(3) for _ in range(rng.randrange(1, 30))]
        if rng.random() < 0.5:
            block = [rng.randrange(3) for _ in range(rng.randrange(1, 8))]
            tokens += block * rng.randrange(1, 8)
        found, brute = loop_start(tokens, guard), _brute(tokens, guard)
        assert (found is None) == (brute is None), tokens
        if found is not None:  # the copies it counted are one block, back to back, to the end
            period = next(
                p for p in range(1, 10) if all(tokens[i] == tokens[i + p] for i in range(found, len(tokens) - p))
            )
            assert len(tokens) - found >= max(guard.tokens, guard.copies * period)


def test_the_engine_stops_a_looping_reply_and_keeps_what_it_said(torch_session, tokenizer):
    """The tiny random model repeats one token at once: the chat stops it after 24, the text unchanged
    before; without the guard it runs to its token limit."""
    messages = [{"role": "user", "content": "Hello there"}]
    guarded = make_engine(torch_session, tokenizer)
    pieces = list(guarded.reply(messages, Sampling(max_new_tokens=120)))
    stats = pieces[-1].stats
    text = "".join(p.text for p in pieces)
    free = make_engine(torch_session, tokenizer)
    free.loop_guard = None
    whole = list(free.reply(messages, Sampling(max_new_tokens=120)))
    full_text = "".join(p.text for p in whole)
    assert stats.looped and not stats.finished and stats.new_tokens < 120
    assert full_text.startswith(text) and len(full_text) > len(text)
    assert not whole[-1].stats.looped and whole[-1].stats.new_tokens == 120
    result = guarded.complete(messages, Sampling(max_new_tokens=120))
    assert result.looped and result.new_tokens == stats.new_tokens
