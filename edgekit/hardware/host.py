"""What this host is: Jetson, NVIDIA GPU machine or plain CPU, with its memory and ISA.

Parsers are pure functions over the text of /proc and /etc files so they can be tested on
recorded samples from boards we do not have.
"""

from __future__ import annotations

import os
import platform
import re
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil

from edgekit.hardware.jetson import PowerState, read_power_state

GiB = 1024**3

# L4T release -> JetPack, from NVIDIA's JetPack archive. Longest matching prefix wins.
L4T_TO_JETPACK = {
    "36.4.4": "6.2.1",
    "36.4.3": "6.2",
    "36.4": "6.1",
    "36.3": "6.0",
    "36.2": "6.0 DP",
    "35.6.1": "5.1.5",
    "35.6": "5.1.4",
    "35.5": "5.1.3",
    "35.4.1": "5.1.2",
    "35.3.1": "5.1.1",
    "35.2.1": "5.1",
    "35.1": "5.0.2",
}


@dataclass
class CpuInfo:
    model: str
    arch: str
    physical_cores: int | None
    logical_cores: int
    isa: list[str]


@dataclass
class GpuInfo:
    index: int
    name: str
    memory_total_gb: float
    memory_free_gb: float
    compute_capability: str
    driver: str | None = None


@dataclass
class JetsonInfo:
    board: str
    l4t: str | None
    jetpack: str | None
    power_mode: str | None = None  # 'MAXN (mode 0)': what LUTs and deployments record
    gpu_freq_mhz: float | None = None
    source: str = "device-tree"
    power: PowerState | None = None  # the full reading: rails, clocks, jetson_clocks, the board's modes


@dataclass
class HostInfo:
    kind: Literal["jetson", "gpu", "cpu"]
    hostname: str
    os: str
    cpu: CpuInfo
    memory_total_gb: float
    memory_available_gb: float
    gpus: list[GpuInfo] = field(default_factory=list)
    jetson: JetsonInfo | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- pure parsers


def parse_cpuinfo(text: str, machine: str) -> tuple[str, list[str]]:
    """CPU model name and the ISA extensions that matter for LLM kernels, from /proc/cpuinfo."""
    model = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    isa: list[str] = []
    if machine in ("x86_64", "amd64", "i686"):
        named = {
            "avx": "AVX",
            "avx2": "AVX2",
            "fma": "FMA",
            "f16c": "F16C",
            "avx512f": "AVX-512",
            "avx512_vnni": "AVX-512-VNNI",
            "avx512_bf16": "AVX-512-BF16",
            "avx_vnni": "AVX-VNNI",
            "amx_tile": "AMX",
        }
        isa = [label for flag, label in named.items() if flag in flags]
    elif machine in ("aarch64", "arm64"):
        # On 64-bit Arm, Advanced SIMD (NEON) is mandatory; the kernel reports it as "asimd".
        named = {
            "asimd": "NEON",
            "asimddp": "DOTPROD",
            "i8mm": "I8MM",
            "bf16": "BF16",
            "sve": "SVE",
            "sve2": "SVE2",
            "fphp": "FP16",
        }
        isa = [label for flag, label in named.items() if flag in flags]
        if "NEON" not in isa:
            isa.insert(0, "NEON")
    if not model and machine in ("aarch64", "arm64"):
        model = _arm_part_name(text)
    return model or platform.processor() or machine, isa


_ARM_PARTS = {
    "0xd42": "Cortex-A78AE",
    "0xd41": "Cortex-A78",
    "0xd08": "Cortex-A72",
    "0xd0c": "Neoverse-N1",
    "0xd40": "Neoverse-V1",
    "0xd4f": "Neoverse-V2",
    "0xd07": "Cortex-A57",
}


def _arm_part_name(text: str) -> str:
    match = re.search(r"CPU part\s*:\s*(0x[0-9a-f]+)", text)
    return f"Arm {_ARM_PARTS.get(match.group(1), match.group(1))}" if match else ""


