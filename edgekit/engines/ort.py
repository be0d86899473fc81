"""ONNX Runtime GenAI: its model builder compiles the subnet, its generator runs it."""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit import shell
from edgekit.artifacts import partial_name
from edgekit.engines.base import RuntimeInfo, Sampling
from edgekit.errors import ExternalToolError, MissingDependencyError, UsageError, first_line
from edgekit.packages import installed_version, versions
from edgekit.shell import Command

if TYPE_CHECKING:
    from edgekit.quantize import QuantSettings

PACKAGES = ("onnxruntime-genai", "onnxruntime-genai-cuda", "onnxruntime-genai-directml")
PRECISIONS = {"cpu": ["int4", "int4-mixed", "fp32"], "cuda": ["int4", "int4-mixed", "fp16", "fp32"]}
INT4 = ("int4", "int4-mixed")
# With quant=builder the builder quantizes by itself (its symmetric round-to-nearest); int4-mixed then keeps
# the LM head and the most quantization-sensitive matmuls in int8 (k-quant): 1.10x the fp32 perplexity
# against 1.31x for plain int4 on SmolLM2-135M, at 0.61x the speed on the 2-core VM (bench/quantization.py)
MIXED_INT8 = {"algo_config": "k_quant", "matmul_mixed_precision": "last_matmul:int8,mixed_layers:int8"}
BUILDER_VARIANTS = {"int4-mixed": ("int4", MIXED_INT8)}
# The builder needs the hub token only to download; a local folder must never ask for one.
BASE_OPTIONS = {"hf_token": "false"}
# ONNX Runtime session options, written into genai_config.json after the build (the builder never sees them);
# onnxruntime-genai 0.18 reads intra_op_num_threads there and refuses keys it does not know (config_entries,
# where ONNX Runtime keeps allow_spinning, among them)
SESSION_OPTIONS = ("intra_op_num_threads",)


INSTALL = "pip install onnxruntime-genai onnx-ir (onnxruntime-genai-cuda on an NVIDIA GPU)"
JETSON_CUDA = "install onnxruntime-gpu and onnxruntime-genai from https://pypi.jetson-ai-lab.io/jp6/cu126"


class OrtEngine:
    name = "ort"

    def probe(self) -> RuntimeInfo:
        dist, ver = installed_version(*PACKAGES)
        info = RuntimeInfo("ort", dist or PACKAGES[0], ver is not None, ver)
        if not info.installed:
            info.note, info.gpu, info.gpu_detail = INSTALL, False, "onnxruntime-genai is not installed"
            return info
        try:
            import onnxruntime
        except Exception as exc:  # the genai wheel normally brings onnxruntime; say so if it did not
            info.note = f"onnxruntime not importable: {first_line(exc)}"
            info.gpu, info.gpu_detail = False, info.note
            return info
        info.offers = list(onnxruntime.get_available_providers())
        info.gpu, info.gpu_detail = _cuda(onnxruntime.__version__, info.offers)
        return info

    def check(self) -> None:
        try:
            import onnxruntime_genai  # noqa: F401
        except ImportError:
            raise MissingDependencyError(f"runtime 'ort' needs ONNX Runtime GenAI: {INSTALL}") from None
        try:
            import onnx_ir  # noqa: F401
        except ImportError:
            raise MissingDependencyError(
                "the ONNX Runtime GenAI model builder needs onnx-ir: pip install onnx-ir"
            ) from None

    def versions(self) -> dict[str, str]:
        return versions(*PACKAGES, "onnxruntime", "onnxruntime-gpu", "onnx-ir")

    def precisions(self, device: str) -> list[str]:
        return PRECISIONS.get(device, ["int4"])

    def compile(
        self, hf_dir: Path, out: Path, precision: str, device: str, options: dict[str, str] | None = None
    ) -> dict[str, Any]:
        self.check()
        if precision not in self.precisions(device):
            raise UsageError(
                f"ONNX Runtime GenAI builds {', '.join(self.precisions(device))} for {device}, not {precision}"
            )
        options, session = split_session_options(options)
        built_as, extra, quant = build_settings(precision, options)
        start = time.perf_counter()
        # the builder's cache sits beside `out` (a deploy's scratch folder), not in /tmp: a SIGKILL leaves it where
        # the next writer sweeps it (edgekit.artifacts.sweep_partials)
        with tempfile.TemporaryDirectory(prefix=partial_name(out.name, "ort-cache-"), dir=out.parent) as cache:
            argv = builder_command(hf_dir, out, built_as, device, extra, Path(cache))
            done = shell.capture(Command(tuple(argv), "build the ONNX model"), timeout=None)
        if not done.ok or not (out / "genai_config.json").is_file():
            raise ExternalToolError(f"ONNX Runtime GenAI's builder failed: {done.error_line(skip=('Saving ',))}")
        record: dict[str, Any] = {
            "tool": "onnxruntime_genai.models.builder",
            "precision": precision,
            "device": device,
            "options": extra,
        }
        if session:
            set_session_options(out / "genai_config.json", session)
            record["session_options"] = session
        if quant is not None:
            record["quantization"] = requantize(hf_dir, out, quant, device)
        record["seconds"] = round(time.perf_counter() - start, 2)
        return record

    def trial_options(self, precision: str, options: dict[str, str] | None) -> dict[str, str] | None:
        """A GPTQ build's graph with its weights rounded to nearest: seconds instead of a minute, same speed."""
        _, _, quant = build_settings(precision, options)
        if quant is None or quant.method != "gptq":
            return None
        return {**(options or {}), "quant": "rtn"}

    def describe(
        self, hf_dir: Path, out: Path, precision: str, device: str, options: dict[str, str] | None = None
    ) -> list[str]:
        options, session = split_session_options(options)
        built_as, extra, quant = build_settings(precision, options)
        lines = [shlex.join(builder_command(hf_dir, out, built_as, device, extra, Path("<cache>")))]
        if session:
            sets = ", ".join(f"{k}={v}" for k, v in session.items())
            lines.append(f"edgekit: session options {sets} -> {out / 'genai_config.json'}")
        if quant is not None:
            lines.append(describe_quantization(quant, f"the MatMulNBits nodes of {out}"))
        return lines

    def open(self, folder: Path, device: str = "cpu") -> OrtSession:
        self.check()
        return OrtSession(folder, device)


