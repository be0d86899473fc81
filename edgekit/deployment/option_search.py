"""Which build options decode fastest on this host at equal quality: `edgekit profile --search-options`.

A runtime's defaults are chosen for every machine; on a given one another int4 block size or compute type can be
a third faster, and it can cost quality (a wider block shares one scale among more weights). So every candidate is
built for real (its weights made as deploy makes them, GPTQ by default), its quality is measured through the
runtime's own logits, and its speed in interleaved rounds (every candidate once per round, the order rotated), so
the host's drift over minutes falls on all of them alike. The winner is the fastest candidate whose perplexity is
within `tolerance` of the default build's; the default is always a candidate, so the search never ships worse.

Quality text: the shipped calibration file's sequences past the ones GPTQ calibrates on, so no build is scored on
what it was fitted to.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import UsageError

TOLERANCE = 0.02  # a candidate may cost at most 2 % perplexity against the default build
ROUNDS = 3

# ONNX Runtime GenAI's int4 MatMulNBits: the block of columns that share a scale, and the compute type of the
# CPU kernel (accuracy level 4: int8 activations, VNNI where the CPU has it, the builder's CPU default; 0: fp32)
ORT_CPU = [{"block_size": b, "accuracy_level": a} for a in ("4", "0") for b in ("32", "64", "128")]
ORT_CUDA = [{"block_size": b} for b in ("32", "64", "128")]
# TVM int4 (tvm_int4): the columns that share a scale and an offset
TVM_INT4 = [{"block_size": b} for b in ("32", "64")]


def candidates(runtime: str, precision: str, device: str, columns: list[int] | None = None) -> list[dict[str, str]]:
    """The option sets worth measuring for a runtime on a device, the runtime's default first; with `columns`
    (every input width a layer of any shape can have), only the int4 blocks that divide them all."""
    if runtime == "ort" and precision in ("int4", "int4-mixed"):
        sets = ORT_CPU + threads_candidates(ORT_CPU[0]) if device == "cpu" else ORT_CUDA
    elif runtime == "tvm" and precision == "int4":
        sets = TVM_INT4
    else:
        raise UsageError(
            f"no build options to search for {runtime} {precision}: the search knows ONNX Runtime GenAI's int4 "
            "builds (block_size, accuracy_level) and TVM's (block_size); llama.cpp's choices are its quant types, "
            "which are precisions (--precision q4_0|q4_1|q4_k_m)"
        )
    return [dict(c) for c in sets if not columns or all(n % int(c["block_size"]) == 0 for n in columns)]


def threads_candidates(default: dict[str, str], cores: int | None = None) -> list[dict[str, str]]:
    """The default build with half the physical cores for each operator (ONNX Runtime uses them all): on a host
    where something else runs, or where the cores share a memory channel, fewer threads can decode faster."""
    import psutil

    cores = cores or psutil.cpu_count(logical=False) or 1
    half = max(1, cores // 2)
    return [] if half == cores else [{**default, "intra_op_num_threads": str(half)}]


@dataclass
class Trial:
    options: dict[str, str]
    ppl: float  # through the runtime's own logits, on the quality text
    quality_ratio: float  # ppl / the default build's
    decode_ms: float  # median over the rounds
    rounds_ms: list[float]
    build_s: float
    within: bool = True  # quality within the tolerance

    @property
    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.options.items()) or "default"


@dataclass
class OptionSearch:
    shape: str
    runtime: str
    precision: str
    device: str
    tolerance: float
    text: dict[str, Any]
    trials: list[Trial]
    winner: dict[str, str]
    speedup: float  # the default build's decode ms / the winner's
    seconds: float
    rounds: int = ROUNDS
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pick(trials: list[Trial], tolerance: float) -> Trial:
    """The fastest trial whose quality is within `tolerance` of the first (the default) one's."""
    base = trials[0]
    for t in trials:
        t.quality_ratio = t.ppl / base.ppl
        t.within = t.quality_ratio <= 1 + tolerance
    return min((t for t in trials if t.within), key=lambda t: t.decode_ms)


def interleaved(measure: Callable[[int], float], n: int, rounds: int) -> list[list[float]]:
    """`rounds` measurements of each of n candidates, one of each per round and each round's order rotated, so
    slow drift of the host falls on every candidate alike."""
    got: list[list[float]] = [[] for _ in range(n)]
    for r in range(rounds):
        for k in range(n):
            i = (k + r) % n
            got[i].append(measure(i))
    return got


