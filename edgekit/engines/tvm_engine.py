"""Apache TVM (Relax): the subnet compiled ahead of time into one shared library plus its weights.

compile: export `tvm_llama`'s graph for the folder's config, build it with relax for the host CPU
(llvm) or an NVIDIA GPU (cuda, dlight's default GPU schedules), and write a self-contained folder:

    model.so                the compiled functions (embed, prefill, decode, score, create_paged_kv_cache)
    params.safetensors      the weights under the graph's names, fused and cast to the precision (int4:
                            4-bit levels by our GPTQ, packed as tvm_int4 describes)
    config.json, tokenizer  copied from the subnet folder
    edgekit-tvm.json        the build: target, precision, weight order, KV cache sizes, TVM version

open: load the library into a relax VM, the weights onto the device, and make one paged KV cache.
Each stream is one fresh sequence in that cache; tokens are picked with numpy from float32 logits.

int4 (weights in 4 bits, a scale and offset per group of 32 or 64 columns, activations in float32 on a CPU
and float16 on a GPU) is MLC's q4f32_1/q4f16_1 with GPTQ's zero points; a build is checked against the same
weights dequantized in torch before it is written, like ORT GenAI's int4.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.engines.base import RuntimeInfo, Sampling, pick_token, sampling_generator
from edgekit.errors import ExternalToolError, IntegrityError, MissingDependencyError, UsageError, first_line
from edgekit.formats import tag, upgrade
from edgekit.models.weights import TOKENIZER_FILES
from edgekit.packages import installed_version

PRECISIONS = {"cpu": ["fp32", "int4"], "cuda": ["fp16", "fp32", "int4"]}
DTYPES = {"fp32": "float32", "fp16": "float16"}  # int4: the activations' dtype is the device's (_dtype)
CHECK_AGREEMENT = 0.9  # float activations on both sides: only the order of additions differs from torch
LIB, WEIGHTS, BUILD = "model.so", "params.safetensors", "edgekit-tvm.json"
# The paged KV cache is allocated whole when a session opens: cap it by default so the default model
# (8192 positions) does not reserve memory for contexts an edge chat never reaches. `context_length=N`
# in the compile options sets it.
DEFAULT_CONTEXT = 4096
PREFILL_CHUNK = 1024  # longest prompt piece per prefill call: bounds the planned activation memory
PAGE_SIZE = 16
SEQ = 0  # the one sequence a session decodes
HOST_TRIPLES = {"aarch64": "aarch64-linux-gnu", "x86_64": "x86_64-linux-gnu"}
OPTIONS = {
    "arch": "CUDA architecture, e.g. sm_87 for Orin (default: the GPU's own)",
    "host": "the CPU family of the machine that runs it, aarch64 or x86_64 or an LLVM triple (default: this one)",
    "mcpu": "LLVM CPU name of the host code, e.g. cortex-a78ae (default: this CPU, or generic when cross-compiling)",
    "context_length": f"tokens the KV cache holds (default: the model's, at most {DEFAULT_CONTEXT})",
    "block_size": "int4: columns per scale, 32 or 64 (default 32)",
    "quant": "int4: how the weights are rounded, gptq (calibrated, default) or rtn",
    "calib": "int4: the calibration file GPTQ reads (default: the shipped one)",
    "calib_tokens": "int4: calibration tokens GPTQ reads",
}
INT4_OPTIONS = ("block_size", "quant", "calib", "calib_tokens")


PACKAGES = ("apache-tvm", "tlcpack", "mlc-ai-nightly")


def _tvm_version() -> str | None:
    return installed_version(*PACKAGES)[1]


class TvmEngine:
    name = "tvm"

    def probe(self) -> RuntimeInfo:
        dist, ver = installed_version(*PACKAGES)
        info = RuntimeInfo("tvm", dist or "apache-tvm", ver is not None, ver)
        if not info.installed:
            info.note = "pip install apache-tvm"
            return info
        try:
            self.check()
            import tvm
            from tvm.target import codegen

            info.offers = [f"llvm ({codegen.llvm_get_system_cpu()})"]
            gpu = tvm.cuda(0)
            if gpu.exist:
                info.offers.append(f"cuda ({gpu.device_name}, sm_{gpu.compute_version.replace('.', '')})")
                info.gpu, info.gpu_detail = True, info.offers[-1]
        except Exception as exc:  # an old TVM, or one built for a CUDA this machine lacks
            info.note = f"installed but not usable: {first_line(exc)}"
        return info

    def check(self) -> None:
        try:
            import tvm  # noqa: F401
        except ImportError:
            raise MissingDependencyError("runtime 'tvm' needs Apache TVM: pip install apache-tvm") from None
        try:  # the tirx/s_tir namespaces this runtime builds with arrived in 0.24
            from tvm import relax, s_tir, tirx  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError(
                f"runtime 'tvm' needs Apache TVM 0.24 or newer (found {_tvm_version()}: {first_line(exc)}): "
                "pip install -U apache-tvm"
            ) from None

    def versions(self) -> dict[str, str]:
        dist, found = installed_version(*PACKAGES)
        return {dist: found} if dist and found else {}

    def precisions(self, device: str) -> list[str]:
        return PRECISIONS.get(device, [])

    def compile(
        self, hf_dir: Path, out: Path, precision: str, device: str, options: dict[str, str] | None = None
    ) -> dict[str, Any]:
        self.check()
        if device not in PRECISIONS:
            raise UsageError(f"the tvm runtime compiles for {', '.join(PRECISIONS)}, not {device}")
        if precision not in self.precisions(device):
            raise UsageError(f"TVM builds {', '.join(self.precisions(device))} for {device}, not {precision}")
        from edgekit.engines.tvm_llama import LlamaConfig
        from edgekit.models.weights import Weights, read_config

        opts = _options(options, precision)
        config = LlamaConfig.from_hf(read_config(hf_dir))
        weights = Weights(hf_dir)  # refuses a folder without safetensors before minutes of building
        quant = _quant_settings(opts) if precision == "int4" else None
        if quant is not None:
            _check_widths(config, quant.block)
        context = min(config.max_position_embeddings, int(opts.get("context_length", DEFAULT_CONTEXT)))
        chunk, dtype = min(context, PREFILL_CHUNK), _dtype(precision, device)
        start = time.perf_counter()
        target, linker = _target(device, opts)
        try:
            names = _build(config, target, linker, dtype, chunk, out / LIB, quant.block if quant else None)
        except Exception as exc:  # TVM raises many kinds; the user needs the reason, not its stack
            raise ExternalToolError(
                f"TVM could not compile {hf_dir.name} for {_target_name(target)}: {_reason(exc)}"
            ) from None
        built = time.perf_counter()
        for name in ("config.json", *TOKENIZER_FILES):
            if (hf_dir / name).is_file():
                shutil.copy2(hf_dir / name, out / name)
        build = {
            "format": tag("edgekit-tvm"),
            "target": json.loads(str(target)),
            "device": device,
            "precision": precision,
            "dtype": dtype,
            "context_length": context,
            "prefill_chunk": chunk,
            "page_size": PAGE_SIZE,
            "params": names,
        }
        quantization = None
        if quant is None:
            _write_weights(weights, config, names, dtype, out / WEIGHTS)
        else:  # the check opens the library with this record, before edgekit-tvm.json is written
            quantization = _write_int4(hf_dir, config, quant, build, out)
        seconds = round(time.perf_counter() - start, 2)
        build |= {"quantization": quantization, "tvm_version": _tvm_version(),
                  "build_seconds": round(built - start, 2), "seconds": seconds}  # fmt: skip
        (out / BUILD).write_text(json.dumps(build, indent=2) + "\n")
        return {
            "tool": "tvm.relax.build",
            "precision": precision,
            "device": device,
            "target": _target_name(target),
            "options": opts,
            "seconds": seconds,
            **({"quantization": quantization} if quantization else {}),
        }

    def trial_options(self, precision: str, options: dict[str, str] | None) -> dict[str, str] | None:
        """An int4 GPTQ build's library with its weights rounded to nearest: the same kernels, the same speed."""
        if precision != "int4" or _quant_settings(_options(options, precision)).method != "gptq":
            return None
        return {**(options or {}), "quant": "rtn"}

    def describe(
        self, hf_dir: Path, out: Path, precision: str, device: str, options: dict[str, str] | None = None
    ) -> list[str]:
        from edgekit.engines.ort import describe_quantization

        opts = _options(options, precision)
        target, _ = _target(device, opts)
        lines = [f"edgekit: export {hf_dir}'s Llama as TVM Relax ({precision}, {_dtype(precision, device)} "
                 f"activations) and relax.build it for {_target_name(target)} -> {out / LIB}"]  # fmt: skip
        if precision == "int4":
            lines.append(describe_quantization(_quant_settings(opts), f"4-bit groups in {out / WEIGHTS}"))
        return lines

    def open(self, folder: Path, device: str = "cpu") -> TvmSession:
        self.check()
        return TvmSession(folder, device)


