"""`edgekit deploy` (edgekit.deployment.pipeline) on the tiny plan: choose, compile, verify, step down, refuse."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime_genai")


def r_notes(result) -> list[str]:
    return json.loads(result.out)["notes"]


def _use_lut(lut: Path, home: Path) -> None:
    (home / "luts").mkdir(parents=True, exist_ok=True)
    (home / "luts" / lut.name).write_text(lut.read_text())


def test_deploy_picks_fits_compiles_verifies_and_chats(
    cli, tiny_plan: Path, tiny_lut: Path, edgekit_home: Path
) -> None:
    from edgekit.deployment.lut import read_lut
    from edgekit.shapes import Shape

    _use_lut(tiny_lut, edgekit_home)
    lut = read_lut(tiny_lut)
    full = lut.predict(Shape(6, 100, 3)).decode_ms
    out = edgekit_home / "dep"
    r = cli("deploy", "--target", "host", "--budget", "99%", "--plan", str(tiny_plan), "--out", str(out), "--json")
    assert r.code == 0, r.err
    m = json.loads(r.out)
    chosen = m["shape"]["shape"]
    assert chosen != "d6-f100-h3"  # 99 % of the full model's latency rules the full model out
    fitting = [c for c in m["candidates"] if c["fits"]]
    assert all(c["decode_ms"] <= 0.99 * full + 1e-9 for c in fitting)
    # the whole space was searched, ranked by the plan's accuracy predictor: the chosen one is the best
    # predicted perplexity that fits (unless a measurement moved it), and it is on the frontier
    assert m["search"]["shapes"] == m["search"]["space"] == 48 == len(m["candidates"])
    assert m["accuracy"]["source"] == "predictor" and m["accuracy"]["metric"] == "ppl"
    best = min(fitting, key=lambda c: c["score"])
    assert chosen == best["shape"] or m["stepped_down_from"] or m["stepped_up"]
    frontier = [c for c in m["candidates"] if c["frontier"]]
    assert best in frontier and all(
        not (o["decode_ms"] < c["decode_ms"] and o["score"] < c["score"]) for c in frontier for o in m["candidates"]
    )
    assert m["lut"]["status"] == "measured" and m["measured"]["decode_ms"] > 0
    assert m["runtime"]["name"] == "ort" and m["runtime"]["precision"] == "int4"
    # measured on a round-to-nearest build of the same graph; the shape shipped is built again with GPTQ
    assert set(m["timings"]) == {"extract_s", "compile_s", "verify_s", "final_compile_s"}
    build = m["runtime"]["build"]
    assert build["quantization"]["method"] == "gptq" and build["measured_on"]["options"]["quant"] == "rtn"
    assert (out / "model" / "genai_config.json").is_file() and "manifest.json" not in m["files"]
    assert "model/model.onnx" in m["files"]
    r = cli("generate", "--deployment", str(out), "Where do edge devices run models?", "--max-new-tokens", "8",
            "--json")  # fmt: skip
    assert r.code == 0, r.err
    reply = json.loads(r.out)
    assert reply["shape"] == chosen and 1 <= reply["new_tokens"] <= 8
    # a deployment altered after the fact is refused, naming the file
    data = out / "model" / "model.onnx.data"
    target = data if data.exists() else out / "model" / "model.onnx"
    target.write_bytes(target.read_bytes()[:-1] + b"\0")
    r = cli("generate", "--deployment", str(out), "hi")
    assert r.code == 3 and "does not match" in r.err and "Traceback" not in r.err


def test_relative_budget_on_an_estimated_lut_is_held_to_the_measured_full_model(
    cli, tiny_plan: Path, tiny_lut: Path, edgekit_home: Path
) -> None:
    # a reference LUT from "another machine" whose recorded bandwidth makes this host look 4x faster than it is:
    # a budget of 99 % resolved from that estimate would be a quarter of what the full model really takes here
    data = json.loads(tiny_lut.read_text())
    data.pop("sealed_sha256")  # edited by hand, as a user would: an unsealed LUT is read as written
    data["target"] = "host-0ther"
    data["provenance"]["bandwidth_gbs"] /= 4
    (edgekit_home / "luts").mkdir(parents=True, exist_ok=True)
    (edgekit_home / "luts" / "host-0ther.ort-int4-cpu.tiny.json").write_text(json.dumps(data))
    out = edgekit_home / "dep-est"
    r = cli("deploy", "--target", "host", "--budget", "99%", "--plan", str(tiny_plan), "--out", str(out), "--json")
    assert r.code == 0, r.err
    m = json.loads(r.out)
    assert m["lut"]["status"] == "estimated"
    full = m["budget"]["full_model_measured"]
    assert full["decode_ms"] > 2 * full["predicted_decode_ms"]  # the estimate was about 4x optimistic
    # each shape is held to 99 % of the full model measured beside it (before and after it: the drift cancels)
    reference = full.get("beside_shipped_ms", full["decode_ms"])
    assert m["budget"]["resolved"]["ms_per_token"] == pytest.approx(0.99 * reference, rel=1e-2)
    if m["shape"]["shape"] != "d6-f100-h3":
        assert "beside_shipped_ms" in full
        assert any("the full model measured" in n and "beside each shape tried" in n for n in r_notes(r))
    # held to the measured budget: it met it, or it is the fastest shape that was tried
    assert m["measured"]["decode_ms"] <= m["budget"]["resolved"]["ms_per_token"] or m["stepped_down_from"]


def test_a_relative_budget_nothing_is_predicted_to_fit_is_measured_before_refusing(
    cli, tiny_plan: Path, tiny_lut: Path, edgekit_home: Path
) -> None:
    data = json.loads(tiny_lut.read_text())
    data.pop("sealed_sha256")
    data["target"] = "host-0ther"  # another machine's LUT: on this one it is an estimate
    (edgekit_home / "luts").mkdir(parents=True, exist_ok=True)
    (edgekit_home / "luts" / "host-0ther.ort-int4-cpu.tiny.json").write_text(json.dumps(data))
    args = ["deploy", "--target", "host", "--plan", str(tiny_plan), "--dry-run", "--json", "--allow-degraded"]
    r = cli(*args, "--budget", "5%")
    assert r.code == 0, r.err
    fastest = min(json.loads(r.out)["candidates"], key=lambda c: c["decode_ms"])
    assert json.loads(r.out)["shape"] == fastest["shape"]
    assert any("is measured to find out" in n for n in r_notes(r))
    # an absolute budget is refused on the prediction as before, in one line
    r = cli(*args, "--budget", "0.0001ms")
    assert r.code == 2 and "no shape fits the budget" in r.err and len(r.err.strip().splitlines()) == 1


def test_deploy_refuses_bad_input_in_one_line(cli, tiny_plan: Path, tiny_lut: Path, edgekit_home: Path) -> None:
    _use_lut(tiny_lut, edgekit_home)
    base = ["deploy", "--plan", str(tiny_plan)]
    r = cli(*base, "--target", "moon", "--budget", "40ms")
    assert r.code == 2 and "unknown target 'moon'" in r.err and "orin" in r.err
    r = cli(*base, "--target", "host", "--budget", "soon")
    assert r.code == 2 and "cannot read budget term" in r.err
    r = cli(*base, "--target", "host", "--budget", "0.0001ms")
    fastest = r"no shape fits .*the fastest, d\d+-f\d+-h\d+, is predicted at [\d.]+ ms/token"
    assert r.code == 2 and re.search(fastest, r.err)
    r = cli(*base, "--target", "host", "--budget", "mem<1MB")
    assert r.code == 2 and "smallest takes" in r.err
    (edgekit_home / "exists").mkdir()
    r = cli(*base, "--target", "host", "--budget", "100%", "--out", str(edgekit_home / "exists"))
    assert r.code == 2 and "--force" in r.err
    r = cli("generate", "--deployment", str(edgekit_home / "nowhere"), "hi")
    assert r.code == 2 and "no deployment" in r.err
    for line in (r.err,):
        assert line.count("\n") <= 1


def test_deploy_steps_down_when_the_measurement_misses(tiny_plan: Path, tiny_lut: Path, edgekit_home: Path) -> None:
    """A LUT that promises far too much: every chosen shape misses when measured, so deploy steps down."""
    from edgekit.deployment.budget import parse_budget
    from edgekit.deployment.lut import read_lut, save_lut
    from edgekit.deployment.pipeline import MAX_STEP_DOWNS, DeployRequest, deploy
    from edgekit.elastic.plan import load_plan

    lut = read_lut(tiny_lut)
    lut.predictor = lut.predictor.scaled(0.001, 1.0)
    save_lut(lut)
    # twice the fastest (scaled) prediction: several shapes fit on paper, none when measured; taken from
    # the predictions, not the measurements, so a noisy fit on a loaded machine cannot leave none fitting
    predicted = sorted(lut.predict(s).decode_ms for s in load_plan(tiny_plan).space())
    assert predicted[-1] < min(m.decode_ms for m in lut.measured) / 2
    budget = parse_budget(f"{predicted[MAX_STEP_DOWNS] * 1.01:.6f}ms")
    dep = deploy(DeployRequest(target="host", budget=budget, plan=str(tiny_plan), out=edgekit_home / "d"))
    stepped = dep.manifest.stepped_down_from
    assert len(stepped) == MAX_STEP_DOWNS and all("measured" in s["why"] for s in stepped)
    assert any("stepping down" in n for n in dep.notes) and any("missed the budget" in n for n in dep.notes)
    assert dep.shape not in {s["shape"] for s in stepped}
    assert not dep.manifest.stepped_up  # every measurement missed: nothing to step up from


def test_deploy_steps_up_when_the_measurement_is_well_under_the_budget(
    tiny_plan: Path, tiny_lut: Path, edgekit_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A LUT that predicts every shape 6x slower than it runs: the first choice measures far under the budget,
    so deploy tries better shapes at the speed it measured, and keeps the last one that met the budget."""
    from edgekit.deployment.budget import parse_budget
    from edgekit.deployment.lut import read_lut, save_lut
    from edgekit.deployment.pipeline import MAX_STEP_UPS, DeployRequest, deploy
    from edgekit.elastic.source import Source

    lut = read_lut(tiny_lut)
    lut.predictor = lut.predictor.scaled(6.0, 1.0)
    save_lut(lut)
    source = Source.resolve(plan=str(tiny_plan))
    space = source.plan.space()
    assert all(lut.predict(source.plan.shape(m.shape)).decode_ms > 3 * m.decode_ms for m in lut.measured)
    # just under the prediction of the shape expected to be best: on paper it does not fit, in truth it does
    # (the best of those whose 90 % still leaves some shape fitting: a LUT measured on a busy machine can
    # make the full model look as fast as the smallest)
    fastest = min(lut.predict(s).decode_ms for s in space)
    scores = source.ranking(space).scores
    best = min((s for s in space if 0.9 * lut.predict(s).decode_ms > 1.05 * fastest), key=lambda s: scores[s.name])
    budget = parse_budget(f"{0.9 * lut.predict(best).decode_ms:.6f}ms")
    dep = deploy(DeployRequest(target="host", budget=budget, plan=str(tiny_plan), out=edgekit_home / "up"))
    m = dep.manifest
    ups = m.stepped_up
    assert 1 <= len(ups) <= MAX_STEP_UPS and not m.stepped_down_from
    rank = {c.shape: i for i, c in enumerate(m.candidates)}  # best first
    first = ups[0]["from"]
    assert next(c for c in m.candidates if c.shape == first).fits  # the first choice fitted on paper
    for up in ups:
        assert rank[up["shape"]] < rank[up["from"]] and up["measured_decode_ms"] > 0
    kept = [u["shape"] for u in ups if u["kept"]]
    assert dep.shape == (kept[-1] if kept else first)
    assert m.measured.decode_ms <= m.budget.resolved.ms_per_token
    assert any("stepped up" in n for n in dep.notes)
    from edgekit.cli.deploy import show  # what the command prints after steps up, ending with the folder

    show(dep)
    printed = capsys.readouterr().out
    assert "stepped up" in printed and f"deployment: {dep.path}" in printed


