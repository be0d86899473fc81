"""The chat engine behind `edgekit chat` (TUI and plain): a runtime session, the chat template, the
context window, streaming with live figures, and cancellation. No UI in here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.chat.loops import LoopGuard, loop_start
from edgekit.engines import Sampling
from edgekit.errors import UsageError

if TYPE_CHECKING:
    from edgekit.elastic.source import Source


@dataclass
class GenerationResult:
    """One whole reply and its figures: what `generate` and `chat --prompt --json` report."""

    text: str
    prompt_tokens: int
    new_tokens: int
    ttft_ms: float  # prompt processing plus the first new token
    ms_per_token: float  # steady-state decode: tokens after the first
    tokens_per_s: float
    looped: bool = False  # ended because it began repeating itself (edgekit.chat.loops)

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass
class Info:
    """What the stats panel shows about where the model runs."""

    model: str
    shape: str
    runtime: str
    precision: str
    device: str
    budget_ms: float | None = None
    budget_text: str | None = None
    lut_status: str | None = None  # measured | estimated | None (no deployment)
    context_length: int = 2048
    quality: str | None = None  # the shape's ranking metric against the full model's, e.g. "chat_ppl 9.1 (1.4x)"
    routed: str | None = None  # an adaptive deployment: where the last reply went and the running mean latency
    draft: str | None = None  # self-speculative decoding: the draft shape and k, e.g. "d16-f100-h3 k=4"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Stats:
    """Figures of the reply being made (updated per token) or just made."""

    prompt_tokens: int = 0
    context_tokens: int = 0
    new_tokens: int = 0
    ttft_ms: float | None = None
    ms_per_token: list[float] = field(default_factory=list)  # each token after the first
    dropped_turns: int = 0
    cancelled: bool = False
    finished: bool = False  # the model ended its turn (an end-of-turn token), rather than the token limit
    looped: bool = False  # stopped because the reply began repeating itself (edgekit.chat.loops)

    def token(self, start: float, last: float) -> float:
        """Count a token that came now, `start` being when the request began and `last` when the previous
        token came: the first sets the time to first token, the rest the per-token times. Returns now."""
        now = time.perf_counter()
        if self.ttft_ms is None:
            self.ttft_ms = (now - start) * 1000
        else:
            self.ms_per_token.append((now - last) * 1000)
        self.new_tokens += 1
        return now

    @property
    def mean_ms(self) -> float | None:
        return sum(self.ms_per_token) / len(self.ms_per_token) if self.ms_per_token else None

    @property
    def tokens_per_s(self) -> float | None:
        m = self.mean_ms
        return 1000 / m if m else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(mean_ms=self.mean_ms, tokens_per_s=self.tokens_per_s)
        return data


@dataclass(frozen=True)
class Piece:
    """One streamed event: new text (possibly empty while a multi-byte character completes)."""

    text: str
    stats: Stats


def render_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(out["input_ids"])
    return list(tokenizer("\n".join(m["content"] for m in messages))["input_ids"])


def fit_context(
    tokenizer: Any, messages: list[dict[str, str]], context_length: int, reserve: int
) -> tuple[list[dict[str, str]], list[int], int]:
    """Drop the oldest turns (never the system prompt or the newest message) until the prompt and
    `reserve` new tokens fit; return (messages kept, their ids, turns dropped)."""
    system = [m for m in messages[:1] if m["role"] == "system"]
    rest = messages[len(system) :]
    dropped = 0
    while True:
        kept = system + rest
        ids = render_ids(tokenizer, kept)
        if len(ids) + reserve <= context_length or len(rest) <= 1:
            break
        # drop a whole exchange (user + assistant) so the template never starts with a reply
        cut = 2 if len(rest) > 2 and rest[0]["role"] == "user" and rest[1]["role"] == "assistant" else 1
        rest = rest[cut:]
        dropped += cut
    if len(ids) + 1 > context_length:
        raise UsageError(f"the message alone takes {len(ids)} tokens, more than the context window of {context_length}")
    return kept, ids, dropped


def quality_text(acc: Any) -> str | None:
    """A deployment's expected quality in a few words: its ranking metric, its ratio to the full model's, and
    the artifact's own measurement when deploy made one."""
    if acc is None or acc.metric == "params":
        return None
    text = f"{acc.metric} {acc.value:.3g}"
    if acc.ratio is not None:
        text += f" ({acc.ratio:.2f}x full)"
    art = acc.artifact
    if art:
        text += f"; {art['runtime']} measured {art['value']:.3g}"
    return text


