"""Latency LUTs: what was measured (or estimated) for one model on one target and runtime, and the
predictor fitted to it. Stored as JSON: shipped under targets/luts/, the user's own under
$EDGEKIT_HOME/luts/ (a user's measured LUT always wins over a shipped or estimated one).

A LUT is `measured` when every figure in it came from running the compiled subnets on that device;
`estimated` when it was scaled from a measured LUT of another device by published specs, which is
all we can do for boards nobody here owns. Estimated figures are labelled wherever they are shown.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit import __version__
from edgekit.artifacts import SEAL, check_seal, utc_now, write_manifest
from edgekit.data import shipped
from edgekit.deployment.latency import Prediction, Predictor, ShapeMeasurement
from edgekit.errors import IntegrityError
from edgekit.formats import tag, upgrade
from edgekit.shapes import Geometry, Shape

FORMAT = tag("edgekit-lut")
MEASURED, ESTIMATED = "measured", "estimated"
# Measured GEMV bandwidth on a host vs a datasheet's peak: STREAM-like kernels reach about 70 % of
# peak on LPDDR5 and GDDR6, so a target's datasheet figure is discounted before the ratio is taken.
ACHIEVABLE_FRACTION = 0.7
# A small model on a GPU is bound by kernel launches, not bytes: per layer, per token. From
# DESIGN.md's figure (SmolLM2-135M at ~6 ms/token on an Orin Nano: 30 layers) and the usual ~5 us
# per launch x ~10 kernels per layer on a desktop GPU.
LAUNCH_FLOOR_MS_PER_LAYER = {"jetson": 0.15, "gpu": 0.05, "cpu": 0.0}
# Bytes a weight takes in each precision (4-bit formats carry a scale per block of 32: +1/16 byte; int4-mixed's
# int8 head and layers make SmolLM2-135M's build 1.3x plain int4's).
BYTES_PER_PARAM = {"int4": 0.5625, "int4-mixed": 0.73, "q4f16_1": 0.5625, "q4_0": 0.5625, "q4_1": 0.625, "int8": 1.0625,
                   "fp16": 2.0, "bf16": 2.0, "fp32": 4.0}  # fmt: skip


@dataclass
class Lut:
    target: str
    runtime: str
    precision: str
    device: str
    status: str  # measured | estimated
    model: dict[str, Any]  # name, digest, geometry
    provenance: dict[str, Any]
    settings: dict[str, Any]
    predictor: Predictor
    measured: list[ShapeMeasurement] = field(default_factory=list)
    validation: dict[str, Any] | None = None
    created: str = ""
    edgekit_version: str = __version__

    @property
    def key(self) -> str:
        return lut_key(self.target, self.runtime, self.precision, self.device, self.model["name"])

    @property
    def geometry(self) -> Geometry:
        return Geometry(**self.model["geometry"])

    def predict(self, shape: Shape, prompt_len: int = 128) -> Prediction:
        return self.predictor.predict(self.geometry, shape, prompt_len)

    def measured_for(self, shape: Shape) -> ShapeMeasurement | None:
        return next((m for m in self.measured if m.shape == shape.name), None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["predictor"] = self.predictor.to_dict()
        data["measured"] = [m.to_dict() for m in self.measured]
        return {"format": FORMAT, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any], what: str = "LUT") -> Lut:
        data = {k: v for k, v in upgrade("edgekit-lut", data, what).items() if k != "format"}
        data["predictor"] = Predictor.from_dict(data["predictor"])
        data["measured"] = [ShapeMeasurement.from_dict(m) for m in data.get("measured", [])]
        return cls(**data)


def lut_key(target: str, runtime: str, precision: str, device: str, model: str) -> str:
    return f"{target}.{runtime}-{precision}-{device}.{model}"


def host_target_name(host: Any) -> str:
    """`host-<id>`: one LUT per machine, since 'host' means a different device on every machine. The CPU's
    vector extensions are part of it: cloud VMs report one model name ("AMD EPYC") over hosts with and without
    AVX-512, and those decode the same model at very different speeds."""
    ident = [host.cpu.model, host.cpu.logical_cores, round(host.memory_total_gb), sorted(host.cpu.isa or [])]
    ident += [g.name for g in host.gpus] + ([host.jetson.board] if host.jetson else [])
    return "host-" + hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:8]


def user_dir() -> Path:
    from edgekit.paths import home

    return home() / "luts"


def shipped_dir() -> Path:
    return shipped("luts")


def save_lut(lut: Lut, folder: Path | None = None) -> Path:
    folder = folder or user_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{lut.key}.json"
    write_manifest(path, lut.to_dict())  # sealed: a flipped figure is a corrupt LUT, not a wrong choice
    return path


def read_lut(path: Path) -> Lut:
    fix = f": delete it, or measure it again with `edgekit profile` ({path})"
    try:
        data = json.loads(path.read_text())
        check_seal(data, path, f"LUT {path.name}")
        data.pop(SEAL, None)
        return Lut.from_dict(data, f"LUT {path.name}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise IntegrityError(f"LUT {path.name} is corrupt ({type(exc).__name__}){fix}") from None
    except IntegrityError as exc:
        raise IntegrityError(f"{exc}{fix}") from None


def all_luts() -> list[tuple[Path, Lut, str]]:
    """(path, lut, 'user' | 'shipped'), the user's first. A corrupt LUT is an error, not skipped: skipping it
    would quietly predict from another (an estimate where the user measured)."""
    found = []
    for kind, folder in (("user", user_dir()), ("shipped", shipped_dir())):
        if folder.is_dir():
            found += [(path, read_lut(path), kind) for path in sorted(folder.glob("*.json"))]
    return found


def find_lut(target: str, runtime: str, model: str, precision: str | None = None) -> Lut | None:
    """The best LUT for (target, runtime, model): measured before estimated, the user's before shipped."""
    matches = [
        (lut, kind)
        for _, lut, kind in all_luts()
        if lut.target == target
        and lut.runtime == runtime
        and lut.model["name"] == model
        and (precision is None or lut.precision == precision)
    ]
    matches.sort(key=lambda m: (m[0].status != MEASURED, m[1] != "user"))
    return matches[0][0] if matches else None