def test_estimated_target_deploys_without_verifying(cli, tiny_plan: Path, tiny_lut: Path, edgekit_home: Path) -> None:
    _use_lut(tiny_lut, edgekit_home)
    out = edgekit_home / "orin"
    r = cli("deploy", "--target", "orin", "--budget", "100%", "--plan", str(tiny_plan), "--out", str(out), "--json")
    assert r.code == 0, r.err
    m = json.loads(r.out)
    assert m["lut"]["status"] == "estimated" and m["measured"] is None
    assert m["target"]["name"] == "orin-nx-16gb" and m["runtime"]["device"] == "cuda"
    assert any("ESTIMATED" in n for n in m["notes"]) and any("mlc" in n for n in m["notes"])
    r = cli("profile", "--target", "orin", "--plan", str(tiny_plan))
    assert r.code == 2 and "--estimate" in r.err
    r = cli("profile", "--target", "orin", "--plan", str(tiny_plan), "--estimate", "--json")
    assert r.code == 0 and json.loads(r.out)["status"] == "estimated"
    r = cli("targets", "--json")
    rows = {row["name"]: row for row in json.loads(r.out)}
    assert any("estimated" in x for x in rows["orin-nx-16gb"]["luts"])


def test_dry_run_shows_the_mlc_commands_for_orin_and_writes_nothing(
    cli, tiny_plan: Path, tiny_lut: Path, edgekit_home: Path
) -> None:
    import importlib.util

    _use_lut(tiny_lut, edgekit_home)
    out = edgekit_home / "orin-mlc"
    args = ["deploy", "--target", "orin", "--runtime", "mlc", "--budget", "100%", "--plan", str(tiny_plan), "--out",
            str(out)]  # fmt: skip
    r = cli(*args, "--dry-run", "--json")
    assert r.code == 0, r.err
    m = json.loads(r.out)
    rt = m["runtime"]
    assert m["dry_run"] and (rt["name"], rt["precision"], rt["device"]) == ("mlc", "q4f16_1", "cuda")
    assert rt["build"]["options"] == {"arch": "sm_87", "host": "aarch64"}
    steps = m["steps"]
    assert steps[0].startswith(f"extract {m['shape']}") and steps[-1] == f"write {out}"
    assert [s.split()[3] for s in steps[1:4]] == ["convert_weight", "gen_config", "compile"]
    assert '"arch":"sm_87"' in steps[3] and "aarch64-linux-gnu" in steps[3] and "<tmp>/model/lib.so" in steps[3]
    assert not out.exists()
    r = cli(*args, "--dry-run")
    assert r.code == 0 and "dry run: would cut" in r.out and "mlc_llm compile" in r.out
    if importlib.util.find_spec("mlc_llm") is None:  # the real thing needs MLC: say where to get it
        r = cli(*args)
        assert r.code == 4 and "jetson-containers" in r.err and "Traceback" not in r.err and not out.exists()


