"""Host detection (edgekit.hardware.host): cpuinfo, the L4T release and JetPack, a Jetson from its files."""

from __future__ import annotations

from pathlib import Path

from hardware_helpers import L4T_LINE

from edgekit.hardware.host import detect_jetson, jetpack_for_l4t, parse_cpuinfo, parse_l4t_release
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
