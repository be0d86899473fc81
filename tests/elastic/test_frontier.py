"""`edgekit elastic frontier` on the tiny plan: ours against derived baselines, table, JSON and PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def piqa(tmp_path: Path) -> tuple[Path, Path]:
    rows = [
        {"goal": "To get to Paris,", "sol1": "take the train.", "sol2": "eat the train."},
        {"goal": "A Jetson board", "sol1": "has unified memory.", "sol2": "has a cat."},
        {"goal": "Python is", "sol1": "a language.", "sol2": "a river."},
    ]
    jsonl = tmp_path / "mini.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    labels = tmp_path / "mini-labels.lst"
    labels.write_text("0\n0\n0\n")
    return jsonl, labels


def test_frontier_compares_ours_with_every_baseline(tiny_plan: Path, calib_text: Path, piqa, tmp_path: Path, cli):
    png = tmp_path / "frontier.png"
    result = cli(
        "elastic", "frontier", "--plan", str(tiny_plan), "--shapes", "d6-w100,d4-w100,d6-w50,d4-w50",
        "--baselines", "all", "--calib", str(calib_text), "--text", str(calib_text), "--text-tokens", "200",
        "--max-length", "64", "--stride", "64", "--mc", str(piqa[0]), "--labels", str(piqa[1]),
        "--png", str(png), "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    data = json.loads(result.out)
    by = {(p["label"], p["shape"]): p for p in data["points"]}
    ours = [k for k in by if k[0] == "amoeba/flap"]
    assert sorted(s for _, s in ours) == ["d4-f100-h3", "d4-f50-h2", "d6-f100-h3", "d6-f50-h2"]
    # depth baselines only below full depth, width baselines only below full width
    for method in ("shortgpt/flap", "angular/flap", "last/flap"):
        assert {s for lab, s in by if lab == method} == {"d4-f100-h3", "d4-f50-h2"}
    for method in ("amoeba/magnitude", "amoeba/activation"):
        assert {s for lab, s in by if lab == method} == {"d6-f50-h2", "d4-f50-h2"}
    for p in data["points"]:
        assert p["ppl"] > 1 and 0 <= p["acc"] <= 1 and 0 <= p["acc_norm"] <= 1
    # the calibration text was given for perplexity: only its held-out part is scored
    assert data["evaluation"]["skip_tokens"] == 256 + 1024  # and those its accuracy predictor was fitted on
    # "last" drops the deepest layers but keeps the final one: 0, 1, 2 and 5, unless the DP chose the same
    last, amoeba = by[("last/flap", "d4-f100-h3")], by[("amoeba/flap", "d4-f100-h3")]
    if last["layers"] == amoeba["layers"]:
        assert last["shared_with"] == "amoeba/flap" and last["ppl"] == amoeba["ppl"]
    else:
        assert last["layers"] == [0, 1, 2, 5]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_frontier_table_and_terminal_plot(tiny_plan: Path, calib_text: Path, cli):
    result = cli(
        "elastic", "frontier", "--plan", str(tiny_plan), "--shapes", "d6-w100,d3-w34",
        "--text", str(calib_text), "--text-tokens", "200", "--max-length", "64", "--stride", "64",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "accuracy vs size" in result.out and "d3-f25-h1" in result.out
    assert "non-embedding parameters" in result.out  # the plotext axis label


def test_frontier_baselines_need_the_calibration_text(tiny_plan: Path, calib_text: Path, tmp_path: Path, cli):
    result = cli("elastic", "frontier", "--plan", str(tiny_plan), "--baselines", "shortgpt", "--text", str(calib_text))
    assert result.code == 2 and "--calib" in result.err
    other = tmp_path / "other.txt"
    other.write_text(calib_text.read_text() + " more")
    result = cli(
        "elastic", "frontier", "--plan", str(tiny_plan), "--baselines", "shortgpt", "--calib", str(other),
        "--text", str(calib_text),
    )  # fmt: skip
    assert result.code == 2 and "same tokens" in result.err
