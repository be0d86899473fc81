"""What a deploy or profile request names, found and checked: the target, the runtime that builds for it,
the precision and device, and the latency LUT to predict with (measured, else estimated)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgekit.deployment.lut import ACHIEVABLE_FRACTION, MEASURED, Lut, estimate, find_lut, host_target_name
from edgekit.deployment.targets import HOST, Target, get_target, match_host
from edgekit.errors import MissingDependencyError, UsageError, first_line


@dataclass
class Resolved:
    target: Target | None  # the descriptor (None for an unmatched host)
    target_name: str  # the LUT target: a descriptor's name, or host-<id>
    title: str
    kind: str
    is_host: bool
    runtime: str
    precision: str
    device: str
    notes: list[str] = field(default_factory=list)

    def profile_command(self) -> str:
        return f"edgekit profile --target {HOST if self.is_host else self.target_name} --runtime {self.runtime}"


def resolve_target(name: str, runtime: str | None, precision: str | None) -> Resolved:
    from edgekit.engines import ENGINES, get_engine
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
        entry, skipped = first_usable(options)
        if entry is None:
            why = "; ".join(skipped) or f"none listed; edgekit drives {', '.join(ENGINES)}"
            raise MissingDependencyError(f"target {tname} has no runtime usable here: {why}")
        if skipped:
            notes.append(f"using runtime {entry['runtime']}: {tname} prefers {'; '.join(skipped)}")
    engine = get_engine(entry["runtime"])
    device = entry.get("device") or "cpu"
    if not engine.precisions(device):
        raise UsageError(f"runtime {engine.name} builds nothing for {device} ({title} has no GPU it drives)")
    prec = precision or entry.get("precision") or engine.precisions(device)[0]
    if prec not in engine.precisions(device):
        raise UsageError(f"runtime {engine.name} builds {', '.join(engine.precisions(device))} on {device}, not {prec}")
    kind = target.kind if target else host.kind
    return Resolved(target, tname, title, kind, is_host, engine.name, prec, device, notes)


def first_usable(options: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[str]]:
    """The target's first listed runtime that is installed here (it compiles here), and why earlier ones are not."""
    from edgekit.engines import ENGINES, get_engine

    skipped = []
    for entry in options:
        if entry["runtime"] not in ENGINES:
            skipped.append(f"{entry['runtime']}, which edgekit does not drive yet")
            continue
        try:
            get_engine(entry["runtime"]).check()
        except MissingDependencyError as exc:
            why = first_line(exc).removeprefix(f"runtime '{entry['runtime']}': ")
            skipped.append(f"{entry['runtime']}, not usable here ({why})")
            continue
        return entry, skipped
    return None, skipped


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


def lut_for(res: Resolved, model: str) -> tuple[Lut, str | None]:
    """The LUT to predict with, and a note when it is an estimate."""
    lut = find_lut(res.target_name, res.runtime, model, res.precision)
    if lut is not None and (lut.status == MEASURED or not res.is_host):
        return lut, None if lut.status == MEASURED else estimated_note(lut, res)
    source = reference_lut(res, model)
    if source is None:
        raise UsageError(f"no latency LUT for {model} on {res.target_name} with {res.runtime} {res.precision}: "
                         f"run `{res.profile_command()}`")  # fmt: skip
    if res.is_host:
        from edgekit.hardware.microbench import measure

        figures = measure("cuda" if res.device == "cuda" else "cpu")
        bw, flops = figures["memory_bandwidth"]["value"], figures["matmul"]["value"]
        # a host's own measured bandwidth is not a datasheet peak: undo the discount estimate() applies
        lut = estimate(
            source, res.target_name, res.kind, bw / ACHIEVABLE_FRACTION, flops, res.runtime, res.precision,
            res.device, "this machine has no measured LUT yet; scaled by its measured bandwidth",
        )  # fmt: skip
        return lut, estimated_note(lut, res)
    target = res.target
    if target is None or not target.memory.get("bandwidth_gbs"):
        raise UsageError(f"target {res.target_name} has no memory bandwidth to estimate a LUT from")
    tflops = target.compute.get("fp16_tensor_tflops") or target.compute.get("fp32_tflops")
    lut = estimate(
        source, res.target_name, res.kind, target.memory["bandwidth_gbs"], tflops * 1000 if tflops else None,
        res.runtime, res.precision, res.device, "no measured LUT for this device; scaled from published specs",
    )  # fmt: skip
    return lut, estimated_note(lut, res)


def estimated_note(lut: Lut, res: Resolved) -> str:
    src = lut.provenance.get("estimated_from", "?")
    return f"latency is ESTIMATED (from {src}, scaled by bandwidth); measure it with `{res.profile_command()}`"


def reference_lut(res: Resolved, model: str) -> Lut | None:
    """A measured LUT to scale from: same runtime and precision first, then any measured one."""
    from edgekit.deployment.lut import all_luts

    measured = [lut for _, lut, _ in all_luts() if lut.status == MEASURED and lut.model["name"] == model]
    measured.sort(key=lambda lut: (lut.runtime != res.runtime, lut.precision != res.precision))
    return measured[0] if measured else None
