"""The shipped TrimLLM domain checkpoint (edgekit/data/checkpoints/smollm2-135m-pydoc): listed by name with its
kind and domain, its files verified, its plan a drop order of whole layers, its accuracy table on every depth.
No model weights are needed."""

from __future__ import annotations

import json

NAME = "smollm2-135m-pydoc"


def test_elastic_list_shows_the_domain_checkpoint(cli):
    r = cli("elastic", "list", "--json")
    assert r.code == 0, r.err
    rows = {row["name"]: row for row in json.loads(r.out)["checkpoints"]}
    assert rows[NAME]["kind"] == "domain" and rows[NAME]["domain"] == "pydoc/train.txt"
    assert rows[NAME]["origin"] == "shipped" and rows["smollm2-135m"]["kind"] == "general"


def test_its_files_verify_and_its_plan_is_the_drop_order():
    from edgekit.elastic.checkpoint import load_checkpoint

    ckpt = load_checkpoint(NAME)  # verifies every file against the manifest's hashes
    domain = ckpt.manifest["domain"]
    drops = [d["layer"] for d in domain["drops"]]
    assert domain["granularity"] == "layer" and len(drops) == 15 == len(set(drops))
    assert len(domain["sha256"]) == 64 and domain["calibration"]["tokens"] == 2048
    plan = ckpt.plan
    assert plan.depths == list(range(15, 31)) and not plan.depth.skips
    for k in range(1, 16):  # each depth is the one above it less the layer dropped next
        assert sorted(set(plan.layer_sets[31 - k]) - set(plan.layer_sets[30 - k])) == [drops[k - 1]]
    assert set(ckpt.accuracy["shapes"]) == {f"d{d}-f100-h3" for d in range(15, 31)}
    size = sum(p.stat().st_size for p in ckpt.path.rglob("*") if p.is_file())
    assert size < 20 * 2**20