def test_deploy_dry_run_on_tvm_int4(cli, tiny_plan: Path, tiny_lut: Path, edgekit_home: Path) -> None:
    pytest.importorskip("tvm")
    _use_lut(tiny_lut, edgekit_home)
    args = ["deploy", "--target", "host", "--runtime", "tvm", "--precision", "int4", "--budget", "100%", "--plan",
            str(tiny_plan), "--dry-run", "--json"]  # fmt: skip
    r = cli(*args)
    assert r.code == 0, r.err
    m = json.loads(r.out)
    assert (m["runtime"]["name"], m["runtime"]["precision"]) == ("tvm", "int4")
    assert any("4-bit groups" in s for s in m["steps"])
    r = cli(*args[:-1], "--option", "block_size=48")
    assert r.code == 2 and "groups are 32 or 64" in r.err and "Traceback" not in r.err


def test_python_api_is_the_same_deploy(tiny_plan: Path, tiny_lut: Path, edgekit_home: Path) -> None:
    import edgekit
    from edgekit.deployment.manifest import load_deployment

    _use_lut(tiny_lut, edgekit_home)
    dep = edgekit.deploy("orin", "100%", out=edgekit_home / "api", plan=str(tiny_plan))
    assert dep.path == edgekit_home / "api" and load_deployment(dep.path).shape.name == dep.shape
    assert dep.manifest.target.name == "orin-nx-16gb" and dep.candidates[0].fits
    from edgekit.errors import UsageError

    with pytest.raises(UsageError, match="budget"):
        edgekit.deploy("orin", "fast", plan=str(tiny_plan))


