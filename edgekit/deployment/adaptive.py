"""`edgekit deploy --adaptive`: a deployment of several menu shapes and a router that picks one per reply,
its policy calibrated so the mean latency lands on the budget.

    load the router (refused for another checkpoint) -> each menu shape's ms/token on the target (measured here
    on a trial build, else the LUT's) -> the exchange rate that spends the budget on the router's held-apart
    prompts -> build every shape the policy uses (model/ holds the slowest, menu/SHAPE/ the others) -> copy
    the router -> manifest (menu, router hash, calibration figures, the memory all of it costs)
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.artifacts import check_free_space, destination_lock, sha256_file, work_dir
from edgekit.deployment.lut import MEASURED
from edgekit.deployment.manifest import MODEL_DIR
from edgekit.errors import UsageError

MENU_DIR = "menu"
ROUTER_DIR = "router"


def deploy_adaptive(req: Any, router_dir: Path, step: Any = None) -> Any:
    from edgekit.deployment import pipeline
    from edgekit.engines import get_engine
    from edgekit.engines.base import trial_options
    from edgekit.routing import identity, policy
    from edgekit.routing import router as router_io

    step = step or (lambda _label: contextlib.nullcontext())
    if req.out is not None and req.out.exists() and not req.force:
        raise UsageError(f"{req.out} exists; pass --force to replace it")
    if req.out is not None:
        from edgekit.artifacts import check_writable

        check_writable(req.out)
    choice = pipeline.choose(req, step)
    router, _ = router_io.load(router_dir, identity(choice.source))
    menu = [choice.source.shape(name) for name in router.menu]
    rows = {r.shape: r for r in choice.rows}
    missing = [s.name for s in menu if s.name not in rows]
    if missing:
        raise UsageError(f"the router's menu shape {missing[0]} is not a shape of {choice.source.label}")
    res = choice.resolved
    engine = get_engine(res.runtime)
    engine.check()
    verify = res.is_host if req.verify is None else req.verify
    trial = trial_options(engine, res.precision, choice.options) if verify else None
    where = req.out or choice.out("x")
    check_free_space(where.parent, len(menu) * pipeline.scratch_bytes(choice), "an adaptive deploy's scratch space")
    with destination_lock(where) if req.out else contextlib.nullcontext(), work_dir(where.parent, "deploy") as work:

        def build(candidate: Any) -> Any:
            return pipeline.build_attempt(choice, candidate, work, verify, step, trial)

        check = choice.budget
        if verify and req.budget.relative is not None and choice.lut.status != MEASURED:
            _, check = pipeline.measure_full_model(choice, build)
        if check.ms_per_token is None:
            raise UsageError("--adaptive needs a per-token latency budget (ms, tok/s or a share of the full model)")
        attempts = {s.name: build(rows[s.name]) for s in menu}
        ms = np.array([a.figures.decode_ms if a.figures else rows[n].decode_ms for n, a in attempts.items()])
        try:
            cal = policy.calibrate(router.calibration, ms, check.ms_per_token)
        except ValueError as low:
            fastest = int(ms.argmin())
            raise UsageError(
                f"a mean of {check.ms_per_token:.3g} ms/token is below what the router can reach ({low} ms/token on "
                f"its prompts; the fastest menu shape, {menu[fastest].name}, takes {ms[fastest]:.3g} ms/token)"
            ) from None
        used = [s.name for s, share in zip(menu, cal.shares, strict=True) if share > 0]
        final = {}
        for name in used:
            attempt = attempts[name]
            final[name] = pipeline.final_build(choice, attempt, work, step) if trial is not None else attempt
        return write(choice, router_dir, router, final, menu, ms, cal, check)


def write(choice: Any, router_dir: Path, router: Any, final: dict[str, Any], menu: list[Any], ms: np.ndarray,
          cal: Any, check: Any) -> Any:  # fmt: skip
    """The adaptive deployment folder, written atomically: the slowest used shape is model/ (what every
    single-model tool reads), the others menu/SHAPE/, the router router/."""
    from edgekit.deployment import pipeline
    from edgekit.routing.router import ROUTER_FILE

    slowest = max(final, key=lambda n: ms[[s.name for s in menu].index(n)])
    main = final[slowest]
    entries = []
    for s, t, share in zip(menu, ms, cal.shares, strict=True):
        folder = None if s.name not in final else (MODEL_DIR if s.name == slowest else f"{MENU_DIR}/{s.name}")
        entries.append({"shape": s.name, "folder": folder, "decode_ms": round(float(t), 3),
                        "measured": final[s.name].figures is not None if s.name in final else None,
                        "share": round(share, 4)})  # fmt: skip

    def extend(tmp: Path, manifest: Any) -> None:
        for name, attempt in final.items():
            if name != slowest:
                shutil.copytree(attempt.compiled, tmp / MENU_DIR / name)
        shutil.copytree(router_dir, tmp / ROUTER_DIR)
        sizes = {e["shape"]: folder_mb(tmp / e["folder"]) for e in entries if e["folder"]}
        manifest.adaptive = {
            "menu": [{**e, "mb": sizes.get(e["shape"])} for e in entries],
            "router": {"identity": router.identity, "router_sha256": sha256_file(router_dir / ROUTER_FILE),
                       "stats": router.stats, "mb": folder_mb(router_dir)},
            "lambda": cal.lam, "budget_ms": check.ms_per_token,
            "calibration": {"prompts": int(router.calibration.shape[0]), "mean_ms": round(cal.mean_ms, 3),
                            "shares": {s.name: round(x, 4) for s, x in zip(menu, cal.shares, strict=True)}},
            "memory_mb": round(sum(v for v in sizes.values() if v) + folder_mb(router_dir), 1),
        }  # fmt: skip

    deployment = pipeline.write_deployment(choice, main, check, [], None, extend=extend)
    choice.notes.append(
        f"adaptive: {len(final)} of {len(menu)} menu shapes used on the router's prompts, mean "
        f"{cal.mean_ms:.3g} ms/token for a budget of {check.ms_per_token:.3g}; "
        + ", ".join(f"{s.name} {x:.0%}" for s, x in zip(menu, cal.shares, strict=True))
    )
    return deployment


def folder_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6, 1)


def open_routed(path: Path, manifest: Any, device: str) -> Any:
    """A RoutedSession over an adaptive deployment's shapes (each its own runtime session), its router checked
    against the manifest."""
    from edgekit.engines import get_engine
    from edgekit.errors import IntegrityError
    from edgekit.routing import router as router_io
    from edgekit.routing.router import ROUTER_FILE
    from edgekit.routing.session import RoutedPolicy, RoutedSession

    a = manifest.adaptive
    if sha256_file(path / ROUTER_DIR / ROUTER_FILE) != a["router"]["router_sha256"]:
        raise IntegrityError(f"deployment {path}: its router is not the one it was deployed with")
    router, extractor = router_io.load(path / ROUTER_DIR, a["router"]["identity"])
    engine = get_engine(manifest.runtime.name)
    sessions = {e["shape"]: engine.open(path / e["folder"], device) for e in a["menu"] if e["folder"]}
    # a shape left out of the deployment (the policy never chose it on the router's prompts) is never chosen
    ms = [e["decode_ms"] if e["folder"] else float("inf") for e in a["menu"]]
    return RoutedSession.over(RoutedPolicy(router, extractor, ms, float(a["lambda"])), sessions)