class ChatEngine:
    def __init__(self, session: Any, tokenizer: Any, info: Info) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.info = info
        self.lock = threading.Lock()  # one reply at a time per session
        self.shapes: list[str] = []  # what reshape() offers
        self.accuracy: dict[str, Any] = {}  # shape -> accuracy row, when a checkpoint has a table
        self.routed_ms: list[float] = []  # an adaptive deployment: each reply's mean ms/token
        self.loop_guard: LoopGuard | None = LoopGuard()  # None: a reply runs to its end or its token limit
        if getattr(session, "routed", None) is not None:
            info.routed = f"routed per reply among {', '.join(session.routed.router.menu)}"

    @classmethod
    def from_deployment(cls, path: Path) -> ChatEngine:
        from edgekit.deployment.manifest import open_deployment

        m, session, tokenizer = open_deployment(path)
        rt = m.runtime
        info = Info(m.model["name"], m.shape.name, rt.name, rt.precision, rt.device, m.budget.resolved.ms_per_token,
                    m.budget.text, m.lut.status, session.context_length, quality_text(m.accuracy))  # fmt: skip
        if m.speculation:
            info.draft = f"{m.speculation['draft']} k={m.speculation['k']}"
        return cls(session, tokenizer, info)

    @classmethod
    def from_model(cls, ref: str, device: str = "cpu") -> ChatEngine:
        """A torch engine on a model as it is (a cache name, a Hugging Face folder or a hub id)."""
        from edgekit.engines.torch_engine import TorchSession
        from edgekit.models.reference import load

        model, tokenizer, model_ref = load(ref, device=device)
        session = TorchSession(model, device)
        info = Info(model_ref.name, "full", "torch", "fp32", device, context_length=session.context_length)
        return cls(session, tokenizer, info)

    @classmethod
    def from_source(
        cls, source: Source, shape: str | None = None, device: str = "cpu", draft: str | None = None, k: int = 4
    ) -> ChatEngine:
        """A torch engine on an elastic checkpoint (SMOL merged per shape) or a plan, able to reshape live; with
        `draft`, a smaller shape of the same checkpoint drafts `k` tokens at a time for it to verify (the replies
        stay the shape's own; the shape is then fixed)."""
        from edgekit.engines.torch_engine import ElasticTorchSession
        from edgekit.models.weights import read_config

        plan = source.plan
        the_shape = plan.shape(shape) if shape else plan.full
        config = read_config(source.base_folder())
        session = ElasticTorchSession(source.load(device), plan, config, the_shape, device)
        if draft is not None:
            from edgekit.speculative import elastic_speculative

            session = elastic_speculative(session, plan.shape(draft), k)
        info = Info(plan.model.name, the_shape.name, "torch", "fp32", device, context_length=session.context_length)
        if draft is not None:
            info.draft = f"{session.draft_name} k={k}"
        engine = cls(session, source.tokenizer(), info)
        table = (source.accuracy or {}).get("shapes") or {}
        engine.shapes = list(table) or [s.name for s in plan.grid()]
        engine.accuracy = (source.accuracy or {}).get("shapes", {})
        row = engine.accuracy.get(the_shape.name) or {}
        metric = next((m for m in ("chat_ppl", "ppl") if row.get(m) is not None), None)
        if metric:
            info.quality = f"{metric} {row[metric]:.3g} (accuracy table)"
        return engine

    @property
    def speculation(self) -> Any:
        """The running SpeculationStats of a session with a draft (chat --draft), else None."""
        return getattr(self.session, "stats", None) if self.info.draft else None

    @property
    def can_reshape(self) -> bool:
        return hasattr(self.session, "reshape")

    def reshape(self, shape: str) -> float:
        """Change the live model's shape (torch on an elastic model); return the seconds it took."""
        if not self.can_reshape:
            raise UsageError("changing shape live needs the torch runtime on an elastic checkpoint or plan")
        target = self.session.plan.shape(shape)
        with self.lock:
            seconds = self.session.reshape(target)
        self.info.shape = target.name
        return seconds

    def complete(
        self, messages: list[dict[str, str]], sampling: Sampling, on_text: Callable[[str], None] | None = None
    ) -> GenerationResult:
        """One whole reply (streamed to `on_text` as it comes), with the figures `generate` reports."""
        text, stats = "", Stats()
        for piece in self.reply(messages, sampling):
            text += piece.text
            stats = piece.stats
            if on_text and piece.text:
                on_text(piece.text)
        ttft = stats.ttft_ms or 0.0
        decode = stats.mean_ms or ttft
        return GenerationResult(
            text.strip(),
            stats.prompt_tokens,
            stats.new_tokens,
            ttft,
            decode,
            1000 / decode if decode else 0.0,
            stats.looped,
        )

    def check_fits(self, messages: list[dict[str, str]], sampling: Sampling) -> None:
        """A UsageError saying the limit when the newest message alone does not fit the context window (older
        turns are dropped as needed), before any slot or thread is spent on it."""
        fit_context(self.tokenizer, messages, self.info.context_length, self.reserve(sampling))

    def reserve(self, sampling: Sampling) -> int:
        """Room kept for the reply when older turns are dropped: its token limit, at most a quarter of the window."""
        return min(sampling.max_new_tokens, max(1, self.info.context_length // 4))

    def reply(
        self, messages: list[dict[str, str]], sampling: Sampling, cancel: threading.Event | None = None
    ) -> Iterator[Piece]:
        """Stream the assistant's reply to `messages` (the last one the user's); stop when `cancel` is set."""
        if not messages or not messages[-1]["content"].strip():
            raise UsageError("the prompt is empty")
        _, ids, dropped = fit_context(self.tokenizer, messages, self.info.context_length, self.reserve(sampling))
        stats = Stats(prompt_tokens=len(ids), context_tokens=len(ids), dropped_turns=dropped)
        pieces: list[int] = []
        printed = 0
        with self.lock:
            if cancel is not None and cancel.is_set():  # given up while it waited for the session
                stats.cancelled = True
                yield Piece("", stats)
                return
            start = last = time.perf_counter()
            stream = self.session.stream(ids, sampling)
            try:
                for token in stream:
                    last = stats.token(start, last)
                    stats.context_tokens += 1
                    if token in self.session.eos_ids:
                        stats.finished = True
                        break
                    pieces.append(token)
                    text = self.tokenizer.decode(pieces, skip_special_tokens=True)
                    new = "" if text.endswith("\ufffd") else text[printed:]
                    printed += len(new)
                    yield Piece(new, stats)
                    if cancel is not None and cancel.is_set():
                        stats.cancelled = True
                        break
                    if self.loop_guard is not None and loop_start(pieces, self.loop_guard) is not None:
                        stats.looped = True
                        break
            finally:
                close = getattr(stream, "close", None)
                if close:
                    close()
        self.note_route(stats)
        text = self.tokenizer.decode(pieces, skip_special_tokens=True)
        yield Piece(text[printed:], stats)

    def note_route(self, stats: Stats) -> None:
        """After a routed reply: which shape made it, and the mean latency of the replies so far."""
        last = getattr(self.session, "last", None)
        if last is None:
            return
        self.info.shape = last.shape
        if stats.mean_ms:
            self.routed_ms.append(stats.mean_ms)
        if self.routed_ms:
            mean = sum(self.routed_ms) / len(self.routed_ms)
            budget = f" (budget {self.info.budget_ms:.3g})" if self.info.budget_ms else ""
            self.info.routed = (f"routed to {last.shape} in {last.router_ms:.0f} ms; mean {mean:.1f} ms/token over "
                                f"{len(self.routed_ms)} replies{budget}")  # fmt: skip
