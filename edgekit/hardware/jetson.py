"""A Jetson's power state (power mode, GPU clock, power rails), setting its power mode, and whether
the runtimes edgekit prefers there (MLC-LLM, ONNX Runtime CUDA) are usable.

The source is jetson-stats' `jtop` when its service runs, else `nvpmodel -q`. A live jtop object is
first copied into a plain, JSON-able *recording*; one pure parser turns a recording into PowerState,
so the code that reads a board is the code the recorded samples under tests/data/ exercise.
The recording's parts are jtop's own: `jetson.stats` (flat dict), `jetson.gpu` (per GPU: `freq` in
kHz, `status.load` in %), `jetson.power` (`rail` and `tot`, in mV / mA / mW; the total is the VDD_IN
rail where the board has one) and `jetson.nvpmodel` (id, name, models), as jetson-stats defines them
in jtop/jtop.py, jtop/core/gpu.py, jtop/core/power.py and jtop/core/nvpmodel.py (rbonghi/jetson_stats).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import EdgekitError, ResourceError, UsageError
from edgekit.formats import tag
from edgekit.shell import Command, Result

RECORDING_FORMAT = tag("edgekit-jtop-recording")
JTOP_INTERVAL_S = 0.5


@dataclass
class Rail:
    name: str
    power_mw: int
    avg_mw: int | None = None
    volt_mv: int | None = None
    curr_ma: int | None = None
    online: bool = True


@dataclass
class PowerState:
    source: str  # jtop | nvpmodel | none
    mode: str | None = None  # nvpmodel's name: MAXN, 15W, ...
    mode_id: int | None = None
    models: list[str] = field(default_factory=list)  # every mode the board offers, by id
    gpu_freq_mhz: float | None = None
    gpu_min_mhz: float | None = None
    gpu_max_mhz: float | None = None
    gpu_load_pct: float | None = None
    gpu_governor: str | None = None
    jetson_clocks: bool | None = None
    total_mw: int | None = None
    total_rail: str | None = None  # VDD_IN where the board measures its input, else the sum of rails
    rails: list[Rail] = field(default_factory=list)

    @property
    def label(self) -> str | None:
        """'MAXN (mode 0)': how edgekit writes a power mode wherever it records the machine."""
        if self.mode is None:
            return None
        return f"{self.mode} (mode {self.mode_id})" if self.mode_id is not None else self.mode


# ------------------------------------------------------------------ pure parsers


def parse_nvpmodel_mode(text: str) -> tuple[str | None, int | None]:
    """Output of `nvpmodel -q`: 'NV Power Mode: MAXN\\n0' -> ('MAXN', 0). The id is the next line that
    is a bare number, as jetson-stats reads it (jtop/core/nvpmodel.py, nvpmodel_query)."""
    match = re.search(r"NV Power Mode:\s*(\S+)", text)
    if not match:
        return None, None
    mode_id = re.search(r"^\s*(\d+)\s*$", text[match.end() :], re.M)
    return match.group(1), int(mode_id.group(1)) if mode_id else None


def parse_nvpmodel_query(text: str) -> str | None:
    """Output of `nvpmodel -q` -> 'MAXN (mode 0)' (or just the name when no id follows)."""
    name, mode_id = parse_nvpmodel_mode(text)
    return PowerState("nvpmodel", name, mode_id).label


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _mhz(khz: Any) -> float | None:
    value = _int(khz)
    return round(value / 1000, 1) if value is not None else None


def parse_jtop(recording: dict[str, Any]) -> PowerState:
    """A recording of jtop's objects (see record_jtop) -> PowerState. Missing parts stay None: boards
    without INA3221 sensors have no rails, JetPack 7 reads the GPU through NVML, and so on."""
    if recording.get("format") != RECORDING_FORMAT:
        raise UsageError(f"not a jtop recording (format {recording.get('format')!r}, expected {RECORDING_FORMAT})")
    stats = recording.get("stats") or {}
    state = PowerState("jtop")
    nvp = recording.get("nvpmodel")
    if nvp:
        state.mode, state.mode_id = nvp.get("name"), _int(nvp.get("id"))
        state.models = [str(m) for m in nvp.get("models") or []]
    elif stats.get("nvp model"):
        state.mode = str(stats["nvp model"])  # `stats` carries the name only
    gpus = recording.get("gpu") or {}
    if gpus:
        gpu = next(iter(gpus.values()))  # an Orin has one iGPU; jtop keys it by its device-tree name
        freq = gpu.get("freq") or {}
        state.gpu_freq_mhz, state.gpu_min_mhz = _mhz(freq.get("cur")), _mhz(freq.get("min"))
        state.gpu_max_mhz, state.gpu_governor = _mhz(freq.get("max")), freq.get("governor")
        load = (gpu.get("status") or {}).get("load")
        state.gpu_load_pct = float(load) if load is not None else None
    elif isinstance(stats.get("GPU"), (int, float)):
        state.gpu_load_pct = float(stats["GPU"])
    if "jetson_clocks" in recording and recording["jetson_clocks"] is not None:
        state.jetson_clocks = bool(recording["jetson_clocks"])
    elif stats.get("jetson_clocks") in ("ON", "OFF"):
        state.jetson_clocks = stats["jetson_clocks"] == "ON"
    power = recording.get("power") or {}
    for name, rail in (power.get("rail") or {}).items():
        state.rails.append(
            Rail(name, _int(rail.get("power")) or 0, _int(rail.get("avg")), _int(rail.get("volt")),
                 _int(rail.get("curr")), bool(rail.get("online", True)))
        )  # fmt: skip
    total = power.get("tot") or {}
    if total:
        state.total_mw, state.total_rail = _int(total.get("power")), total.get("name") or "sum of rails"
    elif isinstance(stats.get("Power TOT"), (int, float)):
        state.total_mw = int(stats["Power TOT"])
    return state


# ------------------------------------------------------------------ reading a live board


def record_jtop(jetson: Any) -> dict[str, Any]:
    """Copy a live, ok() jtop object into a recording: plain JSON types only (its stats hold a datetime
    and a timedelta), so the same dict can be saved as a test fixture or parsed at once."""
    nvp = jetson.nvpmodel
    jc = jetson.jetson_clocks
    recording = {
        "format": RECORDING_FORMAT,
        "stats": dict(jetson.stats),
        "gpu": {name: dict(gpu) for name, gpu in jetson.gpu.items()} if jetson.gpu else {},
        "power": dict(jetson.power) if jetson.power else {},
        "nvpmodel": {"id": nvp.id, "name": nvp.name, "models": list(nvp.models)} if nvp is not None else None,
        "jetson_clocks": bool(jc) if jc is not None else None,
    }
    return json.loads(json.dumps(recording, default=str))


def read_jtop() -> dict[str, Any] | None:
    """A recording from the jtop service; None when jetson-stats is missing or its service is not running."""
    try:
        from jtop import jtop  # jetson-stats, the `jetson` extra
    except ImportError:
        return None
    try:
        with jtop(interval=JTOP_INTERVAL_S) as jetson:
            if jetson.ok():
                return record_jtop(jetson)
    except Exception:  # jtop raises JtopException when the service is down or the user not in its group
        return None
    return None


def read_nvpmodel(run: Callable[[Command], Result] | None = None) -> PowerState:
    from edgekit import shell

    result = (run or shell.capture)(Command(("nvpmodel", "-q"), "read the power mode"))
    name, mode_id = parse_nvpmodel_mode(result.out) if result.ok else (None, None)
    return PowerState("nvpmodel" if name else "none", name, mode_id)


def read_power_state() -> PowerState:
    """jtop when its service answers (mode, GPU clock, rails), else `nvpmodel -q` (mode only)."""
    recording = read_jtop()
    if recording is not None:
        try:
            return parse_jtop(recording)
        except EdgekitError:
            pass
    return read_nvpmodel()


# ------------------------------------------------------------------ setting the power mode


def set_power_mode(
    mode_id: int,
    known: list[str] | None = None,
    run: Callable[[Command], Result] | None = None,
    use_jtop: bool = True,
) -> str:
    """Switch to nvpmodel mode `mode_id` through jtop (`jetson.nvpmodel = id`, no root needed beyond
    the jtop group), else `sudo nvpmodel -m ID`. Returns how it was done; raises with the fix when not."""
    from edgekit import shell

    if known is not None and not 0 <= mode_id < len(known):
        listed = ", ".join(f"{i}: {name}" for i, name in enumerate(known))
        raise UsageError(f"power mode {mode_id} does not exist on this board; it has {listed}")
    if use_jtop and _set_through_jtop(mode_id):
        return "jtop"
    argv = ("nvpmodel", "-m", str(mode_id))
    if os.geteuid() != 0:
        argv = ("sudo", *argv)
    result = (run or shell.capture)(Command(argv, f"switch to power mode {mode_id}"))
    text = f"{result.out}\n{result.err}".lower()
    if "reboot" in text:
        # Orin asks before a switch that needs a reboot; with no terminal to answer, nothing changed.
        raise ResourceError(
            f"power mode {mode_id} needs a reboot on this board: run `sudo nvpmodel -m {mode_id}` in a terminal, "
            "answer YES, and profile again after the reboot"
        )
    if not result.ok:
        raise ResourceError(f"could not set power mode {mode_id} (`{Command(argv, '').text()}`): "
                            f"{result.last_error_line()}")  # fmt: skip
    return "nvpmodel"


def _set_through_jtop(mode_id: int) -> bool:
    try:
        from jtop import jtop
    except ImportError:
        return False
    try:
        with jtop(interval=JTOP_INTERVAL_S) as jetson:
            if jetson.ok() and jetson.nvpmodel is not None:
                jetson.nvpmodel = mode_id
                return True
    except Exception:  # service down or mode refused: the nvpmodel path says why
        return False
    return False