def _options(options: dict[str, str] | None, precision: str = "fp32") -> dict[str, str]:
    opts = dict(options or {})
    unknown = set(opts) - set(OPTIONS)
    if unknown:
        raise UsageError(f"unknown tvm option {', '.join(sorted(unknown))}; known: {', '.join(OPTIONS)}")
    if precision != "int4" and (misplaced := sorted(set(opts) & set(INT4_OPTIONS))):
        raise UsageError(f"tvm option {', '.join(misplaced)} applies to int4 builds, not {precision}")
    if "context_length" in opts and not (str(opts["context_length"]).isdigit() and int(opts["context_length"]) > 0):
        raise UsageError(f"tvm option context_length must be a positive number of tokens, not {opts['context_length']}")
    return opts


def _dtype(precision: str, device: str) -> str:
    """The activations' dtype: int4 keeps float32 on a CPU (no fast float16 arithmetic there), float16 on a GPU."""
    if precision == "int4":
        return "float16" if device == "cuda" else "float32"
    return DTYPES[precision]


def _quant_settings(opts: dict[str, str]) -> Any:
    from edgekit.engines.ort import whole_number
    from edgekit.engines.tvm_int4 import GROUPS
    from edgekit.quantize import OPTIONS as QUANT_OPTIONS
    from edgekit.quantize import settings_from_options

    block = whole_number("block_size", opts.get("block_size", "32"))
    if block not in GROUPS:
        raise UsageError(f"block_size={block}: tvm int4 groups are {' or '.join(map(str, GROUPS))} columns")
    return settings_from_options({k: v for k, v in opts.items() if k in QUANT_OPTIONS}, head_bits=4, block=block)


