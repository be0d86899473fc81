"""`edgekit deploy`: pick the best shape a target can afford under a budget, cut it, compile it for the
target's runtime, measure it when the target is this machine, and write a deployment folder.

    resolve target and runtime -> LUT (measured, else estimated) -> candidates: every shape of the space
    (predicted latency, memory, expected accuracy; the Pareto frontier marked) -> best that fits ->
    extract (SMOL merged) -> compile -> verify (host only: step down to the next shape if the budget is
    missed, step up to a better one if it is met with room to spare) -> deployment folder
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit.artifacts import (
    atomic_dir,
    check_free_space,
    check_writable,
    destination_lock,
    hash_tree,
    work_dir,
    write_manifest,
)
from edgekit.deployment.budget import Budget
from edgekit.deployment.choose import (
    FLOOR,
    STEP_UP_BELOW,
    Candidate,
    below_floor,
    candidates,
    infeasible,
    misses,
    next_candidate,
    quality_ratio,
    step_up_candidate,
)
from edgekit.deployment.lut import MEASURED, Lut
from edgekit.deployment.manifest import (
    MANIFEST,
    MODEL_DIR,
    AccuracyRecord,
    BudgetRecord,
    DeploymentManifest,
    LutRecord,
    Predicted,
    RuntimeRecord,
    TargetRecord,
    subnet_record,
)
from edgekit.deployment.measure import MeasureSettings, RuntimeFigures, measure_folder, measure_pair
from edgekit.deployment.resolve import Resolved, build_options, lut_for, resolve_target
from edgekit.elastic.ranking import Ranking
from edgekit.elastic.source import Source
from edgekit.engines.base import trial_options
from edgekit.errors import UsageError

MAX_STEP_DOWNS = 3
MAX_STEP_UPS = 2
Step = Callable[[str], AbstractContextManager[Any]]  # step(label): shows progress while the block runs


@dataclass
class DeployRequest:
    target: str
    budget: Budget
    runtime: str | None = None
    precision: str | None = None
    elastic: str | None = None  # elastic checkpoint folder or shipped name
    plan: str | None = None  # a plan instead (stage-1 weights only)
    model: str | None = None  # neither given: this model's shipped checkpoint (else plan); default model
    out: Path | None = None
    prompt_len: int = 128
    gen_len: int = 128
    metric: str = "auto"  # auto: chat_ppl where the source predicts it for every shape, else ppl
    dev_text: Path | None = None
    floor: float = FLOOR  # refuse a shape more than this many times worse than the full model on the metric
    allow_degraded: bool = False  # ship it anyway, with a warning
    verify: bool | None = None  # None: measure when the target is this machine
    force: bool = False
    options: dict[str, str] = field(default_factory=dict)  # runtime build options (--option key=value)
    draft: str | None = None  # a smaller shape to draft for the shipped one (edgekit.deployment.speculation)
    k: int = 4  # tokens drafted per verifier pass
    settings: MeasureSettings = field(default_factory=lambda: MeasureSettings(runs=5, warmup=2, prompt_lens=()))


@dataclass
class Choice:
    """What deploy decided before building anything: where, from what, predicted with which LUT, and every
    candidate with its figures, best first."""

    request: DeployRequest
    resolved: Resolved
    source: Source
    lut: Lut
    budget: Budget  # the request's budget resolved on this target
    ranking: Ranking
    rows: list[Candidate]
    options: dict[str, str]  # runtime build options
    notes: list[str]
    search: dict[str, Any] = field(default_factory=dict)  # shapes searched, frontier size, seconds
    # what the quality floor is held on, when not the ranking: chat_ppl measured on a domain checkpoint
    floor_on: list[Ranking] = field(default_factory=list)

    @property
    def floor_rankings(self) -> list[Ranking]:
        return self.floor_on or [self.ranking]

    @property
    def fitting(self) -> list[Candidate]:
        return [r for r in self.rows if r.fits]

    @property
    def full_predicted_ms(self) -> float:
        return self.lut.predict(self.source.plan.full, self.request.prompt_len).decode_ms

    def out(self, shape: str) -> Path:
        """Where the deployment goes: --out, else a folder named by target, runtime, precision and shape."""
        from edgekit.paths import home

        r = self.resolved
        return self.request.out or home() / "deployments" / f"{r.target_name}-{r.runtime}-{r.precision}-{shape}"


@dataclass
class Attempt:
    """One shape cut, compiled and (on this machine) measured."""

    candidate: Candidate
    hf_dir: Path
    compiled: Path
    build: dict[str, Any]
    figures: RuntimeFigures | None
    timings: dict[str, float]
    miss: str | None = None  # which budget terms the measurement broke
    # a relative budget's full model measured again right after this shape (the mean of that and the measurement
    # before it): judged on the ratio of two neighbouring measurements, the host's drift cancels
    reference_ms: float | None = None
    check: Budget | None = None  # the budget this attempt was held to (resolved on reference_ms when set)


@dataclass
class Deployment:
    path: Path
    manifest: DeploymentManifest
    candidates: list[Candidate]
    notes: list[str]

    @property
    def shape(self) -> str:
        return self.manifest.shape.name


@dataclass
class DryRun:
    """The shape deploy would cut and every step it would run, with nothing extracted or written."""

    out: Path
    shape: str
    target: TargetRecord
    runtime: RuntimeRecord
    budget: BudgetRecord
    lut: LutRecord
    accuracy: AccuracyRecord
    predicted: Predicted
    steps: list[str]
    candidates: list[Candidate]
    notes: list[str]
    search: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": True, **asdict(self), "out": str(self.out)}


def choose(req: DeployRequest, step: Step | None = None) -> Choice:
    """Resolve the target, the source and the LUT, rank the shapes and predict each; refuse an infeasible
    budget. Nothing is built."""
    step = step or (lambda _label: contextlib.nullcontext())
    res = resolve_target(req.target, req.runtime, req.precision)
    source = Source.resolve(req.elastic, req.plan, req.model)
    check_runtime_loads(source, res.runtime)
    notes = list(res.notes)
    lut, lut_note = lut_for(res, source.plan.model.name)
    if lut_note:
        notes.append(lut_note)
    budget = req.budget.resolve(lut.predict(source.plan.full, req.prompt_len).decode_ms)
    metric = req.metric
    if metric == "auto":
        metric = "ppl" if req.dev_text is not None else source.default_metric()
    shapes = source.shapes(metric, req.dev_text)
    with step("ranking shapes" if req.dev_text is None else f"fitting an accuracy predictor on {req.dev_text.name}"):
        ranking = source.ranking(shapes, metric, req.dev_text)
    notes.append(f"accuracy: {ranking.note}")
    floor_on = chat_floor(source, ranking, shapes)
    if floor_on:
        notes.append(f"quality floor held on {floor_on[0].note}: every deployment is a chat model")
    start = time.perf_counter()
    rows = candidates(lut, shapes, ranking, budget, req.prompt_len)
    search = {"shapes": len(rows), "space": len(source.plan.space()), "frontier": sum(r.frontier for r in rows),
              "seconds": round(time.perf_counter() - start, 3)}  # fmt: skip
    if not any(r.fits for r in rows):
        fastest = min(rows, key=lambda r: r.decode_ms)
        if not measured_here_first(req, res, lut) or budget.violations(0.0, fastest.memory_mb, fastest.ttft_ms):
            raise infeasible(rows, budget, lut)
        # a share of the full model's latency judged on an estimated LUT is a guess that deploy is about to
        # replace by measuring: try the fastest shape rather than refuse on the estimate
        fastest.fits, fastest.why_not = True, None
        notes.append(f"no shape is predicted to fit {budget.describe()} on this estimated LUT; {fastest.shape}, "
                     f"the fastest ({fastest.decode_ms:.2f} ms/token predicted), is measured to find out")  # fmt: skip
    options = {**build_options(res), **searched_options(lut), **req.options}
    if searched_options(lut):
        notes.append(f"build options {searched_options(lut)} from the LUT's search on this host (--option overrides)")
    return Choice(req, res, source, lut, budget, ranking, rows, options, notes, search, floor_on)


def chat_floor(source: Source, ranking: Ranking, shapes: list[Any]) -> list[Ranking]:
    """The chat_ppl the quality floor is held on when deploy ranks by another metric and the checkpoint's table
    measured chat_ppl on every shape ranked (a domain checkpoint: ranked by its domain's perplexity, shipped
    as a chat model all the same, and the floor's 3x was found on chat_ppl); [] otherwise (the ranking's)."""
    from edgekit.elastic.ranking import from_table

    if ranking.metric == "chat_ppl" or not source.accuracy:
        return []
    chat = from_table(source.accuracy, "chat_ppl")
    return [chat] if chat.scores and all(s.name in chat.scores for s in shapes) else []


def measured_here_first(req: DeployRequest, res: Resolved, lut: Lut) -> bool:
    """Whether deploy will measure the full model here before judging a relative budget (see deploy())."""
    verify = res.is_host if req.verify is None else req.verify
    return bool(verify and res.is_host and req.budget.relative is not None and lut.status != MEASURED)


def searched_options(lut: Lut) -> dict[str, str]:
    """The build options a measured LUT's search found fastest at equal quality (its latencies hold for them)."""
    if lut.status != MEASURED or not lut.provenance.get("option_search"):
        return {}
    return dict(lut.provenance["option_search"]["winner"])


