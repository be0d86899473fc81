from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.deployment.targets import get_target, load_targets, match_host
from edgekit.errors import UsageError
from edgekit.hardware.host import (
    CpuInfo,
    GpuInfo,
    HostInfo,
    JetsonInfo,
    detect_jetson,
    jetpack_for_l4t,
    parse_cpuinfo,
    parse_l4t_release,
)
from edgekit.hardware.jetson import parse_nvpmodel_query

ORIN_CPUINFO = """processor\t: 0
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd42
CPU revision\t: 1
"""
XEON_CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512_vnni avx512_bf16 amx_tile
"""
L4T_LINE = (
    "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025"
)


def test_doctor_json_schema_on_this_host(cli):
    result = cli("doctor", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    host = report["host"]
    assert host["kind"] in ("cpu", "gpu", "jetson")
    assert host["cpu"]["logical_cores"] >= 1 and host["cpu"]["model"]
    assert 0 < host["memory_available_gb"] <= host["memory_total_gb"]
    measured = report["measured"]
    for key, unit in (("memory_bandwidth", "GB/s"), ("matmul", "GFLOP/s")):
        assert measured[key]["unit"] == unit
        assert measured[key]["value"] > 0 and measured[key]["runs"] >= 5
    names = {r["name"] for r in report["runtimes"]}
    assert names == {"ort", "torch", "mlc", "llamacpp", "tvm"}
    torch_rt = next(r for r in report["runtimes"] if r["name"] == "torch")
    assert torch_rt["installed"] and "cpu" in torch_rt["offers"]
    if host["kind"] == "cpu":
        assert report["target"]["matched"] == "host-cpu"
        assert measured["device"] == "cpu"


def test_cpuinfo_parsing_arm_and_x86():
    model, isa = parse_cpuinfo(ORIN_CPUINFO, "aarch64")
    assert model == "Arm Cortex-A78AE"
    assert isa[0] == "NEON" and "DOTPROD" in isa and "FP16" in isa
    model, isa = parse_cpuinfo(XEON_CPUINFO, "x86_64")
    assert model.startswith("Intel(R) Xeon")
    assert {"AVX2", "AVX-512", "AVX-512-VNNI", "AMX"} <= set(isa)
    _, isa = parse_cpuinfo("flags : sse4_2 avx avx2 fma\n", "x86_64")
    assert "AVX-512" not in isa and "AVX2" in isa


def test_l4t_and_jetpack():
    assert parse_l4t_release(L4T_LINE) == "36.4.3"
    assert jetpack_for_l4t("36.4.3") == "6.2"
    assert jetpack_for_l4t("36.4.0") == "6.1"
    assert jetpack_for_l4t("35.4.1") == "5.1.2"
    assert jetpack_for_l4t("99.1") is None
    assert parse_l4t_release("garbage") is None
    assert parse_nvpmodel_query("NV Power Mode: MAXN\n0\n") == "MAXN (mode 0)"
    assert parse_nvpmodel_query("NV Power Mode: 15W\n") == "15W"


def test_detect_jetson_from_recorded_files(tmp_path: Path):
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson Orin NX Engineering Reference Developer Kit\x00")
    (tmp_path / "etc/nv_tegra_release").write_text(L4T_LINE + "\n")
    info = detect_jetson(tmp_path)
    assert info is not None
    assert info.board.startswith("NVIDIA Jetson Orin NX") and info.l4t == "36.4.3" and info.jetpack == "6.2"
    assert detect_jetson(tmp_path / "nothing-here") is None


def _host(kind: str, memory: float, board: str | None = None, gpu: str | None = None) -> HostInfo:
    cpu = CpuInfo("test", "aarch64" if board else "x86_64", 8, 8, [])
    return HostInfo(
        kind=kind,
        hostname="h",
        os="Linux",
        cpu=cpu,
        memory_total_gb=memory,
        memory_available_gb=memory / 2,
        gpus=[GpuInfo(0, gpu, 24.0, 23.0, "8.9")] if gpu else [],
        jetson=JetsonInfo(board, "36.4.3", "6.2") if board else None,
    )


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (_host("jetson", 15.3, board="NVIDIA Jetson Orin NX Engineering Reference Developer Kit"), "orin-nx-16gb"),
        (_host("jetson", 7.4, board="NVIDIA Jetson Orin NX Engineering Reference Developer Kit"), "orin-nx-8gb"),
        (_host("jetson", 7.4, board="NVIDIA Jetson Orin Nano Developer Kit"), "orin-nano-8gb"),
        (_host("jetson", 61.4, board="Jetson AGX Orin Developer Kit"), "agx-orin-64gb"),
        (_host("gpu", 64, gpu="NVIDIA GeForce RTX 4090"), "rtx-4090"),
        (_host("gpu", 128, gpu="NVIDIA H100 80GB HBM3"), "h100"),
        (_host("gpu", 32, gpu="NVIDIA GeForce RTX 3060"), None),
        (_host("cpu", 16), "host-cpu"),
    ],
)
def test_target_matching(host: HostInfo, expected: str | None):
    matched = match_host(host)
    assert (matched.name if matched else None) == expected


def test_targets_have_published_specs_and_aliases():
    targets = {t.name: t for t in load_targets()}
    required = {"orin-nx-16gb", "orin-nx-8gb", "orin-nano-8gb", "agx-orin-64gb", "rtx-4090", "rtx-a5000", "h100"}
    assert required <= set(targets)
    for name in required:
        assert targets[name].memory["bandwidth_gbs"] > 0 and targets[name].runtimes
    assert get_target("orin").name == "orin-nx-16gb"
    assert [r["runtime"] for r in targets["orin-nx-16gb"].runtimes] == ["mlc", "ort"]
    with pytest.raises(UsageError, match="orin-nx-16gb \\(alias orin"):
        get_target("tpu-v9")
