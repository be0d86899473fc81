"""edgekit.formats: every artifact's version, the upgrade steps that read older files, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.errors import IntegrityError
from edgekit.formats import CURRENT, STEPS, UNTAGGED_V1, recipe_identity, recipe_identity_v1, tag, upgrade


def test_every_older_version_has_a_step_to_the_next():
    for kind, current in CURRENT.items():
        for version in range(1, current):
            assert (kind, version) in STEPS, f"{kind}/{version} has no upgrade to {version + 1}"
    assert all(kind in CURRENT for kind, _ in STEPS)
    assert tag("edgekit-plan") == f"edgekit-plan/{CURRENT['edgekit-plan']}"


def test_newer_foreign_and_untagged_files_are_refused():
    with pytest.raises(IntegrityError, match="newer than this edgekit reads"):
        upgrade("edgekit-plan", {"format": "edgekit-plan/99"}, "plan x")
    with pytest.raises(IntegrityError, match="has format 'edgekit-lut/1'; this edgekit reads edgekit-plan/2"):
        upgrade("edgekit-plan", {"format": "edgekit-lut/1"}, "plan x")
    assert "edgekit-plan" not in UNTAGGED_V1  # plans were always tagged: an untagged one is not a plan
    with pytest.raises(IntegrityError, match="has format None"):
        upgrade("edgekit-plan", {"depth": {}}, "plan x")
    with pytest.raises(IntegrityError, match="not a JSON object"):
        upgrade("edgekit-plan", ["a list"], "plan x")


def test_old_plans_luts_and_tables_name_shapes_by_ffn_and_heads():
    """v1 plans offered coupled widths; v1 LUTs and v2 accuracy tables named shapes d30-w82."""
    geometry = {"num_layers": 30, "hidden": 576, "ffn": 1536, "num_heads": 9, "num_kv_heads": 3, "head_dim": 64,
                "vocab": 49152, "ffn_multiple": 64}  # fmt: skip
    plan = upgrade("edgekit-plan", {"format": "edgekit-plan/1", "width": {"method": "flap", "min_width": 17,
                                    "grid": [100, 82], "ffn_multiple": 64, "seconds": 1.0}}, "plan")  # fmt: skip
    assert plan["width"] == {"method": "flap", "grid": [100, 82], "ffn_multiple": 64, "seconds": 1.0, "ffn_floor": 25}
    lut = {"format": "edgekit-lut/1", "model": {"geometry": geometry}, "measured": [{"shape": "d30-w82"}],
           "predictor": {"fitted_on": ["d30-w100"]}, "validation": {"fitted_on": ["d30-w100"], "held_out": ["d24-w61"],
           "per_shape": {"d24-w61": {"decode_ms": 1.0}}}}  # fmt: skip
    new = upgrade("edgekit-lut", lut, "lut")
    assert new["measured"][0]["shape"] == "d30-f83-h2" and new["predictor"]["fitted_on"] == ["d30-f100-h3"]
    assert new["validation"]["held_out"] == ["d24-f62-h2"] and list(new["validation"]["per_shape"]) == ["d24-f62-h2"]
    table = {"format": "edgekit-accuracy/2", "shapes": {"d30-w48": {"ppl": 494.0}}}
    assert list(upgrade("edgekit-accuracy", table, "t", geometry=geometry)["shapes"]) == ["d30-f50-h1"]


def test_tag_only_upgrades_keep_the_content():
    old = {"name": "tiny", "files": {}}
    assert upgrade("edgekit-model", old, "model") == {**old, "format": "edgekit-model/2"}
    assert old == {"name": "tiny", "files": {}}  # the caller's dict is not changed


def test_deployment_1_keeps_the_shape_name_once_and_the_hash_itself():
    from edgekit.deployment.manifest import DeploymentManifest

    v2 = _manifest().to_dict()
    v1 = json.loads(json.dumps(v2))
    v1["format"] = "edgekit-deployment/1"
    v1["shape"]["name"] = v1["shape"]["shape"]
    v1["shape"]["weights_sha256"] = {"sha256": "ab" * 32, "size": 123}
    back = DeploymentManifest.from_dict(upgrade("edgekit-deployment", v1, "deployment"))
    assert back.shape.weights_sha256 == "ab" * 32 and back.shape.name == "d4-w67"
    assert back.format == "edgekit-deployment/2"


def test_train_state_1_of_the_same_recipe_resumes_and_of_another_does_not():
    recipe = {
        "plan": "p",
        "smol": {"rank": 4, "shared_rank": 0},
        "data": {"train": "a.txt", "chat": "", "chat_fraction": 0.0},
        "train": {"steps": 10, "anchor": 0.0, "lr": 1e-3},
        "eval": {"text": "x"},
    }
    v1 = {"step": 4, "recipe": recipe_identity_v1(recipe)}
    assert upgrade("edgekit-train-state", v1, "state", recipe=recipe)["recipe"] == recipe_identity(recipe)
    other = {**recipe, "smol": {"rank": 8, "shared_rank": 0}}
    moved = upgrade("edgekit-train-state", v1, "state", recipe=other)["recipe"]
    assert moved != recipe_identity(other) and moved != recipe_identity(recipe)
    # what may change between a run and its resume does not move the identity
    longer = {**recipe, "train": {**recipe["train"], "steps": 99}, "eval": {"text": "y"}}
    assert recipe_identity(longer) == recipe_identity(recipe)


def test_a_conversation_from_before_the_format_opens(tmp_path: Path):
    from edgekit.chat.store.conversations import FORMAT, Store

    store = Store(tmp_path)
    header = {"type": "meta", "id": "abc", "title": "old chat", "created": "2026-11-01T00:00:00+00:00",
              "system": None, "deployment": "tiny"}  # fmt: skip
    message = {"type": "message", "role": "user", "content": "hi", "time": "2026-11-01T00:00:01+00:00"}
    (tmp_path / "abc.jsonl").write_text(json.dumps(header) + "\n" + json.dumps(message) + "\n")
    conv = store.load("abc")
    assert conv.title == "old chat" and [m.content for m in conv.messages] == ["hi"]
    store.rename(conv, "renamed")  # a rewrite writes the current header
    assert json.loads((tmp_path / "abc.jsonl").read_text().splitlines()[0])["format"] == FORMAT
    newer = {**header, "id": "new", "format": "edgekit-conversation/99"}
    (tmp_path / "new.jsonl").write_text(json.dumps(newer) + "\n")
    assert [c.id for c in store.list()] == ["abc"]  # a newer edgekit's file is left alone, the rest open


def _manifest():
    from tiny import deployment_manifest

    return deployment_manifest("ort", "int4", "cpu")


def test_a_hashed_file_altered_with_its_mtime_put_back_is_still_caught(tmp_path, monkeypatch) -> None:
    """The hash cache is keyed by the file's stat: a byte flipped and os.utime() restoring the old mtime must
    not pass as the file already verified (the change time moves and cannot be set back)."""
    import os

    from edgekit.artifacts import sha256_cached, sha256_file

    monkeypatch.setenv("EDGEKIT_HOME", str(tmp_path / "home"))
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x00" * 4096)
    first = sha256_cached(path)
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_size == before.st_size
    assert sha256_cached(path) == sha256_file(path) != first


def test_an_unwritable_destination_is_refused_before_any_work(tmp_path, monkeypatch) -> None:
    import tempfile

    import pytest

    from edgekit.artifacts import check_writable
    from edgekit.errors import UsageError

    check_writable(tmp_path / "new" / "deeper" / "out")  # missing folders are made later: their parent counts
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is not a folder"):
        check_writable(tmp_path / "file" / "out")

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(UsageError, match="not writable \\(Read-only file system\\)"):
        check_writable(tmp_path / "out")
