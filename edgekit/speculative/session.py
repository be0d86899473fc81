"""Self-speculative decoding: a small nested shape drafts k tokens, the verifier scores them in one pass.

Both models keep their own KV cache (edgekit.speculative.decoders: torch or ONNX Runtime GenAI). The invariant
between rounds: `seq` holds the prompt and every token made; the verifier's cache covers `seq[:-1]` (the last
token, "pending", is fed with the next draft), and the draft's covers a prefix of `seq`, so the draft is fed the
rest before drafting. After a round both caches are cut back to what the verdict kept, so a rejected draft
leaves no trace.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from edgekit.engines.base import Sampling, pick_token, sampling_generator, token_probs
from edgekit.errors import UsageError
from edgekit.speculative.decoders import Decoder, decoder_for
from edgekit.speculative.verify import verify_greedy, verify_sampled

MAX_K = 16  # past this a draft of a nested subnet is almost never kept whole; the verifier pass only grows


@dataclass
class SpeculationStats:
    """Running counts over every reply: drafted and kept tokens, verifier passes, tokens made."""

    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    tokens: int = 0

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_pass(self) -> float:
        """Tokens made per verifier forward pass (1.0 is plain decoding)."""
        return self.tokens / self.rounds if self.rounds else 0.0

    def to_dict(self) -> dict[str, Any]:
        rates = {"acceptance": round(self.acceptance, 4), "tokens_per_pass": round(self.tokens_per_pass, 3)}
        return {**asdict(self), **rates}


def check_k(k: int, context_length: int) -> None:
    if not 1 <= k <= min(MAX_K, context_length - 1):
        raise UsageError(f"the draft length k must be 1 to {min(MAX_K, context_length - 1)}, not {k}")


class SpeculativeSession:
    """A Session (edgekit.engines.base) whose replies are the verifier's, made faster by a draft model.

    `target` is a session that makes decoders (TorchSession, ElasticTorchSession, OrtSession); `draft_model` a
    transformers causal LM or another such session, with the same vocabulary. Greedy replies equal the
    verifier's alone token for token (up to float rounding between a batched and a one-token forward pass, which
    only a near-tie can show); sampled replies are distributed as its own.
    """

    def __init__(self, target: Any, draft_model: Any, k: int, draft_name: str = "draft") -> None:
        check_k(k, target.context_length)
        self.target, self.draft_model, self.k, self.draft_name = target, draft_model, k, draft_name
        self.runtime = target.runtime
        self.device, self.context_length, self.eos_ids = target.device, target.context_length, target.eos_ids
        self.stats = SpeculationStats()
        # what the draft adds to memory beside the verifier (None: not counted) and whether it is a slice of the
        # verifier's own tensors (edgekit.speculative.slice)
        self.draft_bytes: int | None = None
        self.draft_sliced = False

    @property
    def model(self) -> Any:
        """The verifier's model: what sequence_logits (and so every accuracy figure) reads."""
        return self.target.model

    def sequence_logits(self, ids: list[int]) -> Any:
        return self.target.sequence_logits(ids)

    def _decoders(self, need: int) -> tuple[Decoder, Decoder]:
        # the verifier's pass reads up to k tokens past the reply's last: room for them in a preallocated cache
        length = min(need + self.k + 1, self.context_length)
        return (self.target.decoder(length),
                decoder_for(self.draft_model, self.device, length))  # fmt: skip

    def first_token(self, ids: list[int]) -> tuple[float, float]:
        """Both models read the prompt before the first token (the draft needs it to draft the next ones)."""
        import torch

        target, draft = self._decoders(len(ids) + 1)
        with torch.inference_mode():
            start = time.perf_counter()
            logits = target.feed(ids, every=False)
            draft.feed(ids, every=False)
            prefilled = time.perf_counter()
            pick_token(logits[-1], Sampling())
            return prefilled - start, time.perf_counter() - start

    def _no_end(self, logits: Any, made: int, sampling: Sampling) -> Any:
        """Rows of logits for the tokens made+0, made+1, ...: the end of turn is masked in those that come
        before min_new_tokens, as the plain sessions do."""
        rows = max(0, min(logits.shape[0], sampling.min_new_tokens - made))
        for eos in self.eos_ids:
            logits[:rows, eos] = -float("inf")
        return logits

    def stream(self, ids: list[int], sampling: Sampling) -> Iterator[int]:
        import torch

        if not ids:
            raise UsageError("speculative decoding needs at least one prompt token")
        generator = sampling_generator(sampling)
        greedy = sampling.temperature <= 0
        seq = list(ids)
        made = 0
        target, draft_dec = self._decoders(len(ids) + sampling.max_new_tokens)
        with torch.inference_mode():
            if len(seq) > 1:
                target.feed(seq[:-1], every=False)
            while made < sampling.max_new_tokens and len(seq) < self.context_length:
                # never draft past the reply's end or the context: the verifier's pass adds one token itself
                k = min(self.k, sampling.max_new_tokens - made - 1, self.context_length - len(seq) - 1)
                draft: list[int] = []
                probs: list[Any] = []
                feed = seq[draft_dec.length :]
                for i in range(k):
                    logits = self._no_end(draft_dec.feed(feed, every=False), made + i, sampling)[0]
                    if greedy:
                        token = int(torch.argmax(logits))
                    else:
                        q = token_probs(logits, sampling)
                        token = int(torch.multinomial(q, 1, generator=generator))
                        probs.append(q)
                    draft.append(token)
                    feed = [token]
                    if token in self.eos_ids:
                        break  # nothing after an end of turn is ever kept
                logits = self._no_end(target.feed([seq[-1], *draft], every=True), made, sampling)
                if greedy:
                    verdict = verify_greedy(draft, logits)
                else:
                    drafted = torch.stack(probs) if probs else None
                    verdict = verify_sampled(draft, drafted, token_probs(logits, sampling), generator)
                if draft:
                    # the draft was fed `feed` then every draft token but the last; keep what the verdict kept
                    draft_dec.rewind(len(seq) + min(verdict.accepted, len(draft) - 1))
                new = verdict.tokens(draft)
                seq.extend(new)
                target.rewind(len(seq) - 1)
                self.stats.rounds += 1
                self.stats.drafted += len(draft)
                self.stats.accepted += verdict.accepted
                for token in new:
                    made += 1
                    self.stats.tokens += 1
                    yield token
                    if token in self.eos_ids or made >= sampling.max_new_tokens:
                        return


