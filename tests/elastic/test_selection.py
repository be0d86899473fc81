"""Building a plan (edgekit.elastic.selection, .depth): depth selection per method, and `elastic plan`'s refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from elastic_helpers import _no_partials
from tiny import TINY_PLAN_BUDGET

from edgekit.elastic.depth import dp_calls, select_depth
from edgekit.elastic.model import ElasticModel


def _ids(n: int = 2, t: int = 24, vocab: int = 300, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method", ["amoeba", "shortgpt", "angular", "last"])
def test_depth_selection_gives_a_valid_set_per_depth(tiny, method):
    config, state, _ = tiny
    model = ElasticModel.from_hf_state(config, state).eval()
    calls = []
    plan = select_depth(model, _ids(2, 32, seed=3), method=method, min_depth=2, on_call=lambda: calls.append(1))
    assert sorted(plan.layer_sets) == [2, 3, 4]
    for depth, kept in plan.layer_sets.items():
        assert len(kept) == depth and kept == sorted(set(kept)) and 0 in kept
        assert 3 in kept or method == "last"  # the literal drop-last baseline is the one that drops it
        assert plan.scores[depth] > 1
    if method == "amoeba":
        assert plan.scorer_calls == dp_calls(4, 2, {0, 3}) == len(calls) + 1
        # DP keeps the better of the two candidates at every step, so its depth-3 choice is the
        # best single removal among the allowed layers (an exhaustive check on 2 candidates).
        full = ElasticModel.from_hf_state(config, state).eval()
        ids = _ids(2, 32, seed=3)
        from edgekit.elastic.depth import Calibration

        calib = Calibration(full, ids)
        best = min((1, 2), key=lambda r: calib.perplexity(calib.run_from(0, {r})))
        assert plan.layer_sets[3] == sorted({0, 1, 2, 3} - {best})


def test_calibration_text_too_short(tiny_gqa3_dir: Path, tmp_path: Path, cli):
    short = tmp_path / "short.txt"
    short.write_text("Paris is the capital of France.")
    out = tmp_path / "plan"
    result = cli("elastic", "plan", "--model", str(tiny_gqa3_dir), "--calib", str(short), "--out", str(out),
                 *TINY_PLAN_BUDGET)  # fmt: skip
    assert result.code == 2
    assert "has" in result.err and "tokens; the budget needs 256" in result.err
    assert not out.exists() and _no_partials(tmp_path)


def test_unsupported_architecture_names_the_supported_ones(tiny_gqa3_dir: Path, calib_text: Path, tmp_path: Path, cli):
    other = tmp_path / "gpt2ish"
    shutil.copytree(tiny_gqa3_dir, other)
    config = json.loads((other / "config.json").read_text())
    config.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (other / "config.json").write_text(json.dumps(config))
    result = cli("elastic", "plan", "--model", str(other), "--calib", str(calib_text), "--out", str(tmp_path / "p"))
    assert result.code == 2
    assert "unsupported architecture GPT2LMHeadModel" in result.err and "LlamaForCausalLM" in result.err
