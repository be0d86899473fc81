"""`edgekit deploy`: pick the best shape a target can afford under a budget, cut it, compile it for
the target's runtime, measure it when the target is this machine, and write a deployment folder.

    resolve target and runtime -> LUT (measured, else estimated) -> candidates (predicted latency,
    memory, expected accuracy) -> best that fits -> extract (SMOL merged) -> compile -> verify
    (host only; step down to the next shape if the budget is missed) -> deployment folder
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit import __version__
from edgekit.artifacts import atomic_dir, hash_tree, read_format_json, verify_files, write_json_atomic
from edgekit.deployment.budget import Budget
from edgekit.deployment.lut import ACHIEVABLE_FRACTION, MEASURED, Lut, estimate, find_lut, host_target_name
from edgekit.deployment.measure import MeasureSettings, RuntimeFigures, measure_folder
from edgekit.deployment.ranking import Ranking
from edgekit.deployment.targets import HOST, Target, get_target, match_host
from edgekit.elastic.plan import Plan
from edgekit.errors import MissingDependencyError, UsageError, first_line
from edgekit.shapes import Shape, parse_shape

FORMAT = "edgekit-deployment/1"
MANIFEST = "manifest.json"
MAX_STEP_DOWNS = 3


@dataclass
class Candidate:
    shape: str
    params: int  # non-embedding
    decode_ms: float  # predicted
    ttft_ms: float  # predicted, for the request's prompt length
    memory_mb: float  # predicted peak
    score: float  # the ranking metric
    fits: bool
    why_not: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DeployRequest:
    target: str
    budget: Budget
    runtime: str | None = None
    precision: str | None = None
    elastic: str | None = None  # elastic checkpoint folder or shipped name
    plan: str | None = None  # a plan instead (stage-1 weights only)
    model: str | None = None  # base model; picks its shipped checkpoint or plan when neither is given
    out: Path | None = None
    prompt_len: int = 128
    gen_len: int = 128
    metric: str = "ppl"
    dev_text: Path | None = None
    verify: bool | None = None  # None: measure when the target is this machine
    force: bool = False
    options: dict[str, str] = field(default_factory=dict)  # runtime build options (--option key=value)
    dry_run: bool = False  # choose and say what would run; extract, compile and write nothing
    settings: MeasureSettings = field(default_factory=lambda: MeasureSettings(runs=5, warmup=2, prompt_lens=()))


@dataclass
class Resolved:
    """What the request names, found and checked."""

    target: Target | None  # the descriptor (None for an unmatched host)
    target_name: str  # the LUT target: a descriptor's name, or host-<id>
    title: str
    kind: str
    is_host: bool
    runtime: str
    precision: str
    device: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Deployment:
    path: Path
    manifest: dict[str, Any]
    candidates: list[Candidate]
    notes: list[str]

    @property
    def shape(self) -> str:
        return self.manifest["shape"]["name"]


# ------------------------------------------------------------------- target, runtime, LUT


def resolve_target(name: str, runtime: str | None, precision: str | None) -> Resolved:
    from edgekit.engines import ENGINES
    from edgekit.hardware.host import detect_host

    host = detect_host()
    here = match_host(host)
    notes: list[str] = []
    if name.strip().lower() == HOST:
        target = here
        if target is None:
            target = get_target("host-cpu")
            notes.append("no descriptor matches this machine; using the generic CPU one")
        tname, title, is_host = host_target_name(host), f"this machine ({host.cpu.model})", True
    else:
        target = get_target(name)
        tname, title, is_host = target.name, target.title, here is not None and here.name == target.name
    options = target.runtimes if target else []
    if runtime:
        entry = next((r for r in options if r["runtime"] == runtime), None)
        if entry is None:
            device = "cuda" if target and target.kind in ("gpu", "jetson") else "cpu"
            entry = {"runtime": runtime, "device": device, "precision": precision}
    else:
        entry, skipped = _first_usable(options)
        if entry is None:
            why = "; ".join(skipped) or f"none listed; edgekit drives {', '.join(ENGINES)}"
            raise MissingDependencyError(f"target {tname} has no runtime usable here: {why}")
        if skipped:
            notes.append(f"runtime {entry['runtime']}: preferred on {tname} but not usable here: {'; '.join(skipped)}")
    from edgekit.engines import get_engine

    engine = get_engine(entry["runtime"])
    device = entry.get("device") or "cpu"
    if not engine.precisions(device):
        raise UsageError(f"runtime {engine.name} builds nothing for {device} ({title} has no GPU it drives)")
    prec = precision or entry.get("precision") or engine.precisions(device)[0]
    if prec not in engine.precisions(device):
        raise UsageError(f"runtime {engine.name} builds {', '.join(engine.precisions(device))} on {device}, not {prec}")
    kind = target.kind if target else host.kind
    return Resolved(target, tname, title, kind, is_host, engine.name, prec, device, notes)


def _first_usable(options: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[str]]:
    """The target's first listed runtime that is installed here (it compiles here), and why earlier ones are not."""
    from edgekit.engines import ENGINES, get_engine

    skipped = []
    for entry in options:
        if entry["runtime"] not in ENGINES:
            skipped.append(f"{entry['runtime']} is not built into edgekit")
            continue
        try:
            get_engine(entry["runtime"]).check()
        except MissingDependencyError as exc:
            skipped.append(first_line(exc).removeprefix(f"runtime '{entry['runtime']}': "))
            continue
        return entry, skipped
    return None, skipped


