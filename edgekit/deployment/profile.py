"""`edgekit profile`: measure shapes of a plan on this machine in a real runtime and write a LUT.

Latency does not depend on weight values, so the subnets are cut from the plan's base weights
(the fast extraction path) whether or not an elastic checkpoint's SMOL mix would be merged later.
Each shape is extracted, compiled and measured in a fresh process, then thrown away; the predictor
is validated on the shapes it was not fitted on and refitted on all of them for use.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit import __version__
from edgekit.artifacts import utc_now, work_dir
from edgekit.deployment.latency import ShapeMeasurement, fit_predictor, validate
from edgekit.deployment.lut import MEASURED, Lut, user_dir
from edgekit.deployment.measure import MeasureSettings, measure_folder
from edgekit.elastic.plan import Plan
from edgekit.engines import get_engine
from edgekit.engines.base import folder_bytes, trial_options
from edgekit.shapes import Shape

STEADY_SPREAD_PCT = 10.0
RETRIES = 2


@dataclass(frozen=True)
class ProfileRequest:
    target: str  # the LUT's target name (host-<id> for this machine)
    runtime: str
    precision: str
    device: str
    shapes: list[Shape]
    fit_on: list[Shape]
    settings: MeasureSettings
    options: dict[str, str] | None = None  # runtime build options (e.g. accuracy_level=4)
    search: bool = False  # search the build options first (edgekit.deployment.option_search)
    tolerance: float = 0.02  # the search's quality tolerance: perplexity at most this much above the default's
    search_rounds: int = 3  # the search's interleaved timing rounds


def host_request(
    res: Any, plan: Plan, shapes: str | None, fit_on: str | None, quick: bool, settings: MeasureSettings,
    options: dict[str, str],
) -> ProfileRequest:  # fmt: skip
    """What to measure on this machine: the shapes (a grid string, default the plan's grid), the ones the
    predictor is fitted on (default: the corners and the middle), all of them or (quick) only those."""
    from edgekit.deployment.latency import fit_subset
    from edgekit.errors import UsageError

    grid = plan.grid(shapes) if shapes else plan.grid()
    fit = plan.grid(fit_on) if fit_on else fit_subset(grid)
    missing = [s.name for s in fit if s not in grid]
    if missing:
        raise UsageError(f"--fit-on shapes {', '.join(missing)} are not among the measured shapes")
    return ProfileRequest(res.target_name, res.runtime, res.precision, res.device, fit if quick else grid, fit,
                          settings, options)  # fmt: skip


def machine_provenance(device: str) -> dict[str, Any]:
    """This machine, its measured bandwidth and compute: what an estimate for another device scales by."""
    from edgekit.hardware.host import machine_record
    from edgekit.hardware.microbench import measure

    figures = measure("cuda" if device == "cuda" else "cpu")
    return {
        "machine": machine_record(),
        "bandwidth_gbs": figures["memory_bandwidth"]["value"],
        "compute_gflops": figures["matmul"]["value"],
    }


def measure_shape(
    plan: Plan, perms: Any, base: Path, shape: Shape, req: ProfileRequest, work: Path
) -> ShapeMeasurement:
    from edgekit.elastic.extract import extract

    engine = get_engine(req.runtime)
    hf_dir, compiled = work / f"{shape.name}-hf", work / f"{shape.name}-{req.runtime}"
    extract(plan, perms, base, shape, hf_dir)
    compiled.mkdir()
    start = time.perf_counter()
    # latency does not depend on weight values: measure the cheapest build of the same graph
    options = trial_options(engine, req.precision, req.options) or req.options
    engine.compile(hf_dir, compiled, req.precision, req.device, options)
    compile_s = time.perf_counter() - start
    figures = measure_folder(req.runtime, compiled, req.device, req.settings)
    # A burst of other work on a small shared machine shows as a wide spread: measure again (in a
    # fresh process) and keep the steadier run, rather than fit a predictor to noise.
    for _ in range(RETRIES):
        if figures.decode_spread_pct <= STEADY_SPREAD_PCT:
            break
        again = measure_folder(req.runtime, compiled, req.device, req.settings)
        if again.decode_spread_pct < figures.decode_spread_pct:
            figures = again
    size = folder_bytes(compiled)
    shutil.rmtree(hf_dir, ignore_errors=True)
    shutil.rmtree(compiled, ignore_errors=True)
    return ShapeMeasurement(**figures.to_dict(), shape=shape.name, model_bytes=size, compile_s=round(compile_s, 2))


def input_widths(plan: Plan) -> list[int]:
    """The widths every input of a linear layer of the plan's shapes is a multiple of: the hidden size, one
    query head per KV group (o_proj reads a multiple of kv heads x head_dim) and one FFN step (down_proj)."""
    g = plan.geometry
    return sorted({g.hidden, g.num_kv_heads * g.head_dim, g.ffn_unit, g.ffn})


def run_search(plan: Plan, perms: Any, base: Path, req: ProfileRequest, work: Path,
               on_shape: Callable[[str], None] | None) -> Any:  # fmt: skip
    """The build-option search on the full model (its weights as deploy cuts them from the plan)."""
    from edgekit.deployment.option_search import search_options
    from edgekit.elastic.extract import extract

    full = plan.full
    hf_dir = work / "search-hf"
    extract(plan, perms, base, full, hf_dir)
    settings = dataclasses.replace(req.settings, prompt_lens=())  # decode speed is what the options change
    found = search_options(hf_dir, req.runtime, req.precision, req.device, work, settings, full.name, req.tolerance,
                           req.search_rounds, req.options, on_shape, input_widths(plan))  # fmt: skip
    shutil.rmtree(hf_dir, ignore_errors=True)
    for k in range(len(found.trials)):
        shutil.rmtree(work / f"candidate-{k}", ignore_errors=True)
    return found


def profile(
    plan: Plan,
    req: ProfileRequest,
    on_shape: Callable[[str], None] | None = None,
    done: Callable[[ShapeMeasurement], None] | None = None,
) -> Lut:
    from edgekit.elastic.base_model import base_folder
    from edgekit.elastic.plan import load_permutations

    engine = get_engine(req.runtime)
    engine.check()
    base = base_folder(plan)
    perms = load_permutations(plan)
    provenance = machine_provenance(req.device)
    start = time.perf_counter()
    measured: list[ShapeMeasurement] = []
    search = None
    # scratch beside the LUTs it makes, swept by the next writer there if this run is killed
    with work_dir(user_dir(), "profile") as tmp:
        if req.search:
            search = run_search(plan, perms, base, req, Path(tmp), on_shape)
            # every shape is then measured as deploy will build it (--option still wins over the search)
            req = dataclasses.replace(req, options={**search.winner, **(req.options or {})})
        for shape in req.shapes:
            if on_shape:
                on_shape(shape.name)
            m = measure_shape(plan, perms, base, shape, req, tmp)
            measured.append(m)
            if done:
                done(m)
    fit_names = [s.name for s in req.fit_on]
    validation = validate(plan.geometry, measured, fit_names) if len(measured) > len(fit_names) else None
    provenance.update(
        {
            "runtime_versions": engine.versions(),
            "edgekit_version": __version__,
            "date": utc_now(),
            "options": req.options or {},
            "wall_s": round(time.perf_counter() - start, 1),
        }
    )
    if search is not None:
        provenance["option_search"] = search.to_dict()
    return Lut(
        target=req.target,
        runtime=req.runtime,
        precision=req.precision,
        device=req.device,
        status=MEASURED,
        model={"name": plan.model.name, "digest": plan.model.digest, "geometry": plan.geometry.__dict__},
        provenance=provenance,
        settings=req.settings.to_dict(),
        predictor=fit_predictor(plan.geometry, measured),
        measured=measured,
        validation=validation,
        created=utc_now(),
    )