def parse_l4t_release(text: str) -> str | None:
    """'# R36 (release), REVISION: 4.3, ...' -> '36.4.3' (the first line of /etc/nv_tegra_release)."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def jetpack_for_l4t(l4t: str | None) -> str | None:
    if not l4t:
        return None
    for prefix in sorted(L4T_TO_JETPACK, key=len, reverse=True):
        if l4t == prefix or l4t.startswith(prefix + "."):
            return L4T_TO_JETPACK[prefix]
    return None


def parse_device_tree_model(raw: bytes) -> str:
    return raw.replace(b"\x00", b"").decode("utf-8", "replace").strip()


# ---------------------------------------------------------------- probes


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (x86 `flags`, Arm `Features`); empty where there is no
    /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def detect_cpu() -> CpuInfo:
    machine = platform.machine().lower()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    model, isa = parse_cpuinfo(text, machine)
    return CpuInfo(
        model=model,
        arch=machine,
        physical_cores=psutil.cpu_count(logical=False),
        logical_cores=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        isa=isa,
    )


def detect_gpus() -> list[GpuInfo]:
    """NVIDIA GPUs through NVML (nvidia-ml-py); an empty list where there is no driver or package."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound / DriverNotLoaded: no usable NVIDIA GPU
        return []
    gpus = []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(
                GpuInfo(index, name, round(mem.total / GiB, 2), round(mem.free / GiB, 2), f"{major}.{minor}", driver)
            )
    finally:
        pynvml.nvmlShutdown()
    return gpus


def detect_jetson(root: Path = Path("/")) -> JetsonInfo | None:
    model_file = root / "proc/device-tree/model"
    release_file = root / "etc/nv_tegra_release"
    board = parse_device_tree_model(model_file.read_bytes()) if model_file.is_file() else ""
    if "jetson" not in board.lower() and not release_file.is_file():
        return None
    l4t = parse_l4t_release(release_file.read_text(errors="replace")) if release_file.is_file() else None
    info = JetsonInfo(board=board or "unknown Jetson", l4t=l4t, jetpack=jetpack_for_l4t(l4t))
    _jetson_power(info)
    return info


def _jetson_power(info: JetsonInfo) -> None:
    """Power mode and GPU clock through jtop when its service runs, else `nvpmodel -q`."""
    state = read_power_state()
    info.power = state
    info.power_mode, info.gpu_freq_mhz = state.label, state.gpu_freq_mhz
    if state.source != "none":
        info.source = state.source


def machine_record(host: HostInfo | None = None) -> dict[str, Any]:
    """The machine (this one unless `host` is given) as every measured figure records it: LUTs, deployment
    manifests, benchmark results. On a Jetson the power mode and clocks decide latency as much as the board
    does, so they are part of the record."""
    host = host or detect_host()
    j = host.jetson
    return {
        "kind": host.kind,
        "cpu": host.cpu.model,
        "cores": host.cpu.physical_cores,
        "threads": host.cpu.logical_cores,
        "memory_gb": host.memory_total_gb,
        "gpus": [g.name for g in host.gpus],
        "jetson": j.board if j else None,
        "l4t": j.l4t if j else None,
        "jetpack": j.jetpack if j else None,
        "power_mode": j.power_mode if j else None,
        "gpu_freq_mhz": j.gpu_freq_mhz if j else None,
        "jetson_clocks": j.power.jetson_clocks if j and j.power else None,
        "os": host.os,
    }


def detect_host(root: Path = Path("/")) -> HostInfo:
    """This machine; `root` moves where the Jetson files are read from (tests use recorded boards)."""
    cpu = detect_cpu()
    vm = psutil.virtual_memory()
    jetson = detect_jetson(root)
    gpus = [] if jetson else detect_gpus()
    kind: Literal["jetson", "gpu", "cpu"] = "jetson" if jetson else ("gpu" if gpus else "cpu")
    return HostInfo(
        kind=kind,
        hostname=socket.gethostname(),
        os=f"{platform.system()} {platform.release()}",
        cpu=cpu,
        memory_total_gb=round(vm.total / GiB, 2),
        memory_available_gb=round(vm.available / GiB, 2),
        gpus=gpus,
        jetson=jetson,
    )
