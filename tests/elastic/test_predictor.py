"""The accuracy predictor: its fit recovers known coefficients, its design covers the space, it is fitted
with every plan and refused for any other weights; `edgekit elastic predictor` fits and shows it."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekit.artifacts import SEAL, write_manifest
from edgekit.elastic import predictor as P
from edgekit.elastic.plan import load_plan
from edgekit.errors import IntegrityError
from edgekit.shapes import Shape


def test_fit_recovers_known_coefficients_and_reports_no_error(tiny_plan: Path):
    plan = load_plan(tiny_plan)
    truth = [3.0, 0.7, 0.1, 1.1, 3.0, 4.4, 1.9, 2.0, -0.5, 1.5, 0.6, -0.8]
    calls: list[str] = []

    def evaluate(shape: Shape) -> float:
        return math.exp(float(np.dot(truth, P.features(plan, shape))))

    fitted = P.build(plan, evaluate, {"file": "synthetic"}, held_out=10, on_shape=calls.append)
    assert np.allclose(fitted.coefficients, truth, atol=1e-2), fitted.coefficients
    v = fitted.validation
    assert v["n"] == 10 and v["median_pct"] < 1.0 and v["within_10_pct"] == 100.0 and v["spearman"] > 0.99
    # the design: corners, edge midpoints and centre of depth x FFN x heads, then 10 left out; none twice
    assert len(calls) == len(set(calls)) == 27 + 10 and set(v["held_out"]).isdisjoint(calls[:27])
    assert {"d6-f100-h3", "d3-f25-h1", "d6-f25-h1", "d3-f100-h3"} <= set(calls[:27])
    for shape in plan.space():
        assert fitted.predict(plan, shape) == pytest.approx(evaluate(shape), rel=2e-2)


def test_noisy_fit_reports_its_error_on_the_shapes_left_out(tiny_plan: Path):
    plan = load_plan(tiny_plan)
    rng = np.random.default_rng(0)
    noise = {s: float(rng.normal(0, 0.2)) for s in plan.space()}

    def evaluate(shape: Shape) -> float:
        return math.exp(2 + 3 * (1 - shape.ffn / 100) + noise[shape])

    v = P.build(plan, evaluate, {}, held_out=10).validation
    per = v["per_shape"]
    rel = sorted(abs(r["predicted"] - r["ppl"]) / r["ppl"] * 100 for r in per.values())
    assert v["median_pct"] == pytest.approx((rel[4] + rel[5]) / 2, abs=0.05)
    assert v["max_pct"] == pytest.approx(rel[-1], abs=0.05)
    assert 2 < v["median_pct"] < 40  # the noise is ±20 % in log space: neither zero nor wild


def test_the_weights_favour_the_useful_region():
    w = P.weights(np.log(np.array([20.0, 20 * math.e, 20 * math.e**3, 10.0])), math.log(20.0))
    assert list(np.round(w, 4)) == [1.0, 0.25, 0.0625, 1.0]


def test_every_plan_is_written_with_its_predictor(tiny_plan: Path, calib_text: Path, cli):
    from edgekit.elastic.source import Source

    source = Source.resolve(plan=str(tiny_plan))
    found = source.predictor()
    assert found is not None and found.identity["plan"] == load_plan(tiny_plan).permutations_sha256
    assert found.data["file"] == "calib.txt" and found.data["skip_tokens"] == 256  # past the calibrated tokens
    assert len(found.fitted_on) == 37 and found.validation["n"] == 10
    # an evaluation on the same text skips the predictor's tokens too; the predictor's own refit does not
    plan = load_plan(tiny_plan)
    assert plan.held_out_skip(calib_text) == 256 + 1024 and plan.held_out_skip(calib_text, past_predictor=False) == 256
    result = cli("elastic", "predictor", "--plan", str(tiny_plan), "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["coefficients"] == found.coefficients
    shown = cli("elastic", "predictor", "--plan", str(tiny_plan))
    assert "shapes left out" in shown.out and "rank correlation" in shown.out


def test_refit_on_another_text_and_refusals(tiny_plan: Path, calib_text: Path, tmp_path: Path, cli):
    plan_dir = tmp_path / "plan"
    shutil.copytree(tiny_plan, plan_dir)
    dev = tmp_path / "dev.txt"
    dev.write_text(calib_text.read_text()[::-1])
    result = cli("elastic", "predictor", "--plan", str(plan_dir), "--dev-text", str(dev), "--tokens", "600",
                 "--held-out", "12", "--json")  # fmt: skip
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["data"]["file"] == "dev.txt" and data["data"]["skip_tokens"] == 0 and data["data"]["tokens"] == 600
    assert data["validation"]["n"] == 12 and len(data["fitted_on"]) == 39
    short = tmp_path / "short.txt"
    short.write_text("too short")
    result = cli("elastic", "predictor", "--plan", str(plan_dir), "--dev-text", str(short))
    assert result.code == 2 and "an accuracy predictor reads 1,024" in result.err and "Traceback" not in result.err
    # a predictor fitted on other weights is refused where it is read, in one line
    stored = plan_dir / P.FILE
    bad = json.loads(stored.read_text())
    bad["identity"]["plan"] = "0" * 64
    stored.write_text(json.dumps(bad))  # an edit by hand breaks the seal
    with pytest.raises(IntegrityError, match="was altered after it was written"):
        P.load(plan_dir, load_plan(plan_dir))
    bad.pop(SEAL)
    write_manifest(stored, bad)  # sealed, but fitted on other weights
    with pytest.raises(IntegrityError, match="fitted for another plan or model"):
        P.load(plan_dir, load_plan(plan_dir))
    result = cli("elastic", "predictor", "--plan", str(plan_dir))
    assert result.code == 3 and "fitted for another plan or model" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_a_plan_without_enough_dev_text_is_written_with_a_note(tiny_gqa3_dir: Path, tmp_path: Path, cli):
    import tiny

    calib = tmp_path / "calib.txt"
    calib.write_text(tiny.CORPUS[:2000])  # about 1,000 tokens: enough to plan on, too few past them to fit on
    out = tmp_path / "plan"
    result = cli("elastic", "plan", "--model", str(tiny_gqa3_dir), "--calib", str(calib), "--out", str(out),
                 *tiny.TINY_PLAN_BUDGET)  # fmt: skip
    assert result.code == 0, result.err
    assert "no accuracy predictor" in result.out and "edgekit elastic predictor --plan" in result.out
    assert (out / "plan.json").is_file() and not (out / P.FILE).exists()
    none = cli("elastic", "plan", "--model", str(tiny_gqa3_dir), "--calib", str(calib), "--out", str(tmp_path / "n"),
               "--predictor-tokens", "0", *tiny.TINY_PLAN_BUDGET)  # fmt: skip
    assert none.code == 0 and "no accuracy predictor" not in none.out