def check_runtime_loads(source: Source, runtime: str) -> None:
    """Refuse a runtime that cannot skip the blocks a module-granular checkpoint dropped: it would load the
    zeroed blocks and spend a whole layer's time on each."""
    from edgekit.elastic.skip import RUNTIMES

    skips = source.plan.depth.skips
    if skips and runtime not in RUNTIMES:
        example = next(iter(v for v in skips.values() if v), [])[:2]
        raise UsageError(
            f"{source.label} drops attention or MLP blocks inside layers (e.g. {', '.join(example)}), which "
            f"{runtime} cannot skip (it loads whole standard layers only); deploy it with --runtime "
            f"{' or '.join(RUNTIMES)}, or trim with trim.granularity=layer for every runtime"
        )


def dry_run(req: DeployRequest, step: Step | None = None) -> DryRun:
    from edgekit.engines import get_engine

    choice = choose(req, step)
    chosen = next_candidate(choice.fitting, set(), choice.budget, 1.0)
    if chosen is None:  # choose() refuses a budget nothing fits
        raise UsageError("no shape fits the budget")
    hold_to_floor(choice, chosen)
    res = choice.resolved
    shape = choice.source.shape(chosen.shape)
    out = choice.out(chosen.shape)
    with tempfile.TemporaryDirectory(prefix="edgekit-dry-run-") as tmp:
        # the engine reads the subnet's config and chat template; the weights are not needed to plan
        hf_dir, compiled = Path(tmp) / "hf", Path(tmp) / MODEL_DIR
        planned_subnet(choice.source, shape, hf_dir)
        engine = get_engine(res.runtime)
        commands = engine.describe(hf_dir, compiled, res.precision, res.device, choice.options)
        commands = [line.replace(tmp, "<tmp>") for line in commands]
    merging = " (merging its SMOL mix)" if choice.source.checkpoint else ""
    steps = [f"extract {chosen.shape} from {choice.source.label}{merging} -> <tmp>/hf", *commands]
    from edgekit.deployment.speculation import MAX_TRIES, check_request, resolve_auto

    resolve_auto(choice)  # --draft auto becomes a shape, or no draft
    if req.draft is not None:
        check_request(res.runtime, res.is_host if req.verify is None else req.verify, choice.source, req.draft, req.k)
        steps.append(f"build the draft {req.draft} the same way; measure up to {MAX_TRIES} better shapes, then "
                     f"{chosen.shape}, alone and with the draft (k={req.k}) on the checkpoint's chat prompts; ship "
                     "the best pair within the budget, else the shape alone")  # fmt: skip
    steps.append(f"write {out}")
    return DryRun(
        out, chosen.shape, target_record(res), RuntimeRecord(res.runtime, res.precision, res.device,
        build={"options": choice.options}), budget_record(choice, choice.budget), lut_record(choice.lut),
        accuracy_record(choice, chosen), predicted(chosen), steps, choice.rows, choice.notes, choice.search,
    )  # fmt: skip


