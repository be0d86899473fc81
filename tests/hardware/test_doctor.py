"""`edgekit doctor` (edgekit.hardware.doctor): its JSON report on this host, and on a recorded Jetson."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hardware_helpers import recording

from edgekit.hardware import jetson


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


def test_doctor_on_a_recorded_jetson(orin_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from edgekit.hardware.doctor import render, run_doctor

    monkeypatch.setattr(jetson, "read_jtop", lambda: recording("jtop-orin-nx-16gb-maxn.json"))
    report = run_doctor(benchmark=False, root=orin_root)
    j = report["host"]["jetson"]
    assert report["host"]["kind"] == "jetson" and j["board"].startswith("NVIDIA Jetson Orin NX")
    assert j["power_mode"] == "MAXN (mode 0)" and j["gpu_freq_mhz"] == 918.0
    ready = report["jetson_runtimes"]
    # this CPU machine has neither: MLC is not installed, and PyPI's onnxruntime has no CUDA provider
    assert ready["mlc"]["usable"] is False and "dustynv/mlc" in ready["mlc"]["detail"]
    assert ready["ort_cuda"]["usable"] is False and "CPUExecutionProvider" in ready["ort_cuda"]["detail"]
    console = Console(width=200, record=True)
    for block in render(report):
        console.print(block)
    text = console.export_text()
    for expected in ("Orin NX", "L4T 36.4.3 (JetPack 6.2)", "MAXN (mode 0), jetson_clocks off",
                     "918 MHz of 918 MHz max", "9.9 W (VDD_IN)", "MLC-LLM", "ORT CUDA", "jp6/cu126"):  # fmt: skip
        assert expected in text, (expected, text)