def lut_for(res: Resolved, model: str) -> tuple[Lut, str | None]:
    """The LUT to predict with, and a note when it is an estimate."""
    lut = find_lut(res.target_name, res.runtime, model, res.precision)
    if lut is not None and (lut.status == MEASURED or not res.is_host):
        note = None if lut.status == MEASURED else _estimated_note(lut, res)
        return lut, note
    source = _reference_lut(res, model)
    if source is None:
        raise UsageError(
            f"no latency LUT for {model} on {res.target_name} with {res.runtime} {res.precision}: "
            f"run `edgekit profile --target {HOST if res.is_host else res.target_name} --runtime {res.runtime}`"
        )
    if res.is_host:
        from edgekit.hardware.microbench import measure

        figures = measure("cuda" if res.device == "cuda" else "cpu")
        bw, flops = figures["memory_bandwidth"]["value"], figures["matmul"]["value"]
        # a host's own measured bandwidth is not a datasheet peak: undo the discount estimate() applies
        lut = estimate(
            source, res.target_name, res.kind, bw / ACHIEVABLE_FRACTION, flops, res.runtime, res.precision,
            res.device, "this machine has no measured LUT yet; scaled by its measured bandwidth",
        )  # fmt: skip
    else:
        assert res.target is not None
        bw = res.target.memory.get("bandwidth_gbs")
        tflops = res.target.compute.get("fp16_tensor_tflops") or res.target.compute.get("fp32_tflops")
        if not bw:
            raise UsageError(f"target {res.target_name} has no memory bandwidth to estimate a LUT from")
        lut = estimate(
            source, res.target_name, res.kind, bw, tflops * 1000 if tflops else None, res.runtime, res.precision,
            res.device, "no measured LUT for this device; scaled from published specs",
        )  # fmt: skip
    return lut, _estimated_note(lut, res)


def _estimated_note(lut: Lut, res: Resolved) -> str:
    src = lut.provenance.get("estimated_from", "?")
    how = f"edgekit profile --target {HOST if res.is_host else res.target_name} --runtime {res.runtime}"
    return f"latency is ESTIMATED (from {src}, scaled by bandwidth); measure it with `{how}`"


def _reference_lut(res: Resolved, model: str) -> Lut | None:
    """A measured LUT to scale from: same runtime and precision first, then any measured one."""
    from edgekit.deployment.lut import all_luts

    measured = [lut for _, lut, _ in all_luts() if lut.status == MEASURED and lut.model["name"] == model]
    measured.sort(key=lambda lut: (lut.runtime != res.runtime, lut.precision != res.precision))
    return measured[0] if measured else None