def deploy(req: DeployRequest, step: Step | None = None) -> Deployment:
    """Run the whole deploy; `step(label)` is a context manager that shows progress (optional)."""
    from edgekit.engines import get_engine

    step = step or (lambda _label: contextlib.nullcontext())
    if req.out is not None and req.out.exists() and not req.force:
        raise UsageError(f"{req.out} exists; pass --force to replace it")
    if req.out is not None:
        check_writable(req.out)
    choice = choose(req, step)
    first = next_candidate(choice.fitting, set(), choice.budget, 1.0)
    if first is not None:
        hold_to_floor(choice, first)  # before anything is built: the best that fits is already too weak
    res = choice.resolved
    engine = get_engine(res.runtime)
    engine.check()
    verify = res.is_host if req.verify is None else req.verify
    if verify and not res.is_host:
        raise UsageError(f"cannot measure on {res.target_name} from this machine; drop --verify")
    from edgekit.deployment.speculation import check_request, resolve_auto

    resolve_auto(choice)  # --draft auto becomes a shape, or no draft
    if req.draft is not None:
        check_request(res.runtime, verify, choice.source, req.draft, req.k)
    # every try is measured on the cheapest build of the same graph; only the shape shipped gets the real one
    trial = trial_options(engine, res.precision, choice.options) if verify else None
    # the scratch space (an extract and a build per try) sits where the deployment goes: one place to sweep
    # after a kill, on the disk the result needs; --out is locked for the whole run, not only the final rename
    where = req.out or choice.out("x")
    check_free_space(where.parent, scratch_bytes(choice), "deploy's scratch space (an extracted shape and its builds)")
    with destination_lock(where) if req.out else contextlib.nullcontext(), work_dir(where.parent, "deploy") as tmp:
        check, full_measured = choice.budget, None
        full_runs: list[float] = []  # the full model's measurements so far, in order (relative budgets)

        built: dict[str, Attempt] = {}

        def build(candidate: Candidate) -> Attempt:
            if candidate.shape in built:  # a draft's verifier may be a shape a step already built and measured
                return built[candidate.shape]
            attempt = built[candidate.shape] = build_attempt(choice, candidate, Path(tmp), verify, step, trial)
            if full_measured is not None and attempt.figures is not None and candidate.shape != full.shape:
                # a relative budget is a ratio: timed in alternating runs with the full model in one process
                with step(f"timing {candidate.shape} and the full model in turn"):
                    mine, beside = measure_pair(res.runtime, attempt.compiled, full_measured.compiled, res.device,
                                                req.settings)  # fmt: skip
                # the full model's latency at the speed the candidate was measured alone: the check is the ratio
                attempt.reference_ms = attempt.figures.decode_ms * beside / mine
                attempt.check = req.budget.resolve(attempt.reference_ms)
                full_runs.append(beside)
            return attempt

        full = next(r for r in choice.rows if r.shape == choice.source.plan.full.name)
        if measured_here_first(req, res, choice.lut):
            # "60%" means 60 % of the full model's latency on this machine; an estimated LUT can be off by
            # 2x here, and a budget resolved from it would hold every shape to the wrong number
            full_measured, check = measure_full_model(choice, build)
            full_runs.append(full_measured.figures.decode_ms)
        final, stepped = step_down(choice, build, check, full_measured)
        final, ups = step_up(choice, build, check, final, {s["shape"] for s in stepped})
        if first is None or final.candidate.shape != first.shape:
            # a step down can cross the floor: then name a budget from what was measured, not predicted
            predicted = {r.shape: r.decode_ms for r in choice.rows}
            slow = max([s["measured_decode_ms"] / predicted[s["shape"]] for s in stepped if s["shape"] in predicted],
                       default=1.0)  # fmt: skip
            full_ms = full_measured.figures.decode_ms if full_measured and full_measured.figures else None
            hold_to_floor(choice, final.candidate, slow, full_ms, [s["shape"] for s in stepped])
        spec = None
        if req.draft is not None:
            from edgekit.deployment.speculation import speculate

            spec = speculate(choice, build, final, Path(tmp), step, trial)
            final = spec.final
        if trial is not None:
            final = final_build(choice, final, Path(tmp), step, spec.verifier_options if spec and spec.draft else None)
        if spec is not None:
            finish_speculation(choice, spec, final, Path(tmp), step, trial is not None)
        artifact = None
        if verify:
            with step(f"measuring the {res.precision} artifact's quality"):
                artifact = artifact_quality(choice, final)
        if full_measured is not None:
            choice.notes.append(
                f"the full model measured {len(full_runs)} times, once beside each shape tried "
                f"({', '.join(f'{x:.2f}' for x in full_runs)} ms/token, the later ones in runs alternating with "
                f"the shape's): each shape was held to {100 * req.budget.relative:.3g}% of the full model timed "
                "beside it"
            )
        extend = None
        if spec is not None and spec.draft is not None:

            def extend(folder: Path, manifest: DeploymentManifest) -> None:
                from edgekit.deployment.speculation import DRAFT_DIR

                shutil.copytree(spec.draft.compiled, folder / DRAFT_DIR)
                manifest.speculation = spec.record()

        return write_deployment(choice, final, final.check or check, stepped, full_measured, ups, artifact, extend)