def nested_in(draft: Any, verifier: Any) -> bool:
    """Whether `draft` can draft for `verifier`: another shape, no deeper, no wider in MLP or heads."""
    return (
        draft != verifier
        and draft.depth <= verifier.depth
        and draft.ffn <= verifier.ffn
        and draft.heads <= verifier.heads
    )


def check_draft(draft: Any, verifier: Any) -> None:
    """A draft must be a strictly smaller nested shape of the verifier's checkpoint: no deeper, no wider."""
    if draft == verifier:
        raise UsageError(f"the draft {draft.name} is the verifier's own shape: drafting with it cannot be faster")
    if not nested_in(draft, verifier):
        raise UsageError(f"the draft {draft.name} is larger than the verifier {verifier.name} in depth, MLP width or "
                         f"heads: a draft must be a smaller shape")  # fmt: skip


def elastic_speculative(session: Any, draft: Any, k: int) -> SpeculativeSession:
    """Speculation on an ElasticTorchSession: the draft is another shape cut from the same loaded checkpoint, as a
    slice of the verifier's tensors with its own SMOL mix carried as a low-rank correction (no second copy of its
    weights) where its layers are the verifier's, else built from the checkpoint with its mix merged. A shape
    outside the plan is refused where it is built (ElasticTorchSession checks it)."""
    from edgekit.speculative.slice import own_bytes, slice_draft

    check_draft(draft, session.shape)
    made = slice_draft(session, draft)
    model = made[0] if made is not None else session._build(draft)
    spec = SpeculativeSession(session, model, k, draft.name)
    spec.draft_sliced = made is not None
    spec.draft_bytes = made[1].own_bytes if made is not None else own_bytes(model, session.model)
    return spec