# ------------------------------------------------------------------- source: elastic checkpoint or plan


@dataclass
class Source:
    plan: Plan
    ckpt: Any | None  # ElasticCheckpoint
    label: str


def resolve_source(elastic: str | None = None, plan: str | None = None, model: str | None = None) -> Source:
    """What to cut subnets from: an elastic checkpoint, a plan, or a model's shipped checkpoint (else plan)."""
    from edgekit.elastic.checkpoint import list_checkpoints, load_checkpoint
    from edgekit.elastic.plan import load_plan, shipped_plans
    from edgekit.models.registry import DEFAULT_MODEL

    if elastic and plan:
        raise UsageError("give --elastic or --plan, not both")
    if elastic:
        ckpt = load_checkpoint(elastic)
        return Source(ckpt.plan, ckpt, f"elastic checkpoint {ckpt.name}")
    if plan:
        the_plan = load_plan(plan)
        return Source(the_plan, None, f"plan {the_plan.name} (stage 1, no fine-tuning)")
    model = model or DEFAULT_MODEL
    for folder, manifest, kind in list_checkpoints([]):
        if kind == "shipped" and manifest and manifest["model"]["name"] == model:
            ckpt = load_checkpoint(folder)
            return Source(ckpt.plan, ckpt, f"shipped elastic checkpoint {ckpt.name}")
    if model in shipped_plans():
        the_plan = load_plan(model)
        return Source(the_plan, None, f"shipped plan {the_plan.name} (stage 1, no fine-tuning)")
    raise UsageError(
        f"no elastic checkpoint or plan for model '{model}': make one with `edgekit elastic plan --model {model}` "
        "and pass it as --plan (or train it and pass --elastic)"
    )


def rank(source: Source, shapes: list[Shape], req: DeployRequest) -> Ranking:
    from edgekit.deployment.ranking import from_dev_text, from_params, from_table

    table = source.ckpt.accuracy if source.ckpt else None
    if table and req.dev_text is None:
        ranking = from_table(table, req.metric)
        if all(s.name in ranking.scores for s in shapes):
            return ranking
    if req.dev_text is not None:
        return from_dev_text(source.plan, shapes, req.dev_text)
    return from_params(source.plan, shapes)


def candidate_shapes(source: Source) -> list[Shape]:
    table = source.ckpt.accuracy if source.ckpt else None
    if table and table.get("shapes"):
        return [parse_shape(name) for name in table["shapes"]]
    return source.plan.grid()


# ------------------------------------------------------------------- choosing


def candidates(lut: Lut, shapes: list[Shape], ranking: Ranking, budget: Budget, prompt_len: int) -> list[Candidate]:
    """Every shape with its predicted figures and whether it fits, best expected accuracy first."""
    rows = []
    for shape in shapes:
        p = lut.predict(shape, prompt_len)
        why = budget.violations(p.decode_ms, p.memory_mb, p.ttft_ms)
        params = lut.geometry.non_embedding_params(shape)
        rows.append(
            Candidate(
                shape.name,
                params,
                p.decode_ms,
                p.ttft_ms,
                p.memory_mb,
                ranking.scores[shape.name],
                not why,
                "; ".join(why) or None,
            )  # fmt: skip
        )
    order = {name: i for i, name in enumerate(ranking.order([r.shape for r in rows]))}
    # equal scores (the params ranking has none, tables rarely): the faster shape first
    return sorted(rows, key=lambda r: (order[r.shape], r.decode_ms))


def infeasible(rows: list[Candidate], budget: Budget, lut: Lut) -> UsageError:
    fastest = min(rows, key=lambda r: r.decode_ms)
    smallest = min(rows, key=lambda r: r.memory_mb)
    label = "" if lut.status == MEASURED else " (estimated)"
    return UsageError(
        f"no shape fits the budget {budget.describe()}: the fastest, {fastest.shape}, is predicted at "
        f"{fastest.decode_ms:.2f} ms/token{label}, first token {fastest.ttft_ms:.0f} ms; the smallest takes "
        f"{smallest.memory_mb:.0f} MB"
    )