def quality_text(tokenizer: Any, max_tokens: int = 4096) -> tuple[list[list[int]], dict[str, Any]]:
    """The shipped calibration file's sequences that GPTQ does not read (it reads the first DEFAULT_TOKENS)."""
    from edgekit.artifacts import sha256_file
    from edgekit.quantize.calibration import DEFAULT_TOKENS, default_file, read_samples, sequences

    path = default_file()
    seqs = sequences(tokenizer, read_samples(path), 10**9)
    skip, held = 0, []
    for s in seqs:
        if skip < DEFAULT_TOKENS:
            skip += len(s)
        elif sum(map(len, held)) < max_tokens:
            held.append(s)
    return held, {"file": path.name, "sha256": sha256_file(path), "sequences": len(held),
                  "tokens": sum(map(len, held)), "after_tokens": skip}  # fmt: skip


def sequence_ppl(session: Any, seqs: list[list[int]]) -> float:
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    for ids in seqs:
        logits = session.sequence_logits(ids)
        target = torch.tensor(ids[1:])
        total += F.cross_entropy(logits[:-1].float(), target, reduction="sum").item()
        count += len(ids) - 1
    return math.exp(total / count)


def search_options(
    hf_dir: Path, runtime: str, precision: str, device: str, work: Path, settings: Any, shape: str,
    tolerance: float = TOLERANCE, rounds: int = ROUNDS, options: dict[str, str] | None = None,
    on_step: Callable[[str], None] | None = None, columns: list[int] | None = None,
) -> OptionSearch:  # fmt: skip
    """Build `hf_dir` (one shape's checkpoint) with every candidate option set (plus the fixed `options`),
    measure each one's quality and speed here, and pick the winner. `columns`: the layer input widths every
    shape deploy may cut has (an int4 block must divide them)."""
    from transformers import AutoTokenizer

    from edgekit.deployment.measure import measure_folder
    from edgekit.engines import get_engine

    start = time.perf_counter()
    engine = get_engine(runtime)
    engine.check()
    seqs, text = quality_text(AutoTokenizer.from_pretrained(hf_dir))
    every = candidates(runtime, precision, device)
    kept = candidates(runtime, precision, device, columns)
    notes = [f"block_size={c['block_size']} skipped: it does not divide the layers' input widths {columns}"
             for c in every if c not in kept and c.get("block_size")]  # fmt: skip
    if not kept or kept[0] != every[0]:
        raise UsageError(f"the default int4 blocks of {every[0].get('block_size')} columns do not divide this "
                         f"model's layer widths {columns}: nothing to compare a search against")  # fmt: skip
    sets = [{**(options or {}), **c} for c in kept]
    folders, ppls, builds = [], [], []
    for k, opts in enumerate(sets):
        label = ",".join(f"{a}={b}" for a, b in opts.items())
        if on_step:
            on_step(f"building {k + 1}/{len(sets)} ({label})")
        folder = work / f"candidate-{k}"
        folder.mkdir()
        t0 = time.perf_counter()
        engine.compile(hf_dir, folder, precision, device, opts)
        builds.append(round(time.perf_counter() - t0, 1))
        if on_step:
            on_step(f"scoring {k + 1}/{len(sets)} on {text['tokens']} held-out tokens")
        ppls.append(sequence_ppl(engine.open(folder, device), seqs))
        folders.append(folder)

    def measure(i: int) -> float:
        if on_step:
            on_step(f"timing {i + 1}/{len(sets)}")
        return measure_folder(runtime, folders[i], device, settings).decode_ms

    times = interleaved(measure, len(sets), rounds)
    trials = [Trial(o, round(p, 4), 1.0, round(statistics.median(t), 3), [round(x, 3) for x in t], b)
              for o, p, t, b in zip(sets, ppls, times, builds, strict=True)]  # fmt: skip
    best = pick(trials, tolerance)
    for t in trials:
        t.quality_ratio = round(t.quality_ratio, 4)
    return OptionSearch(shape, runtime, precision, device, tolerance, text, trials, best.options,
                        round(trials[0].decode_ms / best.decode_ms, 3), round(time.perf_counter() - start, 1),
                        rounds, sorted(set(notes)))  # fmt: skip
