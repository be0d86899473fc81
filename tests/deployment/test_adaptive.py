"""`edgekit deploy --adaptive` on the tiny plan: a router's menu built, its policy calibrated to the budget, each
reply routed to one shape; and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime_genai")

MENU = "d3-f50-h2,d4-f75-h3,d6-f100-h3"


@pytest.fixture(scope="module")
def router_dir(tiny_plan: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A router for the tiny plan's menu, fitted by the real `edgekit elastic router` command."""
    from edgekit.cli import main

    topics = ["France", "Python", "a Jetson board", "latency", "memory", "a language model", "the capital"]
    folder = tmp_path_factory.mktemp("adaptive")
    prompts = folder / "prompts.jsonl"
    rows = [{"prompt": f"Tell me about {topics[i % 7]}, item {i}." + " Please." * (i % 5)} for i in range(400)]
    prompts.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = folder / "router"
    try:
        main(["elastic", "router", "--plan", str(tiny_plan), "--prompts", str(prompts), "--menu", MENU,
              "--max-prompts", "14", "--out", str(out), "--json"])  # fmt: skip
    except SystemExit as exc:
        assert exc.code in (0, None)
    return out


def test_adaptive_deploy_spends_the_budget_and_routes_each_reply(
    cli, tiny_plan: Path, tiny_lut: Path, router_dir: Path, edgekit_home: Path
) -> None:
    (edgekit_home / "luts").mkdir(parents=True, exist_ok=True)
    (edgekit_home / "luts" / tiny_lut.name).write_text(tiny_lut.read_text())
    out = edgekit_home / "adaptive"
    # the tiny model's shapes differ little in speed (a CI runner measured its fastest at 82 % of the full model),
    # so the budget leaves room for that and the policy still has to mix shapes to spend it
    r = cli("deploy", "--target", "host", "--plan", str(tiny_plan), "--budget", "95%", "--adaptive", "--router",
            str(router_dir), "--out", str(out), "--json")  # fmt: skip
    assert r.code == 0, r.err
    m = json.loads(r.out)
    a = m["adaptive"]
    assert [e["shape"] for e in a["menu"]] == MENU.split(",")
    assert a["calibration"]["mean_ms"] <= a["budget_ms"] + 1e-9
    assert sum(a["calibration"]["shares"].values()) == pytest.approx(1.0, abs=1e-3)
    used = [e for e in a["menu"] if e["folder"]]
    assert used and all(e["share"] > 0 for e in used) and all((out / e["folder"] / "genai_config.json").is_file()
                                                               for e in used)  # fmt: skip
    assert a["router"]["router_sha256"] and (out / "router" / "router.json").is_file()
    assert a["memory_mb"] > 0 and any(f.startswith("router/") for f in m["files"])
    # one reply, routed: the shape that made it is one the deployment holds
    r = cli("chat", str(out), "--prompt", "Tell me about France.", "--max-new-tokens", "6", "--json")
    assert r.code == 0, r.err
    reply = json.loads(r.out)
    assert reply["shape"] in {e["shape"] for e in used}
    # a budget under what the fastest menu shape can do is refused, naming it
    r = cli("deploy", "--target", "host", "--plan", str(tiny_plan), "--budget", "1%", "--adaptive", "--router",
            str(router_dir), "--out", str(edgekit_home / "too-fast"))  # fmt: skip
    assert r.code == 2 and "Traceback" not in r.err
    # a router file altered after the deployment was made is refused at load
    router_json = out / "router" / "router.json"
    router_json.write_text(router_json.read_text().replace('"prompts"', '"prompts" ', 1))
    r = cli("chat", str(out), "--prompt", "hi", "--max-new-tokens", "2")
    assert r.code == 3 and "router" in r.err


def test_a_router_from_another_source_is_refused(router_dir: Path) -> None:
    from edgekit.errors import IntegrityError
    from edgekit.routing import router as router_io

    other = {"checkpoint": "another", "smol_sha256": None, "plan": "0" * 64}
    with pytest.raises(IntegrityError, match="was fitted on checkpoint"):
        router_io.load(router_dir, other)


def test_router_refusals_are_one_line(cli, tiny_plan: Path, router_dir: Path, tmp_path: Path) -> None:
    r = cli("elastic", "router", "--plan", str(tiny_plan), "--prompts", str(tmp_path / "none.jsonl"),
            "--menu", "d3-f50-h2,d99-f100-h3")  # fmt: skip
    assert r.code == 2 and "d99-f100-h3" in r.err and "Traceback" not in r.err
    r = cli("elastic", "router", "--plan", str(tiny_plan), "--menu", "d3-f50-h2")
    assert r.code == 2 and "--prompts" in r.err
    r = cli("elastic", "router", "--plan", str(tiny_plan), "--prompts", str(tmp_path / "none.jsonl"),
            "--menu", "d3-f50-h2")  # fmt: skip
    assert r.code == 2 and "at least two shapes" in r.err
    r = cli("deploy", "--target", "host", "--plan", str(tiny_plan), "--budget", "80%", "--router", str(router_dir))
    assert r.code == 2 and "--adaptive" in r.err
    r = cli("elastic", "router", "--show", str(router_dir), "--json")
    assert r.code == 0 and json.loads(r.out)["menu"] == MENU.split(",")