def test_deploy_holds_the_best_fit_to_a_quality_floor(
    cli, tiny_plan: Path, tiny_lut: Path, edgekit_home: Path, tmp_path: Path
) -> None:
    import shutil

    from edgekit.deployment.choose import FLOOR
    from edgekit.elastic.predictor import TERMS, save
    from edgekit.elastic.source import Source

    _use_lut(tiny_lut, edgekit_home)
    # a random tiny model's shapes are all about as bad as each other: give its plan a predictor that says
    # every cut costs (log ppl rises with the depth score squared, the FFN and the heads removed), as a real one does
    plan_dir = tmp_path / "plan"
    shutil.copytree(tiny_plan, plan_dir)
    source = Source.resolve(plan=str(plan_dir))
    predictor = source.predictor()
    slopes = {"1": 3.0, "D^2": 1.0, "u": 2.0, "v": 2.0}
    predictor.coefficients = [slopes.get(t, 0.0) for t in TERMS]
    save(predictor, plan_dir)
    args = ["deploy", "--target", "host", "--budget", "99%", "--plan", str(plan_dir), "--no-verify"]
    out = edgekit_home / "refused"
    r = cli(*args, "--floor", "1", "--out", str(out))
    assert r.code == 2 and "below the quality floor" in r.err and "Traceback" not in r.err
    # the full model is the only shape at 1x: the cheapest budget that clears a floor of 1 is all of it
    assert "cheapest budget that clears it" in r.err and "(100% of the full model), for d6-f100-h3" in r.err
    assert "--allow-degraded" in r.err and len(r.err.strip().splitlines()) == 1 and not out.exists()
    r = cli(*args, "--floor", "1", "--allow-degraded", "--out", str(out), "--json")
    assert r.code == 0, r.err
    m = json.loads(r.out)
    assert m["accuracy"]["degraded"] and m["accuracy"]["ratio"] > 1 and m["accuracy"]["floor"] == 1
    assert any("warning" in n and "quality floor" in n for n in m["notes"])
    # at the default floor the best shape that fits 99 % is well within it: nothing to say
    r = cli(*args, "--out", str(edgekit_home / "fine"), "--json")
    assert r.code == 0, r.err
    m = json.loads(r.out)
    assert m["accuracy"]["floor"] == FLOOR and not m["accuracy"]["degraded"] and 1 < m["accuracy"]["ratio"] <= FLOOR
    assert not any("quality floor" in n for n in m["notes"])
    for bad in ("abc", "0.5", "inf"):
        r = cli(*args, "--floor", bad)
        assert r.code == 2 and "--floor must be a number" in r.err and len(r.err.strip().splitlines()) == 1