def _check_widths(config: Any, block: int) -> None:
    """Every matrix's input width must be whole groups (and whole words of eight levels): say so before the
    minutes of quantizing."""
    from edgekit.engines.tvm_int4 import R

    widths = {"hidden_size": config.hidden_size, "intermediate_size": config.intermediate_size,
              "attention width": config.num_attention_heads * config.head_dim}  # fmt: skip
    for name, width in widths.items():
        if width % block:
            raise UsageError(f"tvm int4 needs input widths in whole groups of {block}: {name} is {width} "
                             "(block_size=32 may fit)")  # fmt: skip
    if config.vocab_size % R or config.num_key_value_heads * config.head_dim % R:
        raise UsageError(f"tvm int4 stores rows in groups of {R}: a vocabulary of {config.vocab_size} or KV width "
                         f"of {config.num_key_value_heads * config.head_dim} is not")  # fmt: skip


def _host(opts: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """The llvm target of the host code, and the cross linker when that host is not this machine."""
    from tvm.target import codegen

    here = codegen.llvm_get_system_triple()
    triple = HOST_TRIPLES.get(opts.get("host", ""), opts.get("host")) or here
    cross = triple.split("-")[0] != here.split("-")[0]
    # Natively, this CPU as LLVM names it (znver3, neoverse-v1...), not a generic x86-64/aarch64: LLVM
    # then uses all of its vector units (AVX2, NEON dot products) in the matrix products that bound
    # decoding. The library then runs only on CPUs with those features; deploy compiles on the machine
    # that runs it, or names the board (host=aarch64, mcpu=...).
    cpu = opts.get("mcpu") or ("generic" if cross else codegen.llvm_get_system_cpu())
    if not codegen.llvm_is_valid_cpu(cpu, triple):
        raise UsageError(f"LLVM knows no CPU '{cpu}' for {triple} (tvm option mcpu)")
    if not cross:
        spec: dict[str, Any] = {"kind": "llvm", "mcpu": cpu}
        if "mcpu" not in opts and (hidden := hidden_vector_features(cpu, triple)):
            spec["mattr"] = [f"-{f}" for f in hidden]
        return spec, None
    linker = f"{triple}-g++"
    if shutil.which(linker) is None:
        raise MissingDependencyError(f"cross-compiling for {triple} needs {linker} on PATH, or compile on the board")
    return {"kind": "llvm", "mtriple": triple, "mcpu": cpu}, linker


def hidden_vector_features(cpu: str, triple: str, flags: set[str] | None = None) -> list[str]:
    """Vector extensions LLVM's name for this CPU implies but the kernel does not report: a VM often hides
    AVX-512 and AMX from a CPU whose model has them (LLVM says znver4, /proc/cpuinfo stops at AVX2), and a
    library built with them dies of SIGILL. They are turned off with mattr; the rest of the tuning stays."""
    import tvm
    from tvm.target import codegen

    if not triple.startswith(("x86_64", "i686", "i386")):
        return []
    from edgekit.hardware.host import cpu_flags

    have = {_feature_key(f) for f in (cpu_flags() if flags is None else flags)}
    if not have:  # no /proc/cpuinfo to compare with: trust LLVM
        return []
    implied = codegen.llvm_get_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": cpu, "mtriple": triple}))
    return sorted(f for f in implied if f.startswith(("avx", "amx")) and _feature_key(f) not in have)


def _feature_key(name: str) -> str:
    # LLVM writes avx512vnni and amx-tile, the kernel avx512_vnni and amx_tile
    return name.lower().replace("_", "").replace("-", "").replace(".", "")


def _target(device: str, opts: dict[str, str]) -> tuple[Any, str | None]:
    import tvm

    host, linker = _host(opts)
    if device == "cpu":
        spec, host_spec = host, None
    else:
        gpu, arch = tvm.cuda(0), opts.get("arch")
        if arch is None:
            if not gpu.exist:
                raise UsageError("no CUDA GPU here to read the architecture from: pass the option arch=sm_87 (Orin)")
            arch = "sm_" + gpu.compute_version.replace(".", "")
        # 48 KiB is what every CUDA GPU gives a block without opting in; say it rather than have TVM warn
        shared = gpu.max_shared_memory_per_block if gpu.exist and not opts.get("arch") else 49152
        spec, host_spec = {"kind": "cuda", "arch": arch, "max_shared_memory_per_block": shared}, host
    try:
        return tvm.target.Target(spec, host=host_spec), linker
    except Exception as exc:
        raise UsageError(f"TVM rejects the target {json.dumps(spec)}: {_reason(exc)}") from None


def _target_name(target: Any) -> str:
    attrs = json.loads(str(target))
    detail = attrs.get("arch") or attrs.get("mcpu") or ""
    return f"{target.kind.name} ({detail})" if detail else target.kind.name


def _reason(exc: BaseException) -> str:
    """One line out of a TVM error: compiler failures start with a header and end with the command."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.endswith(":") and not ln.startswith("Command line:")]
    hit = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else type(exc).__name__)
    return hit[:300]


def _build(
    config: Any, target: Any, linker: str | None, dtype: str, prefill_chunk: int, lib: Path, group: int | None
) -> list[str]:
    """Export the graph, build it for `target`, write the library; return the weight names in call order."""
    from tvm import relax
    from tvm.support import cc

    from edgekit.engines.tvm_llama import LlamaForCausalLM

    model = LlamaForCausalLM(config, target, dtype, group)
    model.to(dtype)
    mod, params = model.export_tvm(spec=model.spec())
    # A known longest prompt piece lets relax plan every activation buffer once, at build time.
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mod[gv] = func.with_attr("tir_var_upper_bound", {"seq_len": prefill_chunk})
    with target:
        executable = relax.build(mod, target=target, relax_pipeline=_pipeline(target))
    executable.export_library(str(lib), fcompile=cc.cross_compiler(linker) if linker else None)
    return [name for name, _ in params]


def compile_slice(verifier: Path, layers: list[int], ffn: int, out: Path) -> dict[str, Any] | None:
    """A draft that runs on its verifier's int4 arrays (edgekit.speculative.slice): its library alone, compiled
    for the verifier's target with the verifier's stored widths, computing `ffn` MLP channels in `layers` (the
    verifier's layer positions); None where the verifier's build cannot lend its arrays (not int4)."""
    import tvm

    from edgekit.engines.tvm_llama import LlamaConfig
    from edgekit.models.weights import read_config

    build = _read_build(verifier)
    if build["precision"] != "int4" or build.get("slice"):
        return None
    config = LlamaConfig.from_hf(read_config(verifier))
    draft = LlamaConfig(**{**config.__dict__, "num_hidden_layers": len(layers), "intermediate_size": ffn,
                           "stored_intermediate_size": config.intermediate_size})  # fmt: skip
    start = time.perf_counter()
    target = tvm.target.Target(build["target"])
    block = int(build["quantization"]["block"])
    try:
        names = _build(draft, target, None, build["dtype"], int(build["prefill_chunk"]), out / LIB, block)
    except Exception as exc:  # TVM raises many kinds; the user needs the reason, not its stack
        raise ExternalToolError(f"TVM could not compile a draft on {verifier.name}: {_reason(exc)}") from None
    hf = read_config(verifier)
    hf.update(num_hidden_layers=len(layers), intermediate_size=ffn)
    (out / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        if (verifier / name).is_file():
            shutil.copy2(verifier / name, out / name)
    record = {**build, "params": names, "slice": {"layers": list(layers)}, "quantization": None,
              "build_seconds": round(time.perf_counter() - start, 2)}  # fmt: skip
    record["seconds"] = record["build_seconds"]
    (out / BUILD).write_text(json.dumps(record, indent=2) + "\n")
    return {"tool": "tvm.relax.build", "precision": "int4", "device": build["device"], "seconds": record["seconds"],
            "slice_of": verifier.name}  # fmt: skip


def slice_params(draft_names: list[str], layers: list[int], verifier: TvmSession) -> list[Any]:
    """The verifier's loaded arrays in a sliced draft's call order: its layer `i` is the verifier's `layers[i]`."""
    import re

    index = {n: i for i, n in enumerate(verifier.param_names)}
    pick = []
    for name in draft_names:
        theirs = re.sub(r"^model\.layers\.(\d+)\.", lambda m: f"model.layers.{layers[int(m.group(1))]}.", name)
        if theirs not in index:
            raise IntegrityError(f"the draft needs {theirs}, which its verifier's build does not hold")
        pick.append(verifier._params[index[theirs]])
    return pick


def _pipeline(target: Any) -> Any:
    """relax's default lowering after fusing each weight's transpose into its matmul (else every call
    would first write a transposed copy of every weight). On llvm, schedules are added between fusion
    and lowering: relax's CPU pipeline leaves every kernel a plain loop nest (cuda's already applies
    dlight's default GPU schedules)."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu  # the package does not export every stage
    from tvm.s_tir import dlight as dl

    from edgekit.engines.tvm_schedule import MatmulNT

    if target.kind.name != "llvm":
        return _cuda_pipeline(target)

    @tvm.transform.module_pass(opt_level=0)
    def pipeline(mod: Any, _ctx: Any) -> Any:
        with target:
            passes = [
                relax.transform.FuseTransposeMatmul(),
                *cpu.library_dispatch_passes(target),
                *cpu.legalize_passes(target),
                dl.ApplyDefaultSchedule(MatmulNT()),  # dl.cpu.Reduction makes rms_norm quadratic
                *cpu.dataflow_lower_passes(target),
                *cpu.finalize_passes(target),
            ]
            return tvm.transform.Sequential(passes)(mod)

    return pipeline


def _cuda_pipeline(target: Any) -> Any:
    """relax's CUDA pipeline (dlight's GPU schedules) with tensor-core tensorization turned off: in TVM 0.27
    dlight's MatmulTensorization segfaults inside Tensorize on our float16 prefill products for sm_87 (seen
    compiling fp16 and int4 here), which took the whole deploy down. The products then get dlight's plain
    GPU matmul and GEMV schedules; decoding (matrix-vector) never used tensor cores."""
    import tvm
    from tvm import relax, tirx
    from tvm.relax.backend.cuda import pipeline as cuda
    from tvm.s_tir import dlight as dl

    @tvm.transform.module_pass(opt_level=0)
    def no_tensor_cores(mod: Any, _ctx: Any) -> Any:
        for gv, func in list(mod.functions_items()):
            if isinstance(func, tirx.PrimFunc):
                mod[gv] = func.with_attr("dlight.do_not_tensorize", True)
        return mod

    @tvm.transform.module_pass(opt_level=0)
    def pipeline(mod: Any, _ctx: Any) -> Any:
        with target:
            passes = [
                relax.transform.FuseTransposeMatmul(),
                *cuda.library_dispatch_passes(target),
                relax.transform.LegalizeOps(),
                relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(),
                relax.transform.FuseOps(),
                relax.transform.FuseTIR(),
                no_tensor_cores,
                dl.ApplyDefaultSchedule(
                    dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()
                ),  # fmt: skip
                *cuda.dataflow_lower_passes(target),
                *cuda.finalize_passes(target),
            ]
            return tvm.transform.Sequential(passes)(mod)

    return pipeline


def _write_weights(source: Any, config: Any, names: list[str], dtype: str, path: Path) -> None:
    from safetensors.numpy import save_file

    from edgekit.engines.tvm_llama import runtime_weights

    def get(name: str) -> np.ndarray:
        # through torch: checkpoints are often bf16, which numpy cannot read
        return source.get(name).float().numpy()

    state = {}
    for name, t in runtime_weights(config, get):
        state[name] = np.ascontiguousarray(np.concatenate(t) if isinstance(t, list) else t, dtype=dtype)
    save_file({n: state[n] for n in names}, str(path), metadata={"format": "edgekit-tvm"})


def _write_int4(hf_dir: Path, config: Any, quant: Any, build: dict[str, Any], out: Path) -> dict[str, Any]:
    """GPTQ the folder's weights onto the int4 grid, write them packed in the order of `build`'s params, then
    check the library against them (the same weights dequantized in torch); the record of how they were made and
    of the check."""
    import torch
    from safetensors.numpy import save_file
    from transformers import AutoTokenizer

    from edgekit.engines.tvm_llama import embedding_int4, runtime_weights_int4
    from edgekit.quantize import apply_to_model, quantize_folder
    from edgekit.quantize.calibration import load as load_calibration
    from edgekit.quantize.check import CHECK_TOKENS, check_against

    model, weights, record = quantize_folder(hf_dir, quant)
    state = {n: t.detach().float() for n, t in model.state_dict().items()}
    embed = embedding_int4(config, weights, state.__getitem__, record["head"])
    arrays = dict(runtime_weights_int4(config, weights, embed, state.__getitem__, record["head"], build["dtype"]))
    save_file({n: np.ascontiguousarray(arrays[n]) for n in build["params"]}, str(out / WEIGHTS),
              metadata={"format": "edgekit-tvm"})  # fmt: skip
    device = build["device"]
    if device == "cuda" and not _has_gpu():  # a build for a board, made elsewhere: checked where it runs
        return record
    apply_to_model(model, weights)
    if not config.tie_word_embeddings:
        with torch.no_grad():
            model.get_input_embeddings().weight.copy_(embed.dequantize())
    probe = load_calibration(AutoTokenizer.from_pretrained(hf_dir), quant.calib, 256).sequences[0][:CHECK_TOKENS]
    session = TvmSession(out, device, build=build)
    record["check"] = check_against(model, session, probe, "int4 TVM library", CHECK_AGREEMENT)
    return record


def _has_gpu() -> bool:
    import tvm

    return bool(tvm.cuda(0).exist)


class TvmSession:
    runtime = "tvm"

    def __init__(
        self, folder: Path, device: str = "cpu", seed: int | None = None, build: dict[str, Any] | None = None,
        params: list[Any] | None = None,
    ) -> None:  # fmt: skip
        """`params`: the weights already on the device (a sliced draft's, lent by its verifier: `slice_of`)."""
        import torch
        import tvm
        import tvm_ffi
        from tvm import relax

        self.device, self._shape = device, tvm_ffi.Shape
        self._generator = torch.Generator().manual_seed(seed) if seed is not None else None
        build = build or _read_build(folder)
        if build["device"] != device:
            raise UsageError(f"{folder.name} was compiled for {build['device']}, not {device}")
        self._dev = tvm.cuda(0) if device == "cuda" else tvm.cpu(0)
        try:
            self._vm = relax.VirtualMachine(tvm.runtime.load_module(str(folder / LIB)), self._dev)
        except Exception as exc:
            raise IntegrityError(f"{folder / LIB} does not load as a TVM library: {first_line(exc)}") from None
        self.param_names = list(build["params"])
        if params is None and build.get("slice"):
            raise UsageError(f"{folder.name} is a draft that runs on its verifier's weights: open it with its verifier")
        self._params = params if params is not None else _load_weights(folder / WEIGHTS, build["params"], self._dev)
        self.context_length = int(build["context_length"])
        self._chunk = int(build["prefill_chunk"])
        self._cache = self._vm["create_paged_kv_cache"](
            *(self._shape([n]) for n in (1, self.context_length, self._chunk, int(build["page_size"]), 0))
        )
        self._kv = {
            name: tvm.get_global_func(f"vm.builtin.kv_state_{name}")
            for name in ("add_sequence", "remove_sequence", "begin_forward", "end_forward", "popn")
        }
        self._active = False
        self.eos_ids = _eos_ids(folder)

    def _new_sequence(self) -> None:
        """Forget the previous stream (possibly abandoned mid-way) and start an empty sequence."""
        if self._active:
            self._kv["remove_sequence"](self._cache, SEQ)
        self._kv["add_sequence"](self._cache, SEQ)
        self._active = True

    def _forward(self, ids: list[int], fn: str) -> Any:
        import tvm

        x = tvm.runtime.tensor(np.asarray([ids], dtype="int32"), self._dev)
        embeddings = self._vm["embed"](x, self._params)
        self._kv["begin_forward"](self._cache, self._shape([SEQ]), self._shape([len(ids)]))
        logits, _ = self._vm[fn](embeddings, self._cache, self._params)
        self._kv["end_forward"](self._cache)
        return logits

    def prefill(self, ids: list[int]) -> Any:
        """Start a fresh sequence with the prompt `ids`; the next token's logits, on the device."""
        if not 0 < len(ids) <= self.context_length:
            raise UsageError(f"a prompt of {len(ids)} tokens does not fit the context of {self.context_length}")
        self._new_sequence()
        for i in range(0, len(ids), self._chunk):
            logits = self._forward(ids[i : i + self._chunk], "prefill")
        return logits

    def decode(self, token: int) -> Any:
        """Append one token to the sequence; the next token's logits, on the device."""
        return self._forward([token], "decode")

    def decoder(self, max_length: int) -> TvmDecoder:
        """A decoder for speculative decoding (edgekit.speculative.decoders) on this session's KV cache: it
        starts a fresh sequence, so a session serves one reply at a time, as it does for stream()."""
        self._new_sequence()
        return TvmDecoder(self)

    def sequence_logits(self, ids: list[int]) -> Any:
        """Logits at every position of `ids` ([len, vocab], torch float32) as the library computes them: a
        fresh sequence scored in prefill-sized pieces through the KV cache."""
        import torch

        if not 0 < len(ids) < self.context_length:
            raise UsageError(f"{len(ids)} tokens do not fit the model's context of {self.context_length}")
        try:
            self._vm["score"]
        except Exception:
            raise UsageError("this tvm library predates scoring (edgekit 0.x before int4): compile it again") from None
        self._new_sequence()
        rows = [self._forward(ids[i : i + self._chunk], "score").numpy()[0] for i in range(0, len(ids), self._chunk)]
        return torch.from_numpy(np.concatenate(rows).astype(np.float32))

    def stream(self, ids: list[int], sampling: Sampling) -> Iterator[int]:
        import torch

        logits = self.prefill(ids)
        made = 0
        generator = sampling_generator(sampling) or self._generator
        while made < sampling.max_new_tokens and len(ids) + made < self.context_length:
            row = logits.numpy()[0, -1]
            if made < sampling.min_new_tokens:
                row[list(self.eos_ids)] = -np.inf
            token = pick_token(torch.from_numpy(row), sampling, generator)
            made += 1
            yield token
            if token in self.eos_ids or made >= sampling.max_new_tokens:
                return
            logits = self.decode(token)

    @classmethod
    def slice_of(cls, folder: Path, verifier: TvmSession) -> TvmSession:
        """A draft compiled by `compile_slice`, on its verifier's arrays: no weights of its own."""
        build = _read_build(folder)
        if not build.get("slice"):
            raise UsageError(f"{folder.name} is not a draft compiled on its verifier's weights")
        params = slice_params(build["params"], build["slice"]["layers"], verifier)
        return cls(folder, verifier.device, build=build, params=params)

    def first_token(self, ids: list[int]) -> tuple[float, float]:
        import torch

        start = time.perf_counter()
        logits = self.prefill(ids)
        self._dev.sync()
        prefilled = time.perf_counter()
        pick_token(torch.from_numpy(logits.numpy()[0, -1]), Sampling(), self._generator)
        return prefilled - start, time.perf_counter() - start


class TvmDecoder:
    """Feed token chunks through the library's KV cache and cut it back (kv_state_popn): `score` gives every
    position's logits, `prefill` the last one's."""

    def __init__(self, session: TvmSession) -> None:
        self.session, self.length = session, 0

    def feed(self, tokens: list[int], every: bool) -> Any:
        import torch

        s = self.session
        if self.length + len(tokens) > s.context_length:
            raise UsageError(f"{self.length + len(tokens)} tokens do not fit the context of {s.context_length}")
        rows = []
        for i in range(0, len(tokens), s._chunk):
            part = tokens[i : i + s._chunk]
            fn = "score" if every else "decode" if len(part) == 1 else "prefill"
            rows.append(s._forward(part, fn).numpy()[0])
        self.length += len(tokens)
        logits = np.concatenate(rows) if every else rows[-1][-1:]
        return torch.from_numpy(logits.astype(np.float32, copy=True))

    def rewind(self, length: int) -> None:
        if length < self.length:
            self.session._kv["popn"](self.session._cache, SEQ, self.length - length)
            self.length = length


def _read_build(folder: Path) -> dict[str, Any]:
    try:
        build = upgrade("edgekit-tvm", json.loads((folder / BUILD).read_text()), f"{folder}/{BUILD}")
    except (OSError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{folder} is not a compiled tvm model ({BUILD}: {first_line(exc)})") from None
    for name in (LIB,) if build.get("slice") else (LIB, WEIGHTS):
        if not (folder / name).is_file():
            raise IntegrityError(f"{folder} is not a complete tvm model: {name} is missing")
    return build


def _load_weights(path: Path, names: list[str], dev: Any) -> list[Any]:
    """The weights on the device in call order, read one at a time so the host never holds two copies."""
    import tvm
    from safetensors import safe_open

    try:
        with safe_open(str(path), "np") as f:
            return [tvm.runtime.tensor(f.get_tensor(n), dev) for n in names]
    except Exception as exc:
        raise IntegrityError(f"{path} does not hold the weights the library needs: {first_line(exc)}") from None


def _eos_ids(folder: Path) -> set[int]:
    for name in ("generation_config.json", "config.json"):
        try:
            eos = json.loads((folder / name).read_text()).get("eos_token_id")
        except (OSError, json.JSONDecodeError):
            continue
        if eos is not None:
            return set(eos if isinstance(eos, list) else [eos])
    return set()
