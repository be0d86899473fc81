"""`--model` everywhere: a cache name, a local Hugging Face folder or a hub id, resolved the same way."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil

from edgekit.errors import ResourceError, UsageError, first_line
from edgekit.models.registry import find_model, known_models
from edgekit.models.store import entry_dir, read_entry
from edgekit.models.weights import check_config, weight_files

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
GiB = 1024**3


@dataclass
class ModelRef:
    kind: Literal["cache", "local", "hub"]
    source: str  # what from_pretrained takes: a folder path or a hub id
    name: str

    @property
    def path(self) -> Path | None:
        return Path(self.source) if self.kind != "hub" else None


def resolve(ref: str) -> ModelRef:
    spec = find_model(ref)
    if spec is not None:
        folder = entry_dir(spec.name)
        if not folder.exists():
            raise UsageError(f"model '{spec.name}' is not pulled yet: run `edgekit models pull {spec.name}`")
        read_entry(folder, verify=True)
        return ModelRef("cache", str(folder), spec.name)
    path = Path(ref).expanduser()
    if path.exists():
        if path.is_dir() and (path / "config.json").is_file():
            return ModelRef("local", str(path.resolve()), path.name)
        if path.suffix == ".gguf":
            raise UsageError(
                f"{path} is a GGUF file: convert it first with `edgekit models pull`, "
                "or point --model at a Hugging Face folder"
            )
        raise UsageError(f"{path} is not a Hugging Face model folder (no config.json)")
    if HUB_ID.match(ref):
        return ModelRef("hub", ref, ref)
    names = ", ".join(s.name for s in known_models())
    raise UsageError(f"unknown model '{ref}'; known models: {names}; or give a local folder or a hub id (org/name)")


def check_fits_memory(folder: Path, factor: float = 1.2) -> None:
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    have = psutil.virtual_memory().available
    if size * factor > have:
        raise ResourceError(
            f"model too large for memory: {folder.name} needs about {size * factor / GiB:.1f} GB, "
            f"{have / GiB:.1f} GB available"
        )


def load(ref: str | ModelRef, dtype: Any = None, device: str = "cpu") -> tuple[Any, Any, ModelRef]:
    """Model (eval mode) and tokenizer from safetensors only; refuses pickled checkpoints."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    model_ref = ref if isinstance(ref, ModelRef) else resolve(ref)
    if model_ref.path is not None:
        from edgekit.elastic.extract import SUBNET_MANIFEST, read_subnet

        if (model_ref.path / SUBNET_MANIFEST).is_file():  # a shape edgekit cut: held to its manifest
            read_subnet(model_ref.path)
        check_config(model_ref.path)
        check_fits_memory(model_ref.path)
        weight_files(model_ref.path)  # refuses a folder with pickled weights only
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_ref.source)
        model = AutoModelForCausalLM.from_pretrained(
            model_ref.source, dtype=dtype or torch.float32, use_safetensors=True
        )
    except OSError as exc:
        where = "the Hugging Face hub" if model_ref.kind == "hub" else model_ref.source
        raise ResourceError(f"could not load '{model_ref.name}' from {where}: {first_line(exc)}") from None
    return model.to(device).eval(), tokenizer, model_ref


HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]


def local_folder(model_ref: ModelRef) -> Path:
    """A folder holding the model's files: the cache or local folder itself, or a hub snapshot."""
    if model_ref.path is not None:
        return model_ref.path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_ref.source, allow_patterns=HUB_PATTERNS))
    except Exception as exc:  # offline, unknown repo, gated: the hub client raises many types
        where = f"could not fetch '{model_ref.source}' from the Hugging Face hub"
        raise ResourceError(f"{where}: {first_line(exc)}") from None