def _misses(figures: RuntimeFigures, budget: Budget) -> str | None:
    why = budget.violations(figures.decode_ms, figures.peak_rss_mb)
    return "; ".join(f"measured {w}" for w in why) or None


# ------------------------------------------------------------------- the whole job


def default_out(res: Resolved, shape: str) -> Path:
    from edgekit.paths import home

    return home() / "deployments" / f"{res.target_name}-{res.runtime}-{res.precision}-{shape}"


def deploy(req: DeployRequest, step: Callable[[str], Any] | None = None) -> Deployment:
    """Run the whole deploy; `step(label)` is a context manager that shows progress (optional)."""
    import contextlib

    step = step or (lambda _label: contextlib.nullcontext())
    from edgekit.engines import get_engine

    res = resolve_target(req.target, req.runtime, req.precision)
    source = resolve_source(req.elastic, req.plan, req.model)
    notes = list(res.notes)
    model_name = source.plan.model.name
    lut, lut_note = lut_for(res, model_name)
    if lut_note:
        notes.append(lut_note)
    full = lut.predict(source.plan.full, req.prompt_len).decode_ms
    budget = req.budget.resolve(full)
    shapes = candidate_shapes(source)
    with step("ranking shapes"):
        ranking = rank(source, shapes, req)
    notes.append(f"accuracy: {ranking.note}")
    rows = candidates(lut, shapes, ranking, budget, req.prompt_len)
    fitting = [r for r in rows if r.fits]
    if not fitting:
        raise infeasible(rows, budget, lut)
    if req.out is not None and req.out.exists() and not req.force and not req.dry_run:
        raise UsageError(f"{req.out} exists; pass --force to replace it")
    engine = get_engine(res.runtime)
    options = {**build_options(res), **req.options}
    if req.dry_run:
        return _dry_run(req, res, source, lut, budget, rows, ranking, notes, engine, options)
    engine.check()
    verify = res.is_host if req.verify is None else req.verify
    if verify and not res.is_host:
        raise UsageError(f"cannot measure on {res.target_name} from this machine; drop --verify")
    elastic = None
    stepped: list[dict[str, Any]] = []
    attempts: list[Attempt] = []
    slowdown = 1.0  # measured / predicted of the shapes that missed: the machine is slower than its LUT
    check = budget  # what a measurement on this machine is held to
    full_measured: Attempt | None = None
    with tempfile.TemporaryDirectory(prefix="edgekit-deploy-") as tmp:

        def build(candidate: Candidate) -> Attempt:
            nonlocal elastic
            shape = parse_shape(candidate.shape)
            hf_dir, compiled = Path(tmp) / f"hf-{shape.name}", Path(tmp) / f"model-{shape.name}"
            start = time.perf_counter()
            with step(f"extracting {shape.name}" + (" (merging its SMOL mix)" if source.ckpt else "")):
                elastic = _extract(source, shape, hf_dir, elastic)
            t_extract = time.perf_counter() - start
            compiled.mkdir()
            start = time.perf_counter()
            with step(f"compiling for {res.runtime} {res.precision} on {res.device}"):
                built = engine.compile(hf_dir, compiled, res.precision, res.device, options)
            t_compile = time.perf_counter() - start
            figures, t_verify = None, 0.0
            if verify:
                start = time.perf_counter()
                with step(f"measuring {shape.name} on this machine"):
                    figures = measure_folder(res.runtime, compiled, res.device, req.settings)
                t_verify = time.perf_counter() - start
            timings = {"extract_s": round(t_extract, 2), "compile_s": round(t_compile, 2),
                       "verify_s": round(t_verify, 2)}  # fmt: skip
            return Attempt(candidate, hf_dir, compiled, built, figures, None, timings)

        if verify and req.budget.relative is not None and lut.status != MEASURED:
            # "60%" means 60 % of the full model's latency on this machine; an estimated LUT can be off by
            # 2x here, and a budget resolved from it would hold every shape to the wrong number
            full_row = next(r for r in rows if r.shape == source.plan.full.name)
            full_measured = build(full_row)
            assert full_measured.figures is not None
            check = req.budget.resolve(full_measured.figures.decode_ms)
            slowdown = full_measured.figures.decode_ms / full
            notes.append(
                f"the LUT is estimated: measured the full model here, {full_measured.figures.decode_ms:.2f} "
                f"ms/token ({slowdown:.2f}x its prediction), so the budget is {check.ms_per_token:.3g} ms/token"
            )
        for _ in range(MAX_STEP_DOWNS + 1):
            chosen = _next_candidate(fitting, {a.candidate.shape for a in attempts}, check, slowdown)
            if chosen is None:
                break
            if full_measured is not None and chosen.shape == full_measured.candidate.shape:
                attempt = full_measured
            else:
                attempt = build(chosen)
            attempt.miss = _misses(attempt.figures, check) if attempt.figures else None
            attempts.append(attempt)
            if not attempt.miss:
                break
            assert attempt.figures is not None
            slowdown = max(slowdown, attempt.figures.decode_ms / chosen.decode_ms)
            stepped.append({"shape": chosen.shape, "measured_decode_ms": attempt.figures.decode_ms,
                            "why": attempt.miss})  # fmt: skip
            notes.append(f"{chosen.shape} missed the budget ({attempt.miss}); stepping down")
        final_attempt = attempts[-1]
        if final_attempt.miss:
            # every try missed: keep the one that came closest, and say so
            final_attempt = min(attempts, key=lambda a: a.figures.decode_ms if a.figures else float("inf"))
            stepped = [s for s in stepped if s["shape"] != final_attempt.candidate.shape]
            notes.append(
                f"no shape met the budget when measured on this machine; kept the fastest measured, "
                f"{final_attempt.candidate.shape} ({final_attempt.miss})"
            )
        chosen = final_attempt.candidate
        out = req.out or default_out(res, chosen.shape)
        manifest = _manifest(req, res, source, lut, check, chosen, rows, ranking, final_attempt.build,
                             final_attempt.figures, stepped, final_attempt.timings, engine.versions(),
                             final_attempt.hf_dir)  # fmt: skip
        if full_measured is not None and full_measured.figures is not None:
            manifest["budget"]["full_model_measured"] = {
                "decode_ms": round(full_measured.figures.decode_ms, 3),
                "predicted_decode_ms": round(full, 3),
                "seconds": round(sum(full_measured.timings.values()), 2),
            }
        # our own default folder is replaced by a new deploy of the same shape; a user's needs --force
        with atomic_dir(out, replace=req.force or req.out is None) as final:
            shutil.copytree(final_attempt.compiled, final / "model", dirs_exist_ok=True)
            (final / "README.md").write_text(_readme(manifest, out))
            manifest["files"] = hash_tree(final)
            write_json_atomic(final / MANIFEST, manifest)
    return Deployment(out, manifest, rows, notes)