def test_deploy_a_domain_checkpoint_picks_one_of_its_depths_by_domain_perplexity(
    cli, tiny_plan: Path, tiny_lut: Path, calib_text: Path, edgekit_home: Path, tmp_path: Path
) -> None:
    from edgekit.elastic.recipe import load_recipe
    from edgekit.elastic.train import train
    from edgekit.elastic.trim import finish_trim, prepare_trim

    _use_lut(tiny_lut, edgekit_home)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is a list?\nHow do I open a file?\nWhat is a dict?\n")
    recipe = load_recipe(None, [f"plan={tiny_plan}", f"data.train={calib_text}", "data.seq_len=32",
                                f"eval.chat_prompts={prompts}", "eval.chat_limit=3", "eval.chat_tokens=6",
                                "train.batch_size=2", "train.steps=6", "train.warmup=1", "train.shapes_per_step=3",
                                "smol.gated=false", "smol.rank=2", "trim.depth=3", "trim.interval=2",
                                "trim.calibration_tokens=64", f"eval.text={calib_text}", "eval.window=64",
                                f"eval.domain_text={calib_text}", "eval.text_max_tokens=256"])  # fmt: skip
    trimmer = prepare_trim(recipe, tmp_path / "run", resume=False)
    train(trimmer)
    ckpt = finish_trim(trimmer, 0, evaluate=True, half=False).checkpoint
    r = cli("deploy", "--target", "host", "--budget", "90%", "--elastic", str(ckpt), "--no-verify",
            "--allow-degraded", "--out", str(edgekit_home / "dom"), "--json")  # fmt: skip
    assert r.code == 0, r.err
    m = json.loads(r.out)
    assert m["accuracy"]["metric"] == "domain_ppl" and m["accuracy"]["source"] == "accuracy-table"
    assert {c["shape"] for c in m["candidates"]} == {"d6-f100-h3", "d5-f100-h3", "d4-f100-h3", "d3-f100-h3"}
    assert m["shape"]["shape"] in {"d5-f100-h3", "d4-f100-h3", "d3-f100-h3"}
    # ranked by its domain, held to the floor on its chat: the table measured chat_ppl at every depth
    table = json.loads((ckpt / "accuracy.json").read_text())["shapes"]
    want = table[m["shape"]["shape"]]["chat_ppl"] / table["d6-f100-h3"]["chat_ppl"]
    assert m["accuracy"]["floor_on"]["chat_ppl"] == pytest.approx(want, rel=1e-3)
    assert m["accuracy"]["degraded"] == (want > m["accuracy"]["floor"])
    assert any(n.startswith("quality floor held on elastic checkpoint's accuracy table (chat_ppl") for n in m["notes"])
    r = cli("deploy", "--target", "host", "--budget", "90%", "--elastic", str(ckpt), "--no-verify", "--floor", "1",
            "--dry-run", "--json")  # fmt: skip
    if want > 1:  # refused on its chat, whatever its domain ratio
        assert r.code == 2 and "the full model's chat_ppl, below the quality floor" in r.err, r.err
        assert "domain_ppl" not in r.err and "Traceback" not in r.err
    else:
        assert r.code == 0 and json.loads(r.out)["shape"] == m["shape"]["shape"], r.err
    assert (edgekit_home / "dom" / "model" / "genai_config.json").is_file()
    narrow = cli("elastic", "extract", "--elastic", str(ckpt), "--shape", "d4-f50-h2", "--out", str(tmp_path / "x"))
    assert narrow.code == 2 and "depths 3..6 at full width" in narrow.err