def finish_speculation(choice: Choice, spec: Any, final: Attempt, work: Path, step: Step, rebuilt: bool) -> None:
    """The shipped pair on its final builds: the draft built with calibrated weights too, and the pair measured
    again (how much of a draft is kept depends on the weights)."""
    from edgekit.deployment.speculation import measure_pair, prompt_ids

    spec.final = final
    if spec.draft is None:
        return
    mine = [t for t in spec.tries if t.verifier == final.candidate.shape]
    spec.shipped = mine[-1]
    if not rebuilt:
        return
    from edgekit.speculative.slice import is_slice

    if not is_slice(spec.draft.compiled):  # a slice runs on whichever weights its verifier's build holds
        spec.draft = final_build(choice, spec.draft, work, step)
    res, req, draft = choice.resolved, choice.request, spec.draft.candidate.shape
    with step(f"measuring the shipped {final.candidate.shape} with draft {draft} (calibrated weights)"):
        spec.shipped = measure_pair(res.runtime, final.compiled, spec.draft.compiled, res.device, req.k,
                                    prompt_ids(choice.source), (final.candidate.shape, draft),
                                    baseline=spec.baseline if spec.verifier_options else None)  # fmt: skip
    if not spec.shipped.identical:
        # the calibrated weights met a near-tie where a chunk pass and a one-token pass round differently
        choice.notes.append(f"speculation on the calibrated builds changed a greedy reply of {final.candidate.shape}; "
                            "shipped without the draft")  # fmt: skip
        spec.draft = None
        return
    choice.notes.append(f"shipped with its draft: {spec.shipped.describe()} (calibrated builds)")


