"""`edgekit deploy --draft SHAPE`: ship the chosen shape, or a better one, with a smaller shape of the same
checkpoint drafting for it (self-speculative decoding, edgekit.speculative).

After the usual search has found the shape X to ship, the draft is built once and verifiers are measured alone
and with the draft, interleaved, in one fresh worker process per pair, on the source's chat reference prompts
(real text, greedy: how much of a draft is kept depends on what is said, so random token ids would not do):
first up to MAX_TRIES frontier shapes ranked above X (best first), then X itself. The best verifier whose
speculative latency meets the budget ships with the draft; when none does and the draft does not make X
faster either, X ships alone and the notes say what was measured. The deployment's accuracy is its verifier's
(greedy replies equal the verifier's own). The shipped pair is measured again on its final (calibrated) builds:
acceptance depends on the weights, and those are the figures the manifest keeps.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekit.deployment.measure import decode_ms, run_worker, worker_output
from edgekit.errors import UsageError
from edgekit.speculative.session import nested_in

RUNTIMES = ("ort", "tvm", "torch")  # those whose sessions make decoders (feed a chunk, read its logits, cut back)
# ONNX Runtime's int4 kernels with int8 compute (accuracy level 4, the CPU default) take another path for a chunk
# of tokens than for one: measured on the default model, the logits of the same positions differed by up to 0.8
# and greedy replies split within 48 tokens in half the prompts. With float compute (level 0) they agree within
# 1e-4, so a verifier that must reply as it would alone is built with it; the draft's numerics never change a
# reply, so the draft keeps the fast kernels.
VERIFIER_OPTIONS = {("ort", "int4", "cpu"): {"accuracy_level": "0"}}
DRAFT_DIR = "draft"
MAX_TRIES = 2  # verifiers above the plain choice measured with the draft
PROMPTS = 6
NEW_TOKENS = 48
ROUNDS = 2


@dataclass
class PairFigures:
    """A verifier measured alone and with a draft, interleaved on the same prompts (medians over replies)."""

    verifier: str
    draft: str
    k: int
    alone_ms: float
    speculative_ms: float
    acceptance: float  # share of drafted tokens kept
    tokens_per_pass: float  # tokens made per verifier pass (1.0 is plain decoding)
    identical: bool  # every greedy reply equal to the verifier's alone, token for token
    peak_rss_mb: float  # both sessions in one process
    prompts: int
    new_tokens: int
    rounds: int
    weights: str = "own"  # the draft's: "slice" on the verifier's (edgekit.speculative.slice), or its own build

    @property
    def speedup(self) -> float:
        return self.alone_ms / self.speculative_ms

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": round(self.speedup, 3)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairFigures:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})

    def describe(self) -> str:
        return (f"{self.verifier} with draft {self.draft} (k={self.k}): {self.speculative_ms:.2f} ms/token against "
                f"{self.alone_ms:.2f} alone ({self.speedup:.2f}x), {self.acceptance:.0%} of drafted tokens kept, "
                f"{self.tokens_per_pass:.2f} tokens per verifier pass"
                + ("; the draft on the verifier's weights" if self.weights == "slice" else ""))  # fmt: skip


def check_request(runtime: str, verify: bool, source: Any, draft: str, k: int) -> Any:
    """The draft's Shape, after refusing what cannot run: a runtime without decoders, a target that is not this
    machine (speculation's speed is only known measured), a source without chat prompts to measure on."""
    from edgekit.speculative.session import MAX_K

    if runtime not in RUNTIMES:
        raise UsageError(f"--draft runs in {', '.join(RUNTIMES)}, not {runtime}: pick --runtime ort")
    if not verify:
        raise UsageError("--draft measures speculation on this machine: deploy to --target host (or pass --verify)")
    if not 1 <= k <= MAX_K:
        raise UsageError(f"--draft-k must be 1 to {MAX_K}, not {k}")
    if source.chat_reference() is None:
        raise UsageError(f"--draft measures speculation on chat prompts stored with the checkpoint; {source.label} "
                         "has none (deploy from an elastic checkpoint)")  # fmt: skip
    shape = source.shape(draft)
    if not nested_in(shape, source.plan.full):
        raise UsageError(f"the draft {shape.name} must be a smaller shape than the full model {source.plan.full.name}")
    return shape


def verifier_options(
    runtime: str, precision: str, device: str, options: dict[str, str] | None
) -> dict[str, str] | None:
    """The options a verifier is built with, where they differ from the plain build's; else None."""
    override = VERIFIER_OPTIONS.get((runtime, precision, device))
    if override is None or all((options or {}).get(k) == v for k, v in override.items()):
        return None
    return {**(options or {}), **override}


def verifiers_above(rows: list[Any], shipped: str, draft: Any, source: Any) -> list[Any]:
    """Frontier shapes ranked above the plain choice (rows are best first) that the draft is nested in."""
    above = []
    for row in rows:
        if row.shape == shipped:
            break
        if row.frontier and nested_in(draft, source.shape(row.shape)):
            above.append(row)
    return above[:MAX_TRIES]


def prompt_ids(source: Any) -> list[list[int]]:
    return [list(p) for p in source.chat_reference().prompt_ids[:PROMPTS]]


# ------------------------------------------------------------------ measuring a pair (worker process)


def timed_reply(session: Any, ids: list[int], tokens: int) -> tuple[list[int], float]:
    """A greedy reply and its decode ms/token (from the first token to the last)."""
    from edgekit.engines import Sampling
    from edgekit.engines.base import timed_stream

    out, stamps, _ = timed_stream(session, ids, Sampling(max_new_tokens=tokens))
    return out, decode_ms(stamps)


def open_draft(engine: Any, folder: Path, verifier: Any, device: str) -> Any:
    """A shipped draft: cut from the verifier's loaded tensors when it is a slice (torch), else its own build."""
    from edgekit.speculative.slice import is_slice, open_slice

    if not is_slice(folder):
        return engine.open(folder, device)
    return open_slice(folder, verifier)


def measure_pair_here(runtime: str, verifier: Path, draft: Path, device: str, k: int, prompts: list[list[int]],
                      new_tokens: int, rounds: int, baseline: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Time the plain build alone (`baseline`, else the verifier) and the verifier with the draft on each prompt
    in turn; the replies with the draft are checked against the verifier's own alone."""
    from edgekit.deployment.measure import _peak_rss_mb
    from edgekit.engines import get_engine
    from edgekit.speculative import SpeculationStats, SpeculativeSession
    from edgekit.speculative.slice import is_slice

    engine = get_engine(runtime)
    alone = engine.open(verifier, device)
    plain = engine.open(baseline, device) if baseline is not None else alone
    spec = SpeculativeSession(alone, open_draft(engine, draft, alone, device), k, DRAFT_DIR)
    own = [timed_reply(alone, ids, new_tokens)[0] for ids in prompts] if baseline is not None else None
    timed_reply(plain, prompts[0], 8)  # warm up: the first pass of a session pays for its allocations
    timed_reply(spec, prompts[0], 8)
    spec.stats = SpeculationStats()  # the warm-up's counts are not the measurement's
    plain_ms, spec_ms, identical = [], [], True
    for _ in range(rounds):
        for i, ids in enumerate(prompts):
            reference, ms = timed_reply(plain, ids, new_tokens)
            plain_ms.append(ms)
            tokens, ms = timed_reply(spec, ids, new_tokens)
            spec_ms.append(ms)
            identical &= tokens == (own[i] if own is not None else reference)
    s = spec.stats
    return {"alone_ms": round(statistics.median(plain_ms), 3), "speculative_ms": round(statistics.median(spec_ms), 3),
            "acceptance": round(s.acceptance, 4), "tokens_per_pass": round(s.tokens_per_pass, 3),
            "identical": identical, "peak_rss_mb": round(_peak_rss_mb(), 1),
            "weights": "slice" if is_slice(draft) else "own"}  # fmt: skip


def measure_pair(runtime: str, verifier: Path, draft: Path, device: str, k: int, prompts: list[list[int]],
                 names: tuple[str, str], new_tokens: int = NEW_TOKENS, rounds: int = ROUNDS,
                 baseline: Path | None = None) -> PairFigures:  # fmt: skip
    """Measure a verifier with a draft against the plain build alone (`baseline`: built with other options;
    default the verifier itself) in a fresh worker process."""
    job = {"prompts": prompts, "k": k, "new_tokens": new_tokens, "rounds": rounds,
           "baseline": str(baseline) if baseline is not None else None}  # fmt: skip
    argv = (sys.executable, "-m", "edgekit.deployment.speculation", runtime, str(verifier), str(draft),
            "--device", device, "--job", json.dumps(job))  # fmt: skip
    figures = run_worker(argv, f"measure {names[0]} with draft {names[1]} in {runtime}",
                         f"measuring {names[0]} with draft {names[1]} failed")  # fmt: skip
    return PairFigures(names[0], names[1], k, **figures, prompts=len(prompts), new_tokens=new_tokens, rounds=rounds)


# ------------------------------------------------------------------ drafts on their verifier's weights


def make_slice(runtime: str, source: Any, verifier: Any, build: Path, draft: Any, folder: Path, load: Any) -> bool:
    """Write into `folder` the draft as a part of the verifier built in `build` (edgekit.speculative.slice): in torch
    which of its layers and channels it keeps (with its SMOL correction: `load()` gives the loaded checkpoint), in
    TVM int4 a library of its own on the verifier's arrays. False where it cannot be one (its layers are not all
    the verifier's, other heads or dropped blocks in TVM, another runtime or precision): use its own build."""
    from edgekit.speculative.slice import SliceSpec, corrections, write_slice

    cut = SliceSpec.between(source.plan, verifier, draft)
    if cut is None or runtime not in ("torch", "tvm"):
        return False
    folder.mkdir()
    if runtime == "tvm":
        from edgekit.engines.tvm_engine import compile_slice

        if cut.heads_per_group != verifier.heads or cut.skip or not compile_slice(build, cut.layers, cut.ffn, folder):
            shutil.rmtree(folder)
            return False
        cut.write(folder)
        return True
    write_slice(folder, cut, corrections(load(), source.plan, verifier, draft))
    return True


# ------------------------------------------------------------------ the deploy step


@dataclass
class Speculation:
    """What the draft step decided: the verifier attempt to ship, the draft's (None: ship alone), the options the
    verifier is built with when they differ from the plain build's, every pair measured and the one shipped."""

    final: Any
    draft: Any | None
    tries: list[PairFigures]
    verifier_options: dict[str, str] | None = None
    shipped: PairFigures | None = None
    baseline: Path | None = None  # the plain build of the shipped verifier, what its speed-up is measured against

    def record(self) -> dict[str, Any] | None:
        if self.draft is None or self.shipped is None:
            return None
        from edgekit.speculative.slice import is_slice

        weights = "a slice of the verifier's" if is_slice(self.draft.compiled) else "its own build"
        return {"draft": self.shipped.draft, "k": self.shipped.k, "folder": DRAFT_DIR, "weights": weights,
                "verifier_options": self.verifier_options, "measured": self.shipped.to_dict(),
                "tries": [t.to_dict() for t in self.tries],
                "accuracy": "the verifier's: greedy replies equal its own, sampled ones its distribution"}  # fmt: skip


def speculate(choice: Any, build: Any, final: Any, work: Path, step: Any, trial: dict[str, str] | None) -> Speculation:
    """Measure the draft with verifiers above the plain choice, then with the choice itself; see the module."""
    from edgekit.deployment.pipeline import Attempt, build_attempt
    from edgekit.engines import get_engine

    req, source, res = choice.request, choice.source, choice.resolved
    draft = source.shape(req.draft)
    shipped = source.shape(final.candidate.shape)
    row = next((r for r in choice.rows if r.shape == draft.name), None)
    if row is None:
        raise UsageError(f"the draft {draft.name} is not among {source.label}'s shapes")
    prompts = prompt_ids(source)
    (work / "draft").mkdir()  # apart from the shapes tried as such: the draft may be one of them
    built: list[Any] = []

    def own_draft() -> Any:
        """The draft's own build, made once and only when a verifier cannot lend it its weights."""
        built[:] = built or [build_attempt(choice, row, work / "draft", False, step, trial)]
        return built[0]

    override = verifier_options(res.runtime, res.precision, res.device, choice.options)
    tries: list[PairFigures] = []
    spec_builds: dict[str, Path] = {}
    drafts: dict[str, Any] = {}  # per verifier: the draft attempt it is measured (and shipped) with
    elastic: list[Any] = []

    def checkpoint() -> Any:  # loaded once, for the drafts' SMOL corrections
        elastic[:] = elastic or [source.load()]
        return elastic[0]

    def draft_for(attempt: Any) -> Any:
        """The draft on the verifier's own weights where it can be (make_slice), else its own build."""
        name = attempt.candidate.shape
        folder = work / f"draft-slice-{name}"
        with step(f"cutting {draft.name} from {name}'s weights"):
            made = make_slice(res.runtime, source, source.shape(name), attempt.compiled, draft, folder, checkpoint)
        return Attempt(row, folder, folder, {"slice": True}, None, {}) if made else own_draft()

    def pair(attempt: Any) -> PairFigures:
        name, verifier, baseline = attempt.candidate.shape, attempt.compiled, None
        drafts[name] = draft_for(attempt)
        if override is not None:
            # the verifier built again with the options that keep a chunk's logits equal to one token's
            verifier, baseline = work / f"verifier-{name}", attempt.compiled
            verifier.mkdir()
            with step(f"compiling {name} as a verifier ({', '.join(f'{k}={v}' for k, v in override.items())})"):
                get_engine(res.runtime).compile(attempt.hf_dir, verifier, res.precision, res.device,
                                                {**(trial or choice.options), **override})  # fmt: skip
            spec_builds[name] = verifier
        with step(f"measuring {name} with draft {draft.name} (k={req.k})"):
            p = measure_pair(res.runtime, verifier, drafts[name].compiled, res.device, req.k, prompts,
                             (name, draft.name), baseline=baseline)  # fmt: skip
        tries.append(p)
        choice.notes.append(f"speculation: {p.describe()}")
        return p

    def fits(attempt: Any, p: PairFigures) -> bool:
        if not p.identical:  # a near-tie between a batched and a one-token pass: never ship a changed reply
            choice.notes.append(f"speculation: {p.verifier}'s replies changed with the draft; not shipped")
            return False
        return not (attempt.check or choice.budget).violations(p.speculative_ms, p.peak_rss_mb)

    def chosen(attempt: Any) -> Speculation:
        return Speculation(attempt, drafts[attempt.candidate.shape], tries, override, baseline=attempt.compiled)

    for candidate in verifiers_above(choice.rows, shipped.name, draft, source):
        attempt = build(candidate)
        attempt.miss = None
        if fits(attempt, pair(attempt)):
            choice.notes.append(f"chose {candidate.shape} with draft {draft.name}: better expected than "
                                f"{shipped.name}, and within the budget with the draft")  # fmt: skip
            return chosen(attempt)
    if nested_in(draft, shipped):
        p = pair(final)
        if p.speedup > 1 and fits(final, p):
            return chosen(final)
    choice.notes.append(f"shipped {shipped.name} without a draft: speculation with {draft.name} measured no faster "
                        f"here (see the figures above)")  # fmt: skip
    return Speculation(final, None, tries)


# ------------------------------------------------------------------ profile --drafts


def profile_drafts(source: Any, runtime: str, precision: str, device: str, drafts: list[Any], ks: list[int],
                   options: dict[str, str] | None, work: Path, on_step: Any = None, trial: bool = True,
                   new_tokens: int = NEW_TOKENS, rounds: int = ROUNDS,
                   weights: tuple[str, ...] = ("slice",)) -> dict[str, Any]:  # fmt: skip
    """The full model of `source` measured alone and with each draft at each k on this machine: the table a LUT
    keeps (provenance "speculation") and `deploy --draft auto` picks from. The builds are the runtime's trial
    builds of the checkpoint's own weights (SMOL merged): acceptance depends on the weights, so a plan's
    un-tuned shapes would say little about a checkpoint's. `weights`: each draft on the verifier's weights as
    deploy ships it where it can be (`slice`, make_slice; else its own build), and/or its own build (`own`)."""
    from edgekit.engines import get_engine
    from edgekit.engines.base import folder_bytes, trial_options

    engine = get_engine(runtime)
    if trial:
        options = trial_options(engine, precision, options) or options
    prompts = prompt_ids(source)
    built = {}
    start = time.perf_counter()
    for shape in [source.plan.full, *drafts]:
        if on_step:
            on_step(f"speculation: building {shape.name}")
        hf_dir, compiled = work / f"spec-hf-{shape.name}", work / f"spec-{shape.name}"
        source.extract(shape, hf_dir)
        compiled.mkdir()
        engine.compile(hf_dir, compiled, precision, device, options)
        built[shape.name] = compiled
    full = source.plan.full.name
    override = verifier_options(runtime, precision, device, options)
    verifier, baseline = built[full], None
    if override is not None:
        if on_step:
            on_step(f"speculation: building {full} as a verifier")
        verifier, baseline = work / "spec-verifier", built[full]
        verifier.mkdir()
        engine.compile(work / f"spec-hf-{full}", verifier, precision, device, {**(options or {}), **override})
    folders: dict[tuple[str, str], Path] = {}  # (draft, slice | own): what it is measured with
    for draft in drafts:
        for kind in weights:
            folder = work / f"spec-slice-{draft.name}"
            if kind == "slice" and make_slice(runtime, source, source.plan.full, verifier, draft, folder, source.load):
                folders[draft.name, "slice"] = folder
            else:
                folders[draft.name, "own"] = built[draft.name]
    rows = []
    for (name, kind), folder in folders.items():
        for k in ks:
            if on_step:
                on_step(f"speculation: {full} with {name} ({kind}), k={k}")
            row = measure_pair(runtime, verifier, folder, device, k, prompts, (full, name), new_tokens, rounds,
                               baseline).to_dict()  # fmt: skip
            rows.append(row)
    kind = "trial builds" if trial else "builds"
    return {"source": source.label, "identity": source_identity(source), "verifier": full, "rows": rows,
            "weights": f"the checkpoint's weights, {precision} {kind} ({options or 'default options'})",
            "verifier_options": override,
            "draft_bytes": {f"{n} {kind}": folder_bytes(f) for (n, kind), f in folders.items()},
            "prompts": len(prompts), "new_tokens": new_tokens, "rounds": rounds,
            "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


def source_identity(source: Any) -> str:
    """What a speculation table belongs to: the checkpoint's SMOL hash, else the plan's permutations."""
    ckpt = source.checkpoint
    if ckpt is not None:
        return f"elastic:{ckpt.manifest['files']['smol.safetensors']['sha256']}"
    return f"plan:{source.plan.permutations_sha256}"


def best_draft(lut: Any, source: Any) -> PairFigures | None:
    """The (draft, k) with the best speed-up the LUT measured for this source's full model, or None when it holds
    no table for it."""
    table = (lut.provenance or {}).get("speculation")
    if not table or table.get("identity") != source_identity(source) or not table.get("rows"):
        return None
    rows = [PairFigures.from_dict(r) for r in table["rows"] if r["identical"]]
    return max(rows, key=lambda p: p.speedup, default=None)


def resolve_auto(choice: Any) -> None:
    """`--draft auto`: the (draft, k) profile measured fastest here for this source, or no draft at all (said in
    the notes) when speculation measured no faster; refused when the LUT holds no table for the source."""
    req = choice.request
    if req.draft != "auto":
        return
    best = best_draft(choice.lut, choice.source)
    if best is None:
        raise UsageError(f"--draft auto picks from the drafts `edgekit profile --drafts SHAPES` measured here; the "
                         f"LUT {choice.lut.key} holds none for {choice.source.label}")  # fmt: skip
    if best.speedup <= 1:
        choice.notes.append(f"--draft auto: the best draft profile measured here, {best.describe()}, is no faster; "
                            "deployed without a draft")  # fmt: skip
        req.draft = None
        return
    choice.notes.append(f"--draft auto: {best.draft} at k={best.k}, the fastest pair profile measured here "
                        f"({best.speedup:.2f}x for {best.verifier})")  # fmt: skip
    req.draft, req.k = best.draft, best.k


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="edgekit's speculation worker (a verifier and a draft, one process)")
    ap.add_argument("runtime")
    ap.add_argument("verifier", type=Path)
    ap.add_argument("draft", type=Path)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--job", required=True)
    args = ap.parse_args(argv)
    job = json.loads(args.job)
    baseline = Path(job["baseline"]) if job.get("baseline") else None
    k, new_tokens, rounds = int(job["k"]), int(job["new_tokens"]), int(job["rounds"])
    worker_output(lambda: measure_pair_here(args.runtime, args.verifier, args.draft, args.device, k, job["prompts"],
                                            new_tokens, rounds, baseline))  # fmt: skip


if __name__ == "__main__":
    main()