def build_options(res: Resolved) -> dict[str, str]:
    """Compiling on a PC for a board: name the board's GPU architecture and CPU so nothing is detected."""
    if res.is_host or res.target is None or res.device != "cuda" or res.runtime not in ("mlc", "tvm"):
        return {}
    found = {}
    if arch := res.target.compute.get("cuda_arch"):
        found["arch"] = str(arch)
    if res.kind == "jetson":
        found["host"] = "aarch64"
    return found


def _dry_run(
    req: DeployRequest, res: Resolved, source: Source, lut: Lut, budget: Any, rows: list[Candidate],
    ranking: Ranking, notes: list[str], engine: Any, options: dict[str, str],
) -> Deployment:  # fmt: skip
    """The shape deploy would cut and the commands it would run, with nothing extracted or written."""
    fitting = [r for r in rows if r.fits]
    chosen = _next_candidate(fitting, set(), budget, 1.0)
    assert chosen is not None
    out = req.out or default_out(res, chosen.shape)
    with tempfile.TemporaryDirectory(prefix="edgekit-dry-run-") as tmp:
        # the engine reads the subnet's config and chat template; the weights are not needed to plan
        hf_dir, compiled = Path(tmp) / "hf", Path(tmp) / "model"
        _planned_subnet(source.plan, parse_shape(chosen.shape), hf_dir)
        commands = [line.replace(tmp, "<tmp>") for line in engine.describe(hf_dir, compiled, res.precision,
                                                                            res.device, options)]  # fmt: skip
    manifest = {
        "dry_run": True,
        "shape": {"name": chosen.shape},
        "target": {"name": res.target_name, "title": res.title, "kind": res.kind},
        "runtime": {"name": res.runtime, "precision": res.precision, "device": res.device, "options": options},
        "budget": budget.to_dict(),
        "lut": {"key": lut.key, "status": lut.status},
        "accuracy": {"metric": ranking.metric, "note": ranking.note},
        "predicted": {"decode_ms": chosen.decode_ms, "ttft_ms": chosen.ttft_ms, "memory_mb": chosen.memory_mb},
        "steps": [
            f"extract {chosen.shape} from {source.label}" + (" (merging its SMOL mix)" if source.ckpt else "")
            + " -> <tmp>/hf",
            *commands,
            f"write {out}",
        ],
        "measured": None,
    }  # fmt: skip
    return Deployment(out, manifest, rows, notes)