def scratch_bytes(choice: Choice) -> int:
    """What a deploy writes before it is done: the largest extract is the base model's weights again, in fp32
    (twice a 16-bit checkpoint), and each build is a fraction of that."""
    weights = choice.source.base_folder().glob("*.safetensors")
    return 2 * sum(p.stat().st_size for p in weights)


def build_attempt(
    choice: Choice, candidate: Candidate, work: Path, verify: bool, step: Step, options: dict[str, str] | None = None
) -> Attempt:
    """Cut, compile (with `options`, else the choice's) and (when `verify`) measure one candidate in a fresh
    folder under `work`."""
    from edgekit.engines import get_engine

    res, source = choice.resolved, choice.source
    shape = source.shape(candidate.shape)
    hf_dir, compiled = work / f"hf-{shape.name}", work / f"model-{shape.name}"
    timings: dict[str, float] = {}
    start = time.perf_counter()
    with step(f"extracting {shape.name}" + (" (merging its SMOL mix)" if source.checkpoint else "")):
        source.extract(shape, hf_dir)
    timings["extract_s"] = round(time.perf_counter() - start, 2)
    compiled.mkdir()
    start = time.perf_counter()
    trial = options is not None
    with step(f"compiling for {res.runtime} {res.precision} on {res.device}" + (" (to measure)" if trial else "")):
        built = get_engine(res.runtime).compile(hf_dir, compiled, res.precision, res.device, options or choice.options)
    timings["compile_s"] = round(time.perf_counter() - start, 2)
    figures = None
    start = time.perf_counter()
    if verify:
        with step(f"measuring {shape.name} on this machine"):
            figures = measure_folder(res.runtime, compiled, res.device, choice.request.settings)
    timings["verify_s"] = round(time.perf_counter() - start, 2)
    return Attempt(candidate, hf_dir, compiled, built, figures, timings)


