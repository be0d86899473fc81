"""A Jetson's power state (edgekit.hardware.jetson): jtop recordings, nvpmodel, setting the power mode."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from hardware_helpers import recording

from edgekit.errors import ResourceError, UsageError
from edgekit.hardware import jetson
from edgekit.hardware.host import detect_jetson, machine_record
from edgekit.hardware.jetson import parse_jtop, parse_nvpmodel_mode, record_jtop, set_power_mode
from edgekit.shell import Command, Result


def test_jtop_recording_with_nvpmodel_gpu_and_vdd_in() -> None:
    state = parse_jtop(recording("jtop-orin-nx-16gb-maxn.json"))
    assert state.source == "jtop" and state.label == "MAXN (mode 0)"
    assert state.models == ["MAXN", "10W", "15W", "25W"]
    # jtop reports clocks in kHz
    assert (state.gpu_freq_mhz, state.gpu_min_mhz, state.gpu_max_mhz) == (918.0, 306.0, 918.0)
    assert state.gpu_load_pct == 71.3 and state.gpu_governor == "nvhost_podgov"
    assert state.jetson_clocks is False
    assert state.total_mw == 9876 and state.total_rail == "VDD_IN"
    assert [(r.name, r.power_mw, r.volt_mv, r.curr_ma) for r in state.rails] == [
        ("VDD_CPU_GPU_CV", 4316, 4984, 866),
        ("VDD_SOC", 1890, 4984, 379),
    ]


def test_jtop_recording_with_stats_only() -> None:
    state = parse_jtop(recording("jtop-orin-nano-8gb-15w.json"))
    assert state.mode == "15W" and state.mode_id is None and state.label == "15W"
    assert state.gpu_freq_mhz is None and state.gpu_load_pct == 88.0
    assert state.jetson_clocks is True
    assert state.total_mw == 4532 and state.total_rail == "sum of rails"


def test_not_a_recording_is_refused() -> None:
    with pytest.raises(UsageError, match="not a jtop recording"):
        parse_jtop({"stats": {}})


class _Gpu(dict):
    """jtop's GPU object reads like a dict of GPUs (jtop/core/gpu.py)."""


def test_record_jtop_copies_a_live_object_into_the_parsed_layout() -> None:
    src = recording("jtop-orin-nx-16gb-maxn.json")
    stats = dict(src["stats"], time=dt.datetime(2025, 3, 14, 10, 21, 7), uptime=dt.timedelta(days=2, seconds=11045))
    live = SimpleNamespace(
        stats=stats,
        gpu=_Gpu(src["gpu"]),
        power=src["power"],
        nvpmodel=SimpleNamespace(id=2, name="15W", models=["MAXN", "10W", "15W", "25W"]),
        jetson_clocks=True,
    )
    rec = record_jtop(live)
    json.dumps(rec)  # plain JSON: the datetime and timedelta became text
    assert rec["stats"]["uptime"] == "2 days, 3:04:05"
    state = parse_jtop(rec)
    assert state.label == "15W (mode 2)" and state.jetson_clocks is True and state.gpu_freq_mhz == 918.0


def test_nvpmodel_query_parsing() -> None:
    assert parse_nvpmodel_mode("NV Power Mode: MAXN\n0\n") == ("MAXN", 0)
    assert parse_nvpmodel_mode("NVPM WARN: ...\nNV Power Mode: 15W\n2\n") == ("15W", 2)
    assert parse_nvpmodel_mode("NV Power Mode: 25W\n") == ("25W", None)
    assert parse_nvpmodel_mode("nvpmodel: command not found") == (None, None)


def test_read_power_state_falls_back_to_nvpmodel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jetson, "read_jtop", lambda: None)
    seen: list[tuple[str, ...]] = []

    def fake_capture(cmd: Command, timeout: float = 60.0) -> Result:
        seen.append(cmd.argv)
        return Result(0, "NV Power Mode: 15W\n2\n", "")

    monkeypatch.setattr("edgekit.shell.capture", fake_capture)
    state = jetson.read_power_state()
    assert seen == [("nvpmodel", "-q")]
    assert state.source == "nvpmodel" and state.label == "15W (mode 2)" and state.rails == []


def test_set_power_mode_through_nvpmodel(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[tuple[str, ...]] = []

    def ok(cmd: Command) -> Result:
        runs.append(cmd.argv)
        return Result(0, "", "")

    monkeypatch.setattr(jetson.os, "geteuid", lambda: 1000)
    assert set_power_mode(2, ["MAXN", "10W", "15W", "25W"], run=ok, use_jtop=False) == "nvpmodel"
    assert runs == [("sudo", "nvpmodel", "-m", "2")]
    monkeypatch.setattr(jetson.os, "geteuid", lambda: 0)
    set_power_mode(0, run=ok, use_jtop=False)
    assert runs[-1] == ("nvpmodel", "-m", "0")  # root needs no sudo


def test_set_power_mode_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="power mode 7 does not exist on this board; it has 0: MAXN, 1: 10W"):
        set_power_mode(7, ["MAXN", "10W"], use_jtop=False)
    reboot = Result(0, "NVPM WARN: Reboot required for changing to this power mode: 3\n", "")
    with pytest.raises(ResourceError, match="needs a reboot"):
        set_power_mode(3, run=lambda cmd: reboot, use_jtop=False)
    denied = Result(1, "", "sudo: a password is required\n")
    with pytest.raises(ResourceError, match="could not set power mode 1 .*a password is required"):
        set_power_mode(1, run=lambda cmd: denied, use_jtop=False)


def test_detect_jetson_reads_power_through_jtop(orin_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jetson, "read_jtop", lambda: recording("jtop-orin-nx-16gb-maxn.json"))
    info = detect_jetson(orin_root)
    assert info is not None and info.l4t == "36.4.3" and info.jetpack == "6.2"
    assert info.power_mode == "MAXN (mode 0)" and info.gpu_freq_mhz == 918.0 and info.source == "jtop"
    assert info.power is not None and info.power.total_rail == "VDD_IN"


def test_power_mode_is_part_of_the_machine_record(orin_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What LUT provenance and a verified deployment's manifest record about the machine."""
    from edgekit.hardware.host import detect_host

    monkeypatch.setattr(jetson, "read_jtop", lambda: recording("jtop-orin-nano-8gb-15w.json"))
    record = machine_record(detect_host(orin_root))
    assert record["kind"] == "jetson" and record["l4t"] == "36.4.3" and record["jetpack"] == "6.2"
    assert record["power_mode"] == "15W" and record["jetson_clocks"] is True
    json.dumps(record)