def _planned_subnet(plan: Plan, shape: Shape, folder: Path) -> None:
    """The config and tokenizer files a cut of `shape` would have, without its weights."""
    from edgekit.elastic.base_model import base_folder
    from edgekit.elastic.extract import subnet_config
    from edgekit.models.weights import TOKENIZER_FILES, read_config

    base = base_folder(plan)
    folder.mkdir(parents=True)
    config = subnet_config(read_config(base), plan.geometry, shape, plan.layer_sets[shape.depth])
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("generation_config.json", *TOKENIZER_FILES):
        if (base / name).is_file():
            shutil.copy2(base / name, folder / name)


@dataclass
class Attempt:
    candidate: Candidate
    hf_dir: Path
    compiled: Path
    build: dict[str, Any]
    figures: RuntimeFigures | None
    miss: str | None
    timings: dict[str, float]


def _next_candidate(fitting: list[Candidate], tried: set[str], budget: Budget, slowdown: float) -> Candidate | None:
    """The best remaining shape that still fits once its prediction is scaled by the slowdown seen so far;
    if none does, the fastest remaining one (it may still fit: predictions are not exact)."""
    left = [c for c in fitting if c.shape not in tried]
    if not left:
        return None
    limit = budget.ms_per_token
    ok = [c for c in left if limit is None or c.decode_ms * slowdown <= limit]
    return ok[0] if ok else min(left, key=lambda c: c.decode_ms)


def _extract(source: Source, shape: Shape, out: Path, elastic: Any) -> Any:
    from edgekit.elastic.base_model import base_folder
    from edgekit.elastic.extract import extract, extract_elastic
    from edgekit.elastic.plan import load_permutations

    base = base_folder(source.plan)
    if source.ckpt is None:
        extract(source.plan, load_permutations(source.plan), base, shape, out)
        return None
    if elastic is None:
        from edgekit.elastic.checkpoint import load_elastic_checkpoint

        elastic, _ = load_elastic_checkpoint(source.ckpt)
    extract_elastic(elastic, source.plan, base, shape, out, extra={"elastic_checkpoint": source.ckpt.name})
    return elastic