def final_build(
    choice: Choice, trial: Attempt, work: Path, step: Step, options: dict[str, str] | None = None
) -> Attempt:
    """The shipped shape built for real (its calibrated weights) in place of the trial build it was measured on:
    the same graph, so the same speed. `options` replace the choice's (a speculative verifier's)."""
    from edgekit.engines import get_engine

    res = choice.resolved
    engine = get_engine(res.runtime)
    compiled = work / f"final-{trial.candidate.shape}"
    compiled.mkdir()
    start = time.perf_counter()
    with step(f"building {trial.candidate.shape} for {res.runtime} {res.precision} (calibrated weights)"):
        built = engine.compile(trial.hf_dir, compiled, res.precision, res.device, options or choice.options)
    why = "the same graph with its weights rounded to nearest: latency does not depend on weight values"
    built["measured_on"] = {"options": trial_options(engine, res.precision, choice.options), "why": why}
    timings = {**trial.timings, "final_compile_s": round(time.perf_counter() - start, 2)}
    return Attempt(trial.candidate, trial.hf_dir, compiled, built, trial.figures, timings, trial.miss,
                   trial.reference_ms, trial.check)  # fmt: skip


def measure_full_model(choice: Choice, build: Callable[[Candidate], Attempt]) -> tuple[Attempt, Budget]:
    """Build and measure the full model here, and the request's relative budget resolved against it."""
    full_row = next(r for r in choice.rows if r.shape == choice.source.plan.full.name)
    attempt = build(full_row)
    if attempt.figures is None:  # build() measures whenever this is called
        raise UsageError("the full model could not be measured on this machine")
    measured = attempt.figures.decode_ms
    check = choice.request.budget.resolve(measured)
    choice.notes.append(
        f"the LUT is estimated: measured the full model here, {measured:.2f} ms/token "
        f"({measured / choice.full_predicted_ms:.2f}x its prediction), so the budget is "
        f"{check.ms_per_token:.3g} ms/token"
    )
    return attempt, check


def step_down(
    choice: Choice, build: Callable[[Candidate], Attempt], check: Budget, full_measured: Attempt | None
) -> tuple[Attempt, list[dict[str, Any]]]:
    """Build the best candidate; while a measurement misses `check`, try the next best that should fit at the
    slowdown seen so far. Returns the attempt to ship and the shapes stepped down from."""
    slowdown = 1.0  # measured / predicted of the shapes that missed: the machine is slower than its LUT
    if full_measured is not None and full_measured.figures is not None:
        slowdown = full_measured.figures.decode_ms / choice.full_predicted_ms
    attempts: list[Attempt] = []
    stepped: list[dict[str, Any]] = []
    for _ in range(MAX_STEP_DOWNS + 1):
        chosen = next_candidate(choice.fitting, {a.candidate.shape for a in attempts}, check, slowdown)
        if chosen is None:
            break
        reuse = full_measured is not None and chosen.shape == full_measured.candidate.shape
        attempt = full_measured if reuse and full_measured is not None else build(chosen)
        attempt.miss = misses(attempt.figures, attempt.check or check) if attempt.figures else None
        attempts.append(attempt)
        if attempt.miss is None or attempt.figures is None:
            break
        slowdown = max(slowdown, attempt.figures.decode_ms / chosen.decode_ms)
        stepped.append({"shape": chosen.shape, "measured_decode_ms": attempt.figures.decode_ms, "why": attempt.miss})
        choice.notes.append(f"{chosen.shape} missed the budget ({attempt.miss}); stepping down")
    final = attempts[-1]
    if final.miss:
        # every try missed: keep the one that came closest, and say so
        final = min(attempts, key=lambda a: a.figures.decode_ms if a.figures else float("inf"))
        stepped = [s for s in stepped if s["shape"] != final.candidate.shape]
        choice.notes.append(
            f"no shape met the budget when measured on this machine; kept the fastest measured, "
            f"{final.candidate.shape} ({final.miss})"
        )
    return final, stepped


