"""Target descriptors (edgekit.deployment.targets): published specs and aliases, and which one a host matches."""

from __future__ import annotations

import pytest

from edgekit.deployment.targets import get_target, load_targets, match_host
from edgekit.errors import UsageError
from edgekit.hardware.host import CpuInfo, GpuInfo, HostInfo, JetsonInfo


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


def test_a_host_lut_is_per_machine_including_its_vector_extensions() -> None:
    """Cloud VMs name one CPU model over hosts with and without AVX-512; a LUT measured on one must not be
    taken as measured on the other (the shipped host LUT was, and deploy then held a budget to the wrong ms)."""
    import dataclasses

    from edgekit.deployment.lut import find_lut, host_target_name

    avx2 = _host("cpu", 23.54)
    avx2 = dataclasses.replace(avx2, cpu=CpuInfo("AMD EPYC", "x86_64", 2, 2, ["AVX", "AVX2", "FMA", "F16C"]))
    avx512 = dataclasses.replace(avx2, cpu=dataclasses.replace(avx2.cpu, isa=[*avx2.cpu.isa, "AVX-512"]))
    assert host_target_name(avx2) != host_target_name(avx512)
    assert host_target_name(avx2) == host_target_name(dataclasses.replace(avx2, hostname="other"))
    # the shipped host LUT is the 2-core AVX2 VM's, and only that machine's
    assert find_lut(host_target_name(avx2), "ort", "smollm2-135m").status == "measured"
    assert find_lut(host_target_name(avx512), "ort", "smollm2-135m") is None