def test_serve_a_deployment_through_its_own_runtime_and_refuse_a_broken_one(
    cli, tiny_plan: Path, tiny_lut: Path, edgekit_home: Path
) -> None:
    import os
    import socket
    import subprocess
    import sys
    import time

    openai = pytest.importorskip("openai")
    _use_lut(tiny_lut, edgekit_home)
    out = edgekit_home / "served"
    r = cli("deploy", "--target", "host", "--budget", "99%", "--plan", str(tiny_plan), "--no-verify", "--out", str(out))
    assert r.code == 0, r.err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "EDGEKIT_HOME": str(edgekit_home)}
    argv = [sys.executable, "-m", "edgekit", "serve", str(out), "--port", str(port)]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        deadline = time.time() + 120
        while True:
            try:
                served = client.models.list().data[0].id
                break
            except openai.APIConnectionError:
                assert proc.poll() is None and time.time() < deadline, "the server did not come up"
                time.sleep(0.2)
        manifest = json.loads((out / "manifest.json").read_text())
        assert served.endswith(":" + manifest["shape"]["shape"])
        stream = client.chat.completions.create(model=served, messages=[{"role": "user", "content": "Hello"}],
                                                max_tokens=6, temperature=0, stream=True)  # fmt: skip
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert isinstance(text, str)
    finally:
        proc.terminate()
        logged = proc.communicate(timeout=30)[1]
    assert "serving" in logged and "POST /v1/chat/completions 200" in logged and "ms/token" in logged
    target = next(p for p in (out / "model").iterdir() if p.suffix in (".data", ".onnx"))
    target.write_bytes(target.read_bytes()[:-1] + b"\0")
    r = cli("serve", str(out), "--port", str(port))
    assert r.code == 3 and "does not match" in r.err and len(r.err.strip().splitlines()) == 1