def step_up(
    choice: Choice, build: Callable[[Candidate], Attempt], check: Budget, current: Attempt, tried: set[str]
) -> tuple[Attempt, list[dict[str, Any]]]:
    """While the shape to ship measured well under the latency budget, try the best one ranked above it that
    should fit at the speed measured (bounded tries): the LUT's error then leaves no accuracy on the table.
    A try that misses is dropped, and the last shape that met the budget is kept."""
    ups: list[dict[str, Any]] = []
    tried = tried | {current.candidate.shape}
    for _ in range(MAX_STEP_UPS):
        limit = (current.check or check).ms_per_token
        if limit is None or current.figures is None or current.miss is not None:
            break
        if current.figures.decode_ms > STEP_UP_BELOW * limit:
            break
        speedup = current.figures.decode_ms / current.candidate.decode_ms
        better = step_up_candidate(choice.rows, current.candidate, tried, check, speedup)
        if better is None:
            break
        tried.add(better.shape)
        attempt = build(better)
        attempt.miss = misses(attempt.figures, attempt.check or check) if attempt.figures else None
        measured = attempt.figures.decode_ms if attempt.figures else None
        ups.append({"from": current.candidate.shape, "shape": better.shape, "predicted_decode_ms": better.decode_ms,
                    "measured_decode_ms": measured, "kept": attempt.miss is None, "why": attempt.miss})  # fmt: skip
        if attempt.miss is not None:
            choice.notes.append(f"stepped up to {better.shape}, which missed ({attempt.miss}); kept "
                                f"{current.candidate.shape}")  # fmt: skip
            break
        choice.notes.append(
            f"{current.candidate.shape} measured {current.figures.decode_ms:.2f} ms/token, "
            f"{current.figures.decode_ms / limit:.0%} of the budget ({speedup:.2f}x its prediction): stepped up "
            f"to {better.shape} ({measured:.2f} ms/token measured)"
        )
        current = attempt
    return current, ups


def write_deployment(
    choice: Choice,
    final: Attempt,
    check: Budget,
    stepped: list[dict[str, Any]],
    full_measured: Attempt | None,
    stepped_up: list[dict[str, Any]] | None = None,
    artifact: dict[str, Any] | None = None,
    extend: Callable[[Path, DeploymentManifest], None] | None = None,
) -> Deployment:
    """The deployment folder (compiled model, README, manifest with every file's hash), written atomically;
    `extend(folder, manifest)` adds files and manifest fields before anything is hashed."""
    from edgekit.engines import get_engine
    from edgekit.hardware.host import machine_record

    res, source, chosen = choice.resolved, choice.source, final.candidate
    out = choice.out(chosen.shape)
    budget = budget_record(choice, check)
    if full_measured is not None and full_measured.figures is not None:
        budget.full_model_measured = {
            "decode_ms": round(full_measured.figures.decode_ms, 3),
            "predicted_decode_ms": round(choice.full_predicted_ms, 3),
            "seconds": round(sum(full_measured.timings.values()), 2),
        }
        if final.reference_ms is not None:  # the shipped shape was judged against the measurements beside it
            budget.full_model_measured["beside_shipped_ms"] = round(final.reference_ms, 3)
    ckpt = source.checkpoint
    manifest = DeploymentManifest(
        model=asdict(source.plan.model),
        plan={"name": source.plan.name, "permutations_sha256": source.plan.permutations_sha256},
        elastic={"name": ckpt.name, "smol_sha256": ckpt.manifest["files"]["smol.safetensors"]["sha256"]}
        if ckpt
        else None,
        shape=subnet_record(final.hf_dir),
        runtime=RuntimeRecord(res.runtime, res.precision, res.device, get_engine(res.runtime).versions(), final.build),
        target=target_record(res),
        lut=lut_record(choice.lut),
        budget=budget,
        predicted=predicted(chosen),
        accuracy=accuracy_record(choice, chosen, artifact),
        candidates=choice.rows,
        measured=final.figures,
        measured_on=machine_record() if final.figures else None,
        stepped_down_from=stepped,
        stepped_up=stepped_up or [],
        search=choice.search,
        timings=final.timings,
    )
    # our own default folder is replaced by a new deploy of the same shape; a user's needs --force
    req = choice.request
    with atomic_dir(out, replace=req.force or req.out is None) as tmp:
        shutil.copytree(final.compiled, tmp / MODEL_DIR, dirs_exist_ok=True)
        if extend is not None:
            extend(tmp, manifest)
        (tmp / "README.md").write_text(manifest.readme(out))
        manifest.files = hash_tree(tmp)
        write_manifest(tmp / MANIFEST, manifest.to_dict())
    return Deployment(out, manifest, choice.rows, choice.notes)