def _manifest(
    req: DeployRequest,
    res: Resolved,
    source: Source,
    lut: Lut,
    budget: Budget,
    chosen: Candidate,
    rows: list[Candidate],
    ranking: Ranking,
    build: dict[str, Any],
    figures: RuntimeFigures | None,
    stepped: list[dict[str, Any]],
    timings: dict[str, float],
    versions: dict[str, str],
    hf_dir: Path,
) -> dict[str, Any]:
    import datetime as dt

    subnet = json.loads((hf_dir / "edgekit-subnet.json").read_text())
    plan = source.plan
    return {
        "format": FORMAT,
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "edgekit_version": __version__,
        "model": asdict(plan.model),
        "plan": {"name": plan.name, "permutations_sha256": plan.permutations_sha256},
        "elastic": (
            {"name": source.ckpt.name, "smol_sha256": source.ckpt.manifest["files"]["smol.safetensors"]["sha256"]}
            if source.ckpt
            else None
        ),
        "shape": {"name": chosen.shape, **subnet["subnet"], "weights_sha256": subnet["files"]["model.safetensors"]},
        "runtime": {
            "name": res.runtime,
            "precision": res.precision,
            "device": res.device,
            "versions": versions,
            "build": build,
        },  # fmt: skip
        "target": {"name": res.target_name, "title": res.title, "kind": res.kind, "is_this_machine": res.is_host},
        "lut": {"key": lut.key, "status": lut.status, "created": lut.created},
        "budget": {
            "text": req.budget.text,
            "resolved": budget.to_dict(),
            "prompt_len": req.prompt_len,
            "gen_len": req.gen_len,
        },  # fmt: skip
        "predicted": {
            "decode_ms": round(chosen.decode_ms, 3),
            "ttft_ms": round(chosen.ttft_ms, 1),
            "memory_mb": round(chosen.memory_mb, 1),
        },  # fmt: skip
        "measured": figures.to_dict() if figures else None,
        "measured_on": _measured_on() if figures else None,
        "stepped_down_from": stepped,
        "accuracy": {"source": ranking.source, "metric": ranking.metric, "value": chosen.score, "note": ranking.note},
        "candidates": [r.to_dict() for r in rows],
        "timings": timings,
    }


def _measured_on() -> dict[str, Any]:
    """The machine the figures were measured on, with its power mode: on a Jetson a figure means little
    without the nvpmodel mode and clocks it was taken at."""
    from edgekit.hardware.host import detect_host, machine_record

    return machine_record(detect_host())


def _readme(manifest: dict[str, Any], out: Path) -> str:
    shape, rt = manifest["shape"]["name"], manifest["runtime"]
    measured = manifest["measured"]
    figure = (
        f"measured {measured['decode_ms']:.2f} ms/token"
        if measured
        else f"predicted {manifest['predicted']['decode_ms']:.2f} ms/token ({manifest['lut']['status']})"
    )
    return (
        f"# {manifest['model']['name']} {shape} for {manifest['target']['title']}\n\n"
        f"{rt['name']} {rt['precision']} on {rt['device']}, budget `{manifest['budget']['text']}`, {figure}.\n\n"
        f'Chat with it: `edgekit chat {out}` (one turn: `edgekit chat {out} --prompt "Hello"`)\n'
    )


# ------------------------------------------------------------------- reading a deployment back


def load_deployment(path: Path) -> dict[str, Any]:
    """The manifest of a deployment folder, after checking every file against its hash."""
    path = Path(path)
    what = f"deployment {path}"
    if not path.is_dir():
        raise UsageError(f"no deployment at {path}: run `edgekit deploy --target ... --out {path}`")
    manifest = read_format_json(path / MANIFEST, FORMAT, what, "; redeploy it with `edgekit deploy`")
    verify_files(path, manifest["files"], what)
    return manifest


def open_deployment(path: Path) -> tuple[dict[str, Any], Any, Any]:
    """(manifest, session, tokenizer) for a verified deployment."""
    from transformers import AutoTokenizer

    from edgekit.engines import get_engine

    manifest = load_deployment(path)
    rt = manifest["runtime"]
    session = get_engine(rt["name"]).open(Path(path) / "model", rt["device"])
    tokenizer = AutoTokenizer.from_pretrained(Path(path) / "model")
    return manifest, session, tokenizer


__all__ = ["deploy", "DeployRequest", "Deployment", "Candidate", "load_deployment", "open_deployment"]