def _cuda(ort_version: str, providers: list[str]) -> tuple[bool, str]:
    """Whether ONNX Runtime GenAI runs on the GPU here: ONNX Runtime must offer CUDA, and the genai package
    must be a CUDA build (PyPI's aarch64 wheels are CPU-only, so a Jetson needs the jetson-ai-lab ones)."""
    if "CUDAExecutionProvider" not in providers:
        offers = ", ".join(providers)
        return False, f"onnxruntime {ort_version} offers {offers}: {JETSON_CUDA} (PyPI's aarch64 wheels are CPU-only)"
    detail = f"onnxruntime {ort_version} with CUDAExecutionProvider"
    try:
        import onnxruntime_genai as og
    except ImportError:
        return True, detail + " (onnxruntime-genai not installed)"
    if hasattr(og, "is_cuda_available") and not og.is_cuda_available():
        return False, detail + ", but onnxruntime-genai was built without CUDA"
    return True, detail


def build_settings(precision: str, options: dict[str, str] | None) -> tuple[str, dict[str, str], QuantSettings | None]:
    """The builder's precision and extra options for one of ours, and how we quantize its int4 weights
    (None: the builder's own numbers stand). Our keys (quant, calib, calib_tokens) never reach the builder."""
    from edgekit.quantize import OPTIONS, settings_from_options

    options = dict(options or {})
    ours = {k: options.pop(k) for k in OPTIONS if k in options}
    method = ours.get("quant", "gptq")
    if precision not in INT4 or method == "builder":
        if precision not in INT4 and ours and method != "builder":
            raise UsageError(f"{', '.join(sorted(ours))} applies to int4 builds, not {precision}")
        built_as, adds = BUILDER_VARIANTS.get(precision, (precision, {})) if method == "builder" else (precision, {})
        return built_as, {**BASE_OPTIONS, **adds, **options}, None
    # the builder's own grid options describe our grid too, so the graph and the weights agree
    block = whole_number("block_size", options.get("block_size", "32"))
    if block not in (16, 32, 64, 128, 256):
        raise UsageError(f"block_size={block}: MatMulNBits blocks are 16, 32, 64, 128 or 256 columns")
    symmetric = options.get("is_symmetric", "false").lower() in ("1", "true", "yes")
    quant = settings_from_options(ours, 8 if precision == "int4-mixed" else 4, block, symmetric)
    return "int4", {**BASE_OPTIONS, **options}, quant


def split_session_options(options: dict[str, str] | None) -> tuple[dict[str, str], dict[str, int]]:
    """(build options, session options): the latter checked, as the numbers genai_config.json takes."""
    options = dict(options or {})
    session = {k: whole_number(k, options.pop(k)) for k in SESSION_OPTIONS if k in options}
    for key, value in session.items():
        if not 1 <= value <= 1024:
            raise UsageError(f"{key}={value}: at least 1 thread is needed")
    return options, session


def set_session_options(config: Path, session: dict[str, int]) -> None:
    data = json.loads(config.read_text())
    data["model"]["decoder"].setdefault("session_options", {}).update(session)
    config.write_text(json.dumps(data, indent=4) + "\n")


