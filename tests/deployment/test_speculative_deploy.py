"""`edgekit deploy --draft` (edgekit.deployment.speculation) on the tiny plan with a chat reference beside it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime_genai")


@pytest.fixture
def plan_with_prompts(tiny_plan: Path, tiny_gqa3_dir: Path, tiny_lut: Path, edgekit_home: Path,
                      tmp_path: Path) -> Path:  # fmt: skip
    """The tiny plan with the base model's replies to three prompts stored beside it (what speculation is
    measured on), and its measured LUT in place."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgekit.elastic.source import Source
    from edgekit.engines.torch_engine import TorchSession
    from edgekit.evaluation.chat import build_reference

    (edgekit_home / "luts").mkdir(parents=True, exist_ok=True)
    (edgekit_home / "luts" / tiny_lut.name).write_text(tiny_lut.read_text())
    folder = tmp_path / "plan"
    shutil.copytree(tiny_plan, folder)
    model = AutoModelForCausalLM.from_pretrained(tiny_gqa3_dir).eval()
    prompts = ["Where do edge devices run models?", "What is a list?", "Tell me about the sea."]
    ref = build_reference(TorchSession(model), AutoTokenizer.from_pretrained(tiny_gqa3_dir), prompts, 12, {})
    Source.resolve(plan=str(folder)).save_chat_reference(ref)
    return folder