def planned_subnet(source: Source, shape: Any, folder: Path) -> None:
    """The config and tokenizer files a cut of `shape` would have, without its weights."""
    import json

    from edgekit.elastic.extract import subnet_config
    from edgekit.elastic.skip import subnet_skips
    from edgekit.models.weights import TOKENIZER_FILES, read_config

    base = source.base_folder()
    plan = source.plan
    folder.mkdir(parents=True)
    layers = plan.layer_sets[shape.depth]
    skip = subnet_skips(layers, plan.skips_at(shape.depth))
    config = subnet_config(read_config(base), plan.geometry, shape, layers, skip)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for name in TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copy2(base / name, folder / name)


# ------------------------------------------------------------------- manifest sections


def target_record(res: Resolved) -> TargetRecord:
    return TargetRecord(res.target_name, res.title, res.kind, res.is_host)


def lut_record(lut: Lut) -> LutRecord:
    return LutRecord(lut.key, lut.status, lut.created)


def budget_record(choice: Choice, resolved: Budget) -> BudgetRecord:
    req = choice.request
    return BudgetRecord(req.budget.text, resolved, req.prompt_len, req.gen_len)


def predicted(c: Candidate) -> Predicted:
    return Predicted(round(c.decode_ms, 3), round(c.ttft_ms, 1), round(c.memory_mb, 1))


def accuracy_record(choice: Choice, c: Candidate, artifact: dict[str, Any] | None = None) -> AccuracyRecord:
    ranking, full, floor = choice.ranking, choice.source.plan.full.name, choice.request.floor
    ratio = quality_ratio(ranking, c.shape, full)
    held = {g.metric: round(x, 4) for g in choice.floor_rankings if (x := quality_ratio(g, c.shape, full)) is not None}
    return AccuracyRecord(
        ranking.source, ranking.metric, c.score, ranking.note, ranking.scores.get(full),
        None if ratio is None else round(ratio, 4), floor,
        degraded=any(x > floor for x in held.values()), artifact=artifact,
        floor_on=held if choice.floor_on else None,
    )  # fmt: skip


ARTIFACT_PROMPTS = 16  # reference replies the deployed artifact is scored on (a few seconds)


def artifact_quality(choice: Choice, final: Attempt) -> dict[str, Any] | None:
    """chat_ppl of the compiled artifact through its own runtime, and of the fp32 subnet it was built from, on
    the source's stored chat reference: what the quantized build costs this shape. None when the source has
    no reference or the runtime gives no logits."""
    from edgekit.engines import get_engine
    from edgekit.engines.torch_engine import TorchSession
    from edgekit.evaluation.chat import chat_ppl

    ref = choice.source.chat_reference()
    if ref is None:
        return None
    res = choice.resolved
    session = get_engine(res.runtime).open(final.compiled, res.device)
    if not hasattr(session, "sequence_logits"):
        choice.notes.append(f"{res.runtime} gives no logits: the artifact's chat_ppl is not measured")
        return None
    from transformers import AutoModelForCausalLM

    ref = ref.head(ARTIFACT_PROMPTS)
    start = time.perf_counter()
    built = chat_ppl(session.sequence_logits, ref)
    fp32 = chat_ppl(TorchSession(AutoModelForCausalLM.from_pretrained(final.hf_dir).eval()).sequence_logits, ref)
    return {"metric": "chat_ppl", "prompts": len(ref.prompts), "runtime": f"{res.runtime} {res.precision}",
            "value": round(built, 4), "fp32": round(fp32, 4), "ratio": round(built / fp32, 4),
            "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


def hold_to_floor(
    choice: Choice, c: Candidate, slowdown: float = 1.0, full_ms: float | None = None, missed: list[str] | None = None
) -> None:
    """Refuse a shape below the quality floor (or, with --allow-degraded, say so in the notes)."""
    req = choice.request
    why = below_floor(choice.floor_rankings, choice.rows, c.shape, choice.source.plan.full.name, req.floor,
                      full_ms or choice.full_predicted_ms * slowdown, slowdown, missed)  # fmt: skip
    if why is None:
        return
    if not req.allow_degraded:
        raise UsageError(f"{why}; or pass --allow-degraded to ship it anyway")
    choice.notes.append(f"warning: {why}; shipped because of --allow-degraded")