def estimate(
    source: Lut,
    target: str,
    kind: str,
    bandwidth_gbs: float,
    compute_gflops: float | None,
    runtime: str,
    precision: str,
    device: str,
    why: str,
) -> Lut:
    """A LUT for a device nobody here can measure: `source` scaled by bandwidth (decode) and compute
    (prompt), with the launch-bound floor of GPUs; marked estimated with everything it rests on."""
    src_bw = source.provenance.get("bandwidth_gbs")
    src_flops = source.provenance.get("compute_gflops")
    if not src_bw:
        raise IntegrityError(f"LUT {source.key} records no measured bandwidth, so it cannot be scaled")
    decode_ratio = src_bw / (bandwidth_gbs * ACHIEVABLE_FRACTION)
    compute_ratio = (src_flops / compute_gflops) if (src_flops and compute_gflops) else decode_ratio
    # the bytes streamed per parameter change with the precision; per-call overheads do not
    bytes_ratio = BYTES_PER_PARAM.get(precision, 1.0) / BYTES_PER_PARAM.get(source.precision, 1.0)
    scaled = source.predictor.scaled(decode_ratio, compute_ratio)
    scaled.decode[2] *= bytes_ratio
    scaled.memory[1] *= bytes_ratio
    floor = LAUNCH_FLOOR_MS_PER_LAYER.get(kind, 0.0)
    scaled.decode[1] = max(scaled.decode[1], floor)
    return Lut(
        target=target,
        runtime=runtime,
        precision=precision,
        device=device,
        status=ESTIMATED,
        model=source.model,
        provenance={
            "estimated_from": source.key,
            "source_status": source.status,
            "source_machine": source.provenance.get("machine"),
            "source_bandwidth_gbs": src_bw,
            "target_bandwidth_gbs": bandwidth_gbs,
            "achievable_fraction": ACHIEVABLE_FRACTION,
            "decode_ratio": round(decode_ratio, 5),
            "bytes_ratio": round(bytes_ratio, 4),
            "compute_ratio": round(compute_ratio, 5),
            "launch_floor_ms_per_layer": floor,
            "why": why,
            "how_to_measure": f"run `edgekit profile --target {target} --runtime {runtime}` on the device",
        },
        settings=source.settings,
        predictor=scaled,
        measured=[],
        validation=None,
        created=utc_now(),
    )