@pytest.fixture
def reported_faster(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every pair is measured for real, then reported 3x faster than the verifier alone, so that the path that ships
    a draft runs on a host where speculation does not pay; the list collects the real speculative ms/token."""
    from edgekit.deployment import speculation

    real, seen = speculation.measure_pair, []

    def faster(*args, **kwargs):
        p = real(*args, **kwargs)
        seen.append(p.speculative_ms)
        p.speculative_ms = p.alone_ms / 3
        return p

    monkeypatch.setattr(speculation, "measure_pair", faster)
    return seen


def test_deploy_measures_the_draft_with_better_shapes_and_the_choice(cli, plan_with_prompts: Path,
                                                                     edgekit_home: Path) -> None:  # fmt: skip
    out = edgekit_home / "spec"
    r = cli("deploy", "--target", "host", "--budget", "99%", "--plan", str(plan_with_prompts), "--draft", "d3-w50",
            "--draft-k", "2", "--out", str(out), "--json")  # fmt: skip
    assert r.code == 0, r.err
    m = json.loads(r.out)
    tried = [n for n in m["notes"] if n.startswith("speculation: ")]
    assert tried and all("with draft d3-f50-h2 (k=2)" in n and "ms/token against" in n for n in tried)
    if m["speculation"] is None:  # the usual outcome on a CPU: the draft's passes cost more than they save
        assert not (out / "draft").exists() and any("shipped" in n and "without" in n for n in m["notes"])
    else:
        s = m["speculation"]["measured"]
        assert (out / "draft" / "genai_config.json").is_file() and s["identical"]
        assert s["verifier"] == m["shape"]["shape"] and s["speculative_ms"] <= m["budget"]["resolved"]["ms_per_token"]


def test_a_pair_within_the_budget_ships_with_its_draft_and_replies_as_the_verifier(
    plan_with_prompts: Path, edgekit_home: Path, reported_faster: list[float], cli
) -> None:
    """The pair's speed is measured for real, then reported 3x faster, so that the path that ships a draft runs on
    a host where speculation does not pay: the draft's build, the final re-measurement, the folder, the load."""
    from edgekit.deployment.budget import parse_budget
    from edgekit.deployment.manifest import open_deployment
    from edgekit.deployment.pipeline import DeployRequest, deploy
    from edgekit.engines import Sampling, get_engine
    from edgekit.engines.base import timed_stream
    from edgekit.speculative import SpeculativeSession

    seen = reported_faster
    out = edgekit_home / "spec"
    # fp32: a random tiny model's flat distributions are full of near-ties, where int4's chunk and one-token
    # kernels may round to different tokens (deploy then ships no draft: the test above allows for it)
    req = DeployRequest(target="host", budget=parse_budget("100%"), plan=str(plan_with_prompts), out=out,
                        draft="d3-w50", k=3, precision="fp32")  # fmt: skip
    dep = deploy(req)
    spec = dep.manifest.speculation
    assert spec is not None and spec["draft"] == "d3-f50-h2" and spec["k"] == 3 and all(x > 0 for x in seen)
    assert spec["measured"]["verifier"] == dep.shape and spec["measured"]["identical"] is True
    assert 0 <= spec["measured"]["acceptance"] <= 1 and spec["measured"]["tokens_per_pass"] >= 1
    assert "draft/genai_config.json" in dep.manifest.files and "with draft d3-f50-h2" in dep.manifest.figure
    manifest, session, tokenizer = open_deployment(out)
    assert isinstance(session, SpeculativeSession) and session.k == 3
    ids = [5, 17, 42, 99, 7]
    greedy = Sampling(max_new_tokens=16, min_new_tokens=16)
    alone = get_engine("ort").open(out / "model")
    assert list(session.stream(ids, greedy)) == timed_stream(alone, ids, greedy)[0]
    r = cli("generate", "--deployment", str(out), "Where do edge devices run models?", "--max-new-tokens", "6",
            "--json")  # fmt: skip
    assert r.code == 0, r.err and json.loads(r.out)["new_tokens"] >= 1
    # the draft is hashed with the rest: altered, the deployment is refused
    onnx = out / "draft" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\0")
    r = cli("generate", "--deployment", str(out), "hi")
    assert r.code == 3 and "does not match" in r.err


def test_draft_refusals(cli, plan_with_prompts: Path, tiny_plan: Path, edgekit_home: Path) -> None:
    base = ["deploy", "--target", "host", "--budget", "99%", "--plan", str(plan_with_prompts), "--dry-run"]
    for extra, message in [
        (["--draft", "d3-w50", "--draft-k", "0"], "--draft-k must be 1 to"),
        (["--draft", "d6-w100"], "must be a smaller shape than the full model"),
        (["--draft", "d3-w50", "--runtime", "llamacpp"], "--draft runs in ort, tvm, torch"),
        (["--draft-k", "3"], "pass --draft too"),
        (["--draft", "d3-w50", "--adaptive"], "not --adaptive"),
    ]:
        r = cli(*base, *extra)
        assert r.code == 2 and message in r.err and "Traceback" not in r.err, (extra, r.err)
    r = cli("deploy", "--target", "host", "--budget", "99%", "--plan", str(tiny_plan), "--dry-run", "--draft", "d3-w50")
    assert r.code == 2 and "has none" in r.err
    r = cli(*base, "--draft", "d3-w50", "--json")
    assert r.code == 0, r.err
    assert any("alone and with the draft (k=4)" in s for s in json.loads(r.out)["steps"])


def test_profile_measures_each_draft_and_k_and_deploy_auto_picks_from_it(cli, plan_with_prompts: Path,
                                                                          edgekit_home: Path) -> None:  # fmt: skip
    from edgekit.deployment.lut import read_lut

    args = ["profile", "--target", "host", "--plan", str(plan_with_prompts), "--shapes", "d6-w100,d3-w50",
            "--fit-on", "d6-w100,d3-w50", "--runs", "1", "--new-tokens", "4", "--prompt-lens", "8",
            "--drafts", "d3-w50", "--ks", "1,3"]  # fmt: skip
    r = cli(*args, "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    spec = data["provenance"]["speculation"]
    assert spec["verifier"] == "d6-f100-h3" and spec["identity"].startswith("plan:")
    assert spec["verifier_options"]["accuracy_level"] == "0"  # int4 on a CPU: see VERIFIER_OPTIONS
    rows = {(x["draft"], x["k"]): x for x in spec["rows"]}
    assert set(rows) == {("d3-f50-h2", 1), ("d3-f50-h2", 3)}
    for x in rows.values():
        assert x["alone_ms"] > 0 and x["speculative_ms"] > 0 and 0 <= x["acceptance"] <= 1
        assert abs(x["speedup"] - x["alone_ms"] / x["speculative_ms"]) < 1e-2 and x["tokens_per_pass"] >= 1
    assert read_lut(Path(data["path"])).provenance["speculation"]["rows"] == spec["rows"]
    best = max((x for x in rows.values() if x["identical"]), key=lambda x: x["speedup"])
    r = cli("deploy", "--target", "host", "--budget", "99%", "--plan", str(plan_with_prompts), "--draft", "auto",
            "--dry-run", "--json")  # fmt: skip
    assert r.code == 0, r.err
    notes = json.loads(r.out)["notes"]
    if best["speedup"] > 1:
        assert any(f"--draft auto: {best['draft']} at k={best['k']}" in n for n in notes)
    else:
        assert any("is no faster; deployed without a draft" in n for n in notes)
    r = cli("profile", "--target", "host", "--plan", str(plan_with_prompts), "--quick", "--drafts", "d3-w50",
            "--ks", "two")  # fmt: skip
    assert r.code == 2 and "--ks takes comma-separated integers" in r.err
    r = cli("profile", "--target", "host", "--plan", str(plan_with_prompts), "--quick", "--drafts", "d3-w50",
            "--ks", "0,2")  # fmt: skip
    assert r.code == 2 and "--ks takes k from 1 to 16, not '0,2'" in r.err


def test_deploy_draft_auto_needs_a_profiled_table(cli, plan_with_prompts: Path) -> None:
    r = cli("deploy", "--target", "host", "--budget", "99%", "--plan", str(plan_with_prompts), "--draft", "auto",
            "--dry-run")  # fmt: skip
    assert r.code == 2 and "profile --drafts" in r.err and "Traceback" not in r.err


def test_a_torch_deployment_ships_its_draft_as_a_slice_of_the_verifier(
    plan_with_prompts: Path, edgekit_home: Path, reported_faster: list[float]
) -> None:
    """In torch the shipped draft is a few lines saying which of the verifier's layers and channels it keeps:
    opened, it reads the verifier's tensors (no second copy) and the replies are the verifier's own."""
    from edgekit.deployment.budget import parse_budget
    from edgekit.deployment.manifest import open_deployment
    from edgekit.deployment.pipeline import DeployRequest, deploy
    from edgekit.engines import Sampling
    from edgekit.speculative.slice import own_bytes

    out = edgekit_home / "spec-torch"
    req = DeployRequest(target="host", budget=parse_budget("100%"), plan=str(plan_with_prompts), out=out,
                        draft="d3-w50", k=3, runtime="torch", precision="fp32")  # fmt: skip
    dep = deploy(req)
    spec = dep.manifest.speculation
    assert spec is not None and spec["weights"] == "a slice of the verifier's" and spec["measured"]["identical"]
    assert "draft/edgekit-slice.json" in dep.manifest.files
    assert not any(f.startswith("draft/") and f.endswith(".safetensors") for f in dep.manifest.files)
    manifest, session, tokenizer = open_deployment(out)
    # only the query heads it keeps fewer of (h2 of the verifier's h3) are gathered into its own q and o
    layers = session.draft_model.model.layers
    gathered = sum((b.self_attn.q_proj.weight.numel() + b.self_attn.o_proj.weight.numel()) * 4 for b in layers)
    assert own_bytes(session.draft_model, session.target.model) == gathered
    ids = [5, 17, 42, 99, 7]
    greedy = Sampling(max_new_tokens=16, min_new_tokens=16)
    assert list(session.stream(ids, greedy)) == list(session.target.stream(ids, greedy))
    assert session.stats.drafted > 0


def test_a_tvm_int4_deployment_ships_its_draft_as_a_library_on_the_verifiers_arrays(
    plan_with_prompts: Path, edgekit_home: Path, reported_faster: list[float]
) -> None:
    """In TVM int4 the shipped draft is its library and which of the verifier's layers it runs: opened, it holds
    the verifier's arrays (calibrated ones, though it was measured on the trial build's) and replies as the
    verifier alone."""
    pytest.importorskip("tvm")
    from edgekit.deployment.budget import parse_budget
    from edgekit.deployment.manifest import open_deployment
    from edgekit.deployment.pipeline import DeployRequest, deploy
    from edgekit.engines import Sampling

    out = edgekit_home / "spec-tvm"
    req = DeployRequest(target="host", budget=parse_budget("100%"), plan=str(plan_with_prompts), out=out,
                        draft="d3-f50-h3", k=3, runtime="tvm", precision="int4")  # fmt: skip
    dep = deploy(req)
    spec = dep.manifest.speculation
    assert spec is not None and spec["weights"] == "a slice of the verifier's" and spec["measured"]["identical"]
    assert "draft/model.so" in dep.manifest.files and "draft/edgekit-slice.json" in dep.manifest.files
    assert "draft/params.safetensors" not in dep.manifest.files
    manifest, session, tokenizer = open_deployment(out)
    assert all(any(p is v for v in session.target._params) for p in session.draft_model._params)
    greedy = Sampling(max_new_tokens=16, min_new_tokens=16)
    for ids in ([5, 17, 42, 99, 7], [9, 9, 30]):
        assert list(session.stream(ids, greedy)) == list(session.target.stream(ids, greedy))
    assert session.stats.drafted > 0
