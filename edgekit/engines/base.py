"""What every runtime engine offers: compile a Hugging Face subnet folder, open it, stream tokens.

An engine's compiled folder is self-contained (weights in the runtime's format plus the tokenizer
files), so a deployment runs with no reference to the elastic checkpoint it was cut from.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass
class RuntimeInfo:
    """What `doctor` and deploy's runtime choice know about one runtime on this machine."""

    name: str  # the runtime id used on the command line: ort, torch, tvm, mlc, llamacpp
    package: str
    installed: bool
    version: str | None = None
    offers: list[str] = field(default_factory=list)  # devices / execution providers it runs on here
    note: str | None = None  # what to install, or why it does not load
    gpu: bool | None = None  # whether it runs on this machine's NVIDIA GPU (None: not a GPU runtime here)
    gpu_detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0 is greedy
    top_p: float = 1.0
    max_new_tokens: int = 256
    min_new_tokens: int = 0  # measurement sets it so a reply cannot end early at EOS
    seed: int | None = None  # with temperature > 0: the same seed draws the same reply (on one runtime)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Session(Protocol):
    """A loaded model. `stream` yields new token ids as they are made; stop iterating to cancel."""

    runtime: str
    device: str
    context_length: int
    eos_ids: set[int]

    def stream(self, ids: list[int], sampling: Sampling) -> Iterator[int]: ...

    def first_token(self, ids: list[int]) -> tuple[float, float]:
        """Process a prompt and pick one token: (seconds to process the prompt, seconds to the token)."""
        ...


class Engine(Protocol):
    name: str

    def probe(self) -> RuntimeInfo:
        """Whether the runtime is installed here, its version, what it offers, and what to install if not."""
        ...

    def check(self) -> None:
        """Raise MissingDependencyError (saying what to install) when the runtime is absent."""
        ...

    def versions(self) -> dict[str, str]: ...

    def precisions(self, device: str) -> list[str]:
        """What this engine can compile for a device, the preferred one first."""
        ...

    def compile(
        self, hf_dir: Path, out: Path, precision: str, device: str, options: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Write the compiled model into the (empty, temporary) folder `out`; return what was done."""
        ...

    def describe(
        self, hf_dir: Path, out: Path, precision: str, device: str, options: dict[str, str] | None = None
    ) -> list[str]:
        """What compile would do, as command lines or one-line steps: for --dry-run."""
        ...

    def open(self, folder: Path, device: str) -> Session: ...


def trial_options(engine: Any, precision: str, options: dict[str, str] | None) -> dict[str, str] | None:
    """Build options that make the same graph as `options` much faster (e.g. int4 weights rounded to nearest
    instead of calibrated): what latency is measured on, since latency does not depend on weight values.
    None when the engine has no cheaper build of the same graph."""
    cheaper = getattr(engine, "trial_options", None)
    return cheaper(precision, options) if cheaper is not None else None


def timed_stream(session: Session, ids: list[int], sampling: Sampling) -> tuple[list[int], list[float], float]:
    """(tokens, the perf_counter time each arrived, start time): the raw data of every latency figure."""
    tokens: list[int] = []
    stamps: list[float] = []
    start = time.perf_counter()
    for token in session.stream(ids, sampling):
        stamps.append(time.perf_counter())
        tokens.append(token)
    return tokens, stamps, start


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def sampling_generator(sampling: Sampling) -> Any:
    """A torch generator seeded for one reply when the sampling names a seed, else None (the global one)."""
    if sampling.seed is None or sampling.temperature <= 0:
        return None
    import torch

    return torch.Generator().manual_seed(sampling.seed)


def pick_token(logits: Any, sampling: Sampling, generator: Any = None) -> int:
    """The next token from one row of logits (a torch tensor): greedy at temperature 0, else a draw from
    the temperature-scaled top-p nucleus. Engines that sample on the host share it."""
    import torch

    if sampling.temperature <= 0:
        return int(torch.argmax(logits))
    return int(torch.multinomial(token_probs(logits, sampling), 1, generator=generator))


def token_probs(logits: Any, sampling: Sampling) -> Any:
    """The distribution pick_token draws from at temperature > 0 (one row or a batch of rows): softmax of the
    temperature-scaled logits, cut to the top-p nucleus and renormalised."""
    import torch

    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < sampling.top_p  # the top token always stays
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
    return probs / probs.sum(dim=-1, keepdim=True)
