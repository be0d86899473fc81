"""The build-option search (edgekit.deployment.option_search, `profile --search-options`): the fastest build at
equal quality, measured in interleaved rounds, recorded in the LUT and used by deploy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from edgekit.deployment.option_search import Trial, candidates, interleaved, pick, threads_candidates
from edgekit.errors import UsageError


def _trial(ms: float, ppl: float, **options: str) -> Trial:
    return Trial(options, ppl, 1.0, ms, [ms], 0.0)


def test_pick_takes_the_fastest_build_within_the_tolerance():
    default, cheap_but_worse, fast_enough = _trial(8.0, 10.0), _trial(5.0, 10.5, b="128"), _trial(6.0, 10.1, b="64")
    assert pick([default, cheap_but_worse, fast_enough], 0.02) is fast_enough
    assert not cheap_but_worse.within and cheap_but_worse.quality_ratio == pytest.approx(1.05)
    assert pick([default, cheap_but_worse, fast_enough], 0.10) is cheap_but_worse
    # nothing faster within the tolerance: the default stays
    assert pick([_trial(8.0, 10.0), _trial(7.0, 11.0, b="128")], 0.02).options == {}


def test_timing_rounds_are_interleaved_with_the_order_rotated():
    order: list[int] = []
    got = interleaved(lambda i: order.append(i) or float(i), 3, 2)
    assert order == [0, 1, 2, 1, 2, 0] and got == [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]


def test_only_runtimes_with_build_options_are_searched():
    assert candidates("ort", "int4", "cpu")[0] == {"block_size": "32", "accuracy_level": "4"}  # the default first
    assert len(candidates("ort", "int4", "cpu")) == 6 + len(threads_candidates(candidates("ort", "int4", "cpu")[0]))
    # the default build with half the physical cores per operator, where that is fewer than all
    assert threads_candidates({"block_size": "32"}, 8) == [{"block_size": "32", "intra_op_num_threads": "4"}]
    assert threads_candidates({"block_size": "32"}, 1) == []
    # SmolLM2's 576-wide hidden state takes blocks of 32 and 64, not 128
    assert {c["block_size"] for c in candidates("ort", "int4", "cpu", [64, 576, 1536])} == {"32", "64"}
    assert candidates("tvm", "int4", "cpu", [96, 160]) == [{"block_size": "32"}]  # 96 is not whole groups of 64
    assert candidates("tvm", "int4", "cpu")[0] == {"block_size": "32"}
    with pytest.raises(UsageError, match="knows ONNX Runtime GenAI's int4 builds"):
        candidates("llamacpp", "q4_1", "cpu")
    with pytest.raises(UsageError, match="no build options to search for tvm fp32"):
        candidates("tvm", "fp32", "cpu")


def test_profile_searches_builds_records_the_winner_and_deploy_builds_with_it(
    cli, tiny_plan: Path, edgekit_home: Path
) -> None:
    pytest.importorskip("onnxruntime_genai")
    from edgekit.deployment.lut import read_lut
    from edgekit.deployment.pipeline import searched_options

    r = cli("profile", "--target", "host", "--plan", str(tiny_plan), "--shapes", "d6-w100,d3-w100", "--fit-on",
            "d6-w100,d3-w100", "--runs", "1", "--new-tokens", "4", "--prompt-lens", "8", "--search-options",
            "--search-rounds", "2", "--json")  # fmt: skip
    assert r.code == 0, r.err
    lut = read_lut(Path(json.loads(r.out)["path"]))
    search = lut.provenance["option_search"]
    trials = search["trials"]
    # the tiny model's 96-wide hidden state takes 32-column blocks only: accuracy levels 4 and 0 remain, and the
    # default build with half the physical cores per operator (on a host with more than one)
    threads = threads_candidates(candidates("ort", "int4", "cpu")[0])
    assert [t["options"] for t in trials] == candidates("ort", "int4", "cpu", [96]) and len(trials) == 2 + len(threads)
    assert any("block_size=64 skipped" in n for n in search["notes"])
    assert all(math.isfinite(t["ppl"]) and t["ppl"] > 1 and len(t["rounds_ms"]) == 2 for t in trials)
    assert trials[0]["quality_ratio"] == 1.0 and search["text"]["tokens"] > 0
    within = [t for t in trials if t["quality_ratio"] <= 1 + search["tolerance"]]
    assert search["winner"] == min(within, key=lambda t: t["decode_ms"])["options"]
    # the shapes were measured as deploy will build them, and deploy takes the winner (--option still wins)
    assert lut.provenance["options"] == search["winner"] == searched_options(lut)
    dry = cli("deploy", "--target", "host", "--plan", str(tiny_plan), "--budget", "100%", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    assert json.loads(dry.out)["runtime"]["build"]["options"] == search["winner"]
    forced = cli("deploy", "--target", "host", "--plan", str(tiny_plan), "--budget", "100%", "--dry-run", "--json",
                 "--option", "block_size=16")  # fmt: skip
    assert json.loads(forced.out)["runtime"]["build"]["options"]["block_size"] == "16"
