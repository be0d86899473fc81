"""A Hugging Face model folder's safetensors weights: lazy reads across shards and a content digest.

The digest identifies *weights*, not files: sha256 over every tensor's name, dtype, shape and raw
bytes in name order, read straight from the safetensors layout. Two folders written by different
transformers versions (other header metadata, other tensor order, other sharding) get the same
digest when the weights are equal, so a plan made on one machine verifies on another. Hashing a
model costs one read of its weights; the result is remembered per file (path, size, mtime), the
way git's index remembers file hashes, so repeated loads do not pay it again.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import struct
from pathlib import Path
from typing import Any

from edgekit.artifacts import stat_cached
from edgekit.errors import IntegrityError, UsageError, first_line

SUPPORTED_TYPES = ("llama", "qwen2", "mistral")
SUPPORTED_ARCHS = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)


def weight_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise IntegrityError(f"{folder} has no safetensors weights (edgekit never loads pickled ones)")
    return files


def check_config(folder: Path) -> dict[str, Any]:
    """The folder's config.json, readable JSON: a corrupt one is a corrupt artifact (exit 3) whatever model it is,
    not the host failing to load it."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{folder}/config.json is unreadable: {first_line(exc)}") from None
    if not isinstance(config, dict):
        raise IntegrityError(f"{folder}/config.json is not a model configuration (a JSON object)")
    return config


def read_config(folder: Path) -> dict[str, Any]:
    """check_config, for a model edgekit cuts subnets from (a Llama-family causal LM)."""
    config = check_config(folder)
    check_supported(config)
    return config


def check_supported(config: dict[str, Any]) -> None:
    kind = config.get("model_type")
    archs = config.get("architectures") or []
    if kind not in SUPPORTED_TYPES or (archs and archs[0] not in SUPPORTED_ARCHS):
        name = archs[0] if archs else kind
        raise UsageError(
            f"unsupported architecture {name}: elastic subnets support Llama-family causal LMs "
            f"({', '.join(SUPPORTED_ARCHS)})"
        )
    if config.get("mlp_bias"):
        raise UsageError("unsupported architecture: MLP biases (mlp_bias=true) are not supported")
    if kind == "llama" and config.get("attention_bias"):
        raise UsageError("unsupported architecture: Llama with attention_bias=true (an o_proj bias) is not supported")


def _header(path: Path) -> tuple[int, dict[str, Any]]:
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise IntegrityError(f"{path.name} is not a safetensors file (truncated header)")
        (size,) = struct.unpack("<Q", raw)
        if size > 100 << 20:
            raise IntegrityError(f"{path.name} is not a safetensors file (implausible header size)")
        try:
            header = json.loads(fh.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise IntegrityError(f"{path.name} is not a safetensors file (unreadable header)") from None
    header.pop("__metadata__", None)
    return 8 + size, header


def _file_digest(path: Path) -> dict[str, str]:
    """name -> sha256(name, dtype, shape, bytes) for every tensor in one file."""
    start, header = _header(path)
    out = {}
    length = path.stat().st_size
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for name in sorted(header):
            meta = header[name]
            lo, hi = meta["data_offsets"]
            if start + hi > length:
                raise IntegrityError(f"{path.name} is truncated: tensor {name} runs past the end of the file")
            h = hashlib.sha256(f"{name}|{meta['dtype']}|{meta['shape']}|".encode())
            h.update(memoryview(mm)[start + lo : start + hi])
            out[name] = h.hexdigest()
    return out


def weights_digest(folder: Path, use_cache: bool = True) -> str:
    """The content digest of a folder's weights (see the module docstring)."""
    per_tensor: dict[str, str] = {}
    for path in weight_files(folder):
        per_tensor.update(stat_cached(path, "tensor-digests.json", _file_digest) if use_cache else _file_digest(path))
    h = hashlib.sha256()
    for name in sorted(per_tensor):
        h.update(f"{name}={per_tensor[name]}\n".encode())
    return h.hexdigest()


class Weights:
    """Lazy, zero-copy access to every tensor of a (possibly sharded) safetensors folder."""

    def __init__(self, folder: Path) -> None:
        from safetensors import safe_open

        self.folder = folder
        self._handles = {}
        self._where: dict[str, Any] = {}
        for path in weight_files(folder):
            try:
                handle = safe_open(str(path), "pt")
            except Exception as exc:  # safetensors raises its own error types for corrupt files
                raise IntegrityError(f"{path.name} is not a readable safetensors file: {exc}") from None
            self._handles[path.name] = handle
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                self._where[key] = handle

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def names(self) -> list[str]:
        return sorted(self._where)

    def get(self, name: str) -> Any:
        if name not in self._where:
            raise IntegrityError(f"{self.folder.name} has no tensor {name}")
        return self._where[name].get_tensor(name)

    def state(self) -> dict[str, Any]:
        return {name: self.get(name) for name in self.names()}
