"""`edgekit elastic frontier --space` (edgekit.elastic.space): the whole space's predicted frontier, and
measured points along it, the coupled grid, depth only and width only."""

from __future__ import annotations

import json
from pathlib import Path

from edgekit.elastic.space import frontier_shapes, spread
from edgekit.shapes import Shape


def test_frontier_shapes_and_spread():
    shapes = [Shape(d, f, 3) for d in (3, 4) for f in (25, 50, 100)]
    x = {s: s.depth * s.ffn for s in shapes}
    y = {Shape(3, 25, 3): 9.0, Shape(3, 50, 3): 8.0, Shape(3, 100, 3): 5.0,
         Shape(4, 25, 3): 7.0, Shape(4, 50, 3): 6.0, Shape(4, 100, 3): 4.0}  # fmt: skip
    front = frontier_shapes(shapes, x.__getitem__, y.__getitem__)
    # x: d3-f25 75, d4-f25 100, d3-f50 150, d4-f50 200, d3-f100 300, d4-f100 400; d3-f50 (8.0) is dominated
    assert front == [Shape(3, 25, 3), Shape(4, 25, 3), Shape(4, 50, 3), Shape(3, 100, 3), Shape(4, 100, 3)]
    assert spread(front, 3) == [front[0], front[2], front[4]] and spread(front, 9) == front


def test_space_study_measures_every_line(tiny_plan: Path, calib_text: Path, tmp_path: Path, cli):
    png = tmp_path / "space.png"
    result = cli(
        "elastic", "frontier", "--space", "--plan", str(tiny_plan), "--text", str(calib_text), "--text-tokens", "200",
        "--max-length", "64", "--stride", "64", "--points", "4", "--png", str(png), "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["x"] == "params" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pred = data["predicted"]
    # the predicted frontier: bigger and better, every step
    assert all(a["x"] < b["x"] and a["ppl"] > b["ppl"] for a, b in zip(pred, pred[1:], strict=False))
    lines: dict[str, list[dict]] = {}
    for p in data["measured"]:
        lines.setdefault(p["label"], []).append(p)
        assert p["ppl"] > 1 and p["predicted_ppl"] > 1
    assert set(lines) == {"space", "coupled grid", "depth only", "width only"}
    assert {p["shape"] for p in lines["space"]} <= {p["shape"] for p in pred} and len(lines["space"]) == 4
    assert all(p["ffn"] == 100 and p["heads"] == 3 for p in lines["depth only"])
    assert all(p["depth"] == 6 for p in lines["width only"])
    assert len(lines["coupled grid"]) == 16
    # a network on two lines is evaluated once: the same figures
    by_shape: dict[str, set] = {}
    for p in data["measured"]:
        by_shape.setdefault(p["shape"], set()).add(p["ppl"])
    assert all(len(v) == 1 for v in by_shape.values())
    shown = cli(
        "elastic", "frontier", "--space", "--plan", str(tiny_plan), "--text", str(calib_text), "--text-tokens", "200",
        "--max-length", "64", "--stride", "64", "--points", "3",
    )  # fmt: skip
    assert shown.code == 0 and "coupled grid" in shown.out and "predicted frontier" in shown.out


def test_space_study_refuses_what_it_cannot_do(tiny_plan: Path, calib_text: Path, tmp_path: Path, cli):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_plan, bare)
    (bare / "accuracy-predictor.json").unlink()
    args = ["elastic", "frontier", "--space", "--text", str(calib_text)]
    r = cli(*args, "--plan", str(bare))
    assert r.code == 2 and "no accuracy predictor" in r.err and "edgekit elastic predictor" in r.err
    r = cli(*args, "--plan", str(tiny_plan), "--baselines", "shortgpt")
    assert r.code == 2 and "drop --shapes, --baselines" in r.err
    r = cli("elastic", "frontier", "--plan", str(tiny_plan), "--text", str(calib_text), "--target", "host")
    assert r.code == 2 and "go with --space" in r.err
