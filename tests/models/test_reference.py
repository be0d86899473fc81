"""Model references (edgekit.models.reference): local folders, hub ids, unknown or unpulled names, memory check."""

from __future__ import annotations

import pytest
from models_helpers import _one_line_error

from edgekit.errors import ResourceError, UsageError
from edgekit.models import reference as modelref


def test_unknown_model_lists_known_names(cli, edgekit_home):
    _one_line_error(cli("models", "pull", "gpt-17"), 2, "unknown model 'gpt-17'", "smollm2-135m")
    _one_line_error(cli("generate", "hi", "--model", "gpt-17"), 2, "known models: smollm2-135m")


def test_not_pulled_model_says_how_to_pull(cli, edgekit_home):
    _one_line_error(cli("generate", "hi", "--model", "smollm2-135m"), 2, "edgekit models pull smollm2-135m")


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