def whole_number(key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{key}={value}: a whole number is needed") from None


def describe_quantization(quant: QuantSettings, into: str) -> str:
    data = quant.calib or "the shipped calibration text"
    how = f"GPTQ on {quant.calib_tokens} tokens of {data}" if quant.method == "gptq" else "round to nearest"
    zeros = "symmetric" if quant.symmetric else "zero points"
    return (f"edgekit: int{quant.bits} weights (LM head int{quant.head_bits}, blocks of {quant.block}, {zeros}) "
            f"by {how} -> {into}")  # fmt: skip


def requantize(hf_dir: Path, out: Path, quant: QuantSettings, device: str) -> dict[str, Any]:
    """Our int4 weights into the built model, then the built model checked against them: its logits through
    ONNX Runtime must match the same weights dequantized in torch."""
    from transformers import AutoTokenizer

    from edgekit.quantize import apply_to_model, quantize_folder
    from edgekit.quantize.calibration import load as load_calibration
    from edgekit.quantize.check import CHECK_TOKENS, check_against
    from edgekit.quantize.matmul_nbits import rewrite

    model, weights, record = quantize_folder(hf_dir, quant)
    record["rewrite"] = rewrite(out, weights, record["head"])
    apply_to_model(model, weights)
    # the check reads text the calibration file holds (its first sequence), through the weights just written
    probe = load_calibration(AutoTokenizer.from_pretrained(hf_dir), quant.calib, 256).sequences[0][:CHECK_TOKENS]
    record["check"] = check_against(model, check_session(out, device), probe, "int4 ONNX model", CHECK_AGREEMENT)
    return record


def check_session(out: Path, device: str) -> OrtSession:
    """The built model opened for the check: on the GPU it was built for when this host has one, else on the
    CPU (a build for a Jetson made on a laptop): the same graph and weights, so the same numbers within the
    check's tolerance."""
    if device == "cuda":
        import onnxruntime

        if not _cuda(onnxruntime.__version__, list(onnxruntime.get_available_providers()))[0]:
            device = "cpu"
    return OrtSession(out, device)


CHECK_AGREEMENT = 0.6  # int8 activations (accuracy level 4) flip near-ties: 89 % was seen on a sound d28 build;
# a graph that reads the weights wrongly agrees on next to nothing (a few %), so the margin is wide on both sides


def builder_command(
    hf_dir: Path, out: Path, precision: str, device: str, extra: dict[str, str], cache: Path
) -> list[str]:
    return [
        sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(out),
        "-p", precision, "-e", device, "-c", str(cache), "--extra_options", *(f"{k}={v}" for k, v in extra.items()),
    ]  # fmt: skip


class OrtSession:
    runtime = "ort"

    def __init__(self, folder: Path, device: str = "cpu") -> None:
        import onnxruntime_genai as og

        self._og = og
        config = og.Config(str(folder))
        config.clear_providers()
        if device == "cuda":
            config.append_provider("cuda")
        self.model = og.Model(config)
        self.device = device
        meta = json.loads((folder / "genai_config.json").read_text())["model"]
        self.context_length = int(meta.get("context_length", 2048))
        eos = meta.get("eos_token_id", [])
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])

    def _generator(self, prompt: int, sampling: Sampling) -> Any:
        params = self._og.GeneratorParams(self.model)
        total = min(prompt + sampling.max_new_tokens, self.context_length)
        # min_length masks EOS until then, so a measured run makes exactly the tokens it asked for
        search: dict[str, Any] = {"max_length": total, "min_length": min(prompt + sampling.min_new_tokens, total)}
        if sampling.temperature > 0:
            search.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
            if sampling.seed is not None:
                search["random_seed"] = sampling.seed
        else:
            search.update(do_sample=False)
        params.set_search_options(**search)
        return self._og.Generator(self.model, params)

    def stream(self, ids: list[int], sampling: Sampling) -> Iterator[int]:
        gen = self._generator(len(ids), sampling)
        gen.append_tokens(ids)
        made = 0
        while made < sampling.max_new_tokens and len(ids) + made < self.context_length:
            gen.generate_next_token()
            token = int(gen.get_next_tokens()[0])
            made += 1
            yield token
            if token in self.eos_ids or gen.is_done():
                return

    def decoder(self, max_length: int) -> Any:
        """A decoder for speculative decoding (edgekit.speculative.decoders): its own generator and KV cache."""
        from edgekit.speculative.decoders import OrtDecoder

        return OrtDecoder(self._og, self.model, min(max_length, self.context_length))

    def sequence_logits(self, ids: list[int]) -> Any:
        """Logits at every position of `ids` ([len, vocab]) as the built model computes them (int4 included):
        the generator's logits output after one prompt pass holds every position."""
        import numpy as np
        import torch

        if len(ids) >= self.context_length:
            raise UsageError(f"{len(ids)} tokens do not fit the model's context of {self.context_length}")
        gen = self._generator(len(ids), Sampling(max_new_tokens=1))
        gen.append_tokens(ids)
        logits = np.asarray(gen.get_output("logits"))
        return torch.from_numpy(logits.reshape(-1, logits.shape[-1])[-len(ids) :].astype(np.float32))

    def first_token(self, ids: list[int]) -> tuple[float, float]:
        gen = self._generator(len(ids), Sampling(max_new_tokens=1, min_new_tokens=1))
        start = time.perf_counter()
        gen.append_tokens(ids)
        prefilled = time.perf_counter()
        gen.generate_next_token()
        gen.get_next_tokens()
        return prefilled - start, time.perf_counter() - start
