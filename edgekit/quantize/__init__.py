"""Weight quantization for the artifacts deploy builds: GPTQ (or round-to-nearest) onto the block grid a
runtime's int4 kernels run, calibrated on shipped or given text.

Why our own: the default model arrives as Q4_1 (4-bit, a float minimum per block of 32), and a runtime's
own int4 quantizer rounds those already-rounded weights a second time onto a different grid. On
SmolLM2-135M ONNX Runtime GenAI's round-to-nearest build costs 1.31x the fp32 text perplexity and 1.50x
the chat perplexity; GPTQ with zero points onto the same kernel's grid keeps about 1.06x (docs/runtimes.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from edgekit.errors import UsageError
from edgekit.quantize.calibration import DEFAULT_TOKENS, Calibration, hessians
from edgekit.quantize.gptq import Quantized, gptq, rtn

METHODS = ("gptq", "rtn")
OPTIONS = ("quant", "calib", "calib_tokens")  # build options (--option KEY=VALUE) that say how weights are made


@dataclass(frozen=True)
class QuantSettings:
    method: str = "gptq"  # gptq (calibrated) or rtn (round to nearest: no calibration, same graph)
    bits: int = 4
    head_bits: int = 4  # the LM head (and the tied embedding): 8 keeps it at the Q8_0 source's precision
    block: int = 32
    symmetric: bool = False
    act_order: bool = True
    damp: float = 0.01
    calib: Path | None = None  # None: the shipped calibration file
    calib_tokens: int = DEFAULT_TOKENS

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"quant={self.method}: choose one of {', '.join(METHODS)} (or builder)")
        if self.calib_tokens < 256:
            raise UsageError(f"calib_tokens={self.calib_tokens}: at least 256 calibration tokens are needed")

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out["calib"] = None if self.calib is None else str(self.calib)
        return out


def settings_from_options(
    ours: dict[str, str], head_bits: int, block: int = 32, symmetric: bool = False
) -> QuantSettings:
    """QuantSettings from the build options a runtime takes for its weights (quant, calib, calib_tokens)."""
    from edgekit.quantize.calibration import DEFAULT_TOKENS

    raw = ours.get("calib_tokens", str(DEFAULT_TOKENS))
    try:
        tokens = int(raw)
    except ValueError:
        raise UsageError(f"calib_tokens={raw}: a whole number is needed") from None
    calib = Path(ours["calib"]).expanduser() if "calib" in ours else None
    if calib is not None and not calib.is_file():
        raise UsageError(f"calibration file not found: {calib}")
    return QuantSettings(method=ours.get("quant", "gptq"), head_bits=head_bits, block=block, symmetric=symmetric,
                         calib=calib, calib_tokens=tokens)  # fmt: skip


def quantize_folder(hf_dir: Path, settings: QuantSettings) -> tuple[Any, dict[str, Quantized], dict[str, Any]]:
    """(the fp32 model, its quantized linear layers, how they were made) for a Hugging Face folder, calibrated on
    the settings' text through the folder's own tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgekit.quantize.calibration import load

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    calibration = load(AutoTokenizer.from_pretrained(hf_dir), settings.calib, settings.calib_tokens)
    weights, record = quantize_model(model, settings, calibration if settings.method == "gptq" else None)
    return model, weights, record


def linear_modules(model: Any) -> dict[str, torch.nn.Linear]:
    """Every nn.Linear of the model (the LM head included), by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def quantize_model(
    model: Any,
    settings: QuantSettings,
    calibration: Calibration | None,
    on_progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Quantized], dict[str, Any]]:
    """Every linear layer's quantized weights (module name -> Quantized) and a record of how they were made."""
    say = on_progress or (lambda _text: None)
    for name, module in linear_modules(model).items():
        if module.weight.shape[1] % settings.block:
            raise UsageError(f"{name} has {module.weight.shape[1]} input columns, not a multiple of the "
                             f"{settings.block}-column blocks asked for (block_size)")  # fmt: skip
    start = time.perf_counter()
    hess: dict[str, torch.Tensor] = {}
    if settings.method == "gptq":
        if calibration is None:
            raise UsageError("GPTQ needs calibration data")
        seqs = calibration.sequences
        hess = hessians(model, seqs, lambda n: say(f"calibrating: sequence {n}/{len(seqs)}"))
    calibrated_s = time.perf_counter() - start
    head = next(n for n, m in model.named_modules() if m is model.get_output_embeddings())
    layers = linear_modules(model)
    out: dict[str, Quantized] = {}
    groups = shared_input_groups(layers, hess, head)
    for i, names in enumerate(groups):
        bits = settings.head_bits if names == [head] else settings.bits
        say(f"quantizing {i + 1}/{len(groups)}: {', '.join(names)}")
        # layers that read the same input share its Hessian: one GPTQ pass over their stacked rows is the same
        # as one per layer (rows are independent), with a third of the Python loop
        weight = torch.cat([layers[n].weight.detach().float() for n in names])
        if settings.method == "gptq":
            q = gptq(weight, hess[names[0]], bits, settings.block, settings.symmetric, settings.act_order,
                     settings.damp)  # fmt: skip
        else:
            q = rtn(weight, bits, settings.block, settings.symmetric)
        row = 0
        for n in names:
            rows = layers[n].weight.shape[0]
            out[n] = q.slice_rows(row, row + rows)
            row += rows
    record = {**settings.record(), "head": head,
              "calibration": calibration.record() if calibration and settings.method == "gptq" else None,
              "calibrate_s": round(calibrated_s, 1), "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
    return out, record


def shared_input_groups(
    layers: dict[str, torch.nn.Linear], hess: dict[str, torch.Tensor], head: str
) -> list[list[str]]:
    """Module names grouped by the Hessian they share (the same tensor: one input read by several layers), in
    model order; without Hessians (round to nearest) every layer is its own group."""
    groups: dict[int, list[str]] = {}
    for name in layers:
        key = id(hess[name]) if name in hess and name != head else id(name)
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def apply_to_model(model: Any, weights: dict[str, Quantized]) -> None:
    """Load the dequantized weights into the torch model: the int4 model's numbers in fp32, to check an
    artifact against (tied embeddings follow the head)."""
    layers = linear_modules(model)
    with torch.no_grad():
        for name, q in weights.items():
            layers[name].weight.copy_(q.dequantize())
