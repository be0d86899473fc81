"""MLC-LLM: `convert_weight`, `gen_config` and `compile` through its CLI; generation through its engine.

MLC-LLM has no wheels on PyPI. On a Jetson it comes in the MLC images of the jetson-containers
project (dustynv/mlc); on a PC from MLC's own wheel index. Every command this engine runs is a
plain `python -m mlc_llm ...` line, built by `commands()` so `--dry-run` and the tests see exactly
what a real run would execute.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit import shell
from edgekit.engines.base import RuntimeInfo, Sampling
from edgekit.engines.mlc_config import check_llama_config
from edgekit.errors import ExternalToolError, IntegrityError, MissingDependencyError, UsageError, first_line
from edgekit.models.weights import TOKENIZER_FILES
from edgekit.packages import installed_version
from edgekit.shell import Command

GPU_DEVICES = ("cuda", "vulkan", "metal", "rocm")
PACKAGES = ("mlc-llm", "mlc-llm-nightly", "mlc-llm-nightly-cu122", "mlc-llm-cu122")
PRECISIONS = ["q4f16_1", "q4f32_1", "q0f16", "q0f32"]
LIB = "lib.so"
META = "edgekit-mlc.json"
WHERE = (
    "MLC-LLM is not installed: on a Jetson use the jetson-containers MLC image (dustynv/mlc:<ver>-r36.4.0), "
    "on a PC MLC's wheels (pip install --pre -f https://mlc.ai/wheels mlc-llm-nightly-cu122 mlc-ai-nightly-cu122)"
)
# Cross-compiling for a board from a PC: MLC's TVM takes targets as JSON dicts, not "cuda -arch=..." strings.
HOST_TRIPLES = {"aarch64": "aarch64-linux-gnu", "x86_64": "x86_64-linux-gnu"}


def conv_template(hf_dir: Path) -> str:
    """MLC's conversation template for the model's chat format (MLC needs one; we template ourselves)."""
    template = ""
    if (hf_dir / "chat_template.jinja").is_file():  # transformers 5 keeps the template beside the config
        template = (hf_dir / "chat_template.jinja").read_text()
    else:
        with contextlib.suppress(OSError, ValueError):
            template = str(json.loads((hf_dir / "tokenizer_config.json").read_text()).get("chat_template") or "")
    if "<|im_start|>" in template:
        return "chatml"
    if "<|start_header_id|>" in template:
        return "llama-3"
    return "LM"


def device_target(device: str, options: dict[str, str]) -> list[str]:
    """`--device` (and `--host` when cross-compiling) for `mlc_llm compile`."""
    arch, host = options.get("arch"), options.get("host")
    if not arch and not host:
        return ["--device", device]  # on the board itself MLC detects the GPU
    target: dict[str, Any] = {"kind": device}
    if arch:
        target["arch"] = arch
    args = ["--device", json.dumps(target, separators=(",", ":"))]
    if host:
        args += ["--host", json.dumps({"kind": "llvm", "mtriple": HOST_TRIPLES.get(host, host)}, separators=(",", ":"))]
    return args


def commands(
    hf_dir: Path, out: Path, precision: str, device: str, options: dict[str, str] | None = None
) -> list[list[str]]:
    """The three MLC-LLM steps, as argument lists: weights, chat config, model library."""
    opts = dict(options or {})
    config = json.loads((hf_dir / "config.json").read_text())
    compat = check_llama_config(config)
    context = str(opts.get("context_window_size") or config.get("max_position_embeddings") or 2048)
    mlc = [sys.executable, "-m", "mlc_llm"]
    compile_cmd = [
        *mlc,
        "compile",
        str(out / "mlc-chat-config.json"),
        *device_target(device, opts),
        "-o",
        str(out / LIB),
    ]
    if not compat.flashinfer or opts.get("flashinfer") == "0":
        compile_cmd += ["--opt", "O3;flashinfer=0"]
    return [
        [*mlc, "convert_weight", str(hf_dir), "--quantization", precision, "-o", str(out)],
        [*mlc, "gen_config", str(hf_dir), "--quantization", precision,
         "--conv-template", opts.get("conv_template") or conv_template(hf_dir),
         "--context-window-size", context, "--prefill-chunk-size", str(min(int(context), 1024)),
         "--max-batch-size", "1", "-o", str(out)],
        compile_cmd,
    ]  # fmt: skip


def _q_rows(hf_dir: Path) -> int | None:
    from safetensors import safe_open

    for path in sorted(hf_dir.glob("*.safetensors")):
        with safe_open(str(path), "np") as f:
            if "model.layers.0.self_attn.q_proj.weight" in f.keys():  # noqa: SIM118  (safe_open is no dict)
                return int(f.get_slice("model.layers.0.self_attn.q_proj.weight").get_shape()[0])
    return None


class MlcEngine:
    name = "mlc"

    def probe(self) -> RuntimeInfo:
        dist, ver = installed_version(*PACKAGES)
        info = RuntimeInfo("mlc", dist or "mlc-llm", False, ver)
        try:
            import mlc_llm
        except ImportError:
            info.note = WHERE
            return info
        except Exception as exc:  # installed but broken (a TVM built for another CUDA, say)
            info.note = f"mlc_llm does not import: {first_line(exc)}"
            return info
        # Jetson containers build mlc_llm from source, so there may be no distribution metadata to read
        info.installed, info.package = True, dist or "mlc_llm (source build)"
        info.version = ver or str(getattr(mlc_llm, "__version__", "unknown"))
        info.offers, info.gpu, info.gpu_detail = list(GPU_DEVICES), True, f"mlc_llm {info.version}"
        return info

    def check(self) -> None:
        try:
            import mlc_llm  # noqa: F401
        except ImportError:
            raise MissingDependencyError(f"runtime 'mlc': {WHERE}") from None
        except Exception as exc:  # a source build without its compiled library fails at import
            raise MissingDependencyError(f"runtime 'mlc': mlc_llm is present but does not load ({exc})") from None

    def versions(self) -> dict[str, str]:
        found: dict[str, str] = {}
        try:
            import mlc_llm

            found["mlc_llm"] = str(getattr(mlc_llm, "__version__", "unknown"))
            import tvm

            found["tvm (mlc)"] = str(tvm.__version__)
        except Exception:  # versions are informational; check() is what refuses
            pass
        return found

    def precisions(self, device: str) -> list[str]:
        return PRECISIONS if device in GPU_DEVICES else []

    def validate(self, hf_dir: Path, precision: str, device: str) -> list[str]:
        """Refuse a shape or precision MLC cannot compile, saying why; return notes for what it adapts."""
        if device not in GPU_DEVICES:
            raise UsageError(f"MLC-LLM compiles for GPUs ({', '.join(GPU_DEVICES)}), not {device}; use ort or tvm")
        if precision not in PRECISIONS:
            raise UsageError(f"MLC-LLM quantizations edgekit drives: {', '.join(PRECISIONS)}; not {precision}")
        config = json.loads((hf_dir / "config.json").read_text())
        compat = check_llama_config(config, q_rows=_q_rows(hf_dir))
        if not compat.ok:
            raise UsageError(f"MLC-LLM cannot compile this shape: {compat.reason()}")
        return compat.notes

    def compile(
        self, hf_dir: Path, out: Path, precision: str, device: str, options: dict[str, str] | None = None
    ) -> dict[str, Any]:
        notes = self.validate(hf_dir, precision, device)
        self.check()
        start = time.perf_counter()
        steps = commands(hf_dir, out, precision, device, options)
        for cmd in steps:
            done = shell.capture(Command(tuple(cmd), f"mlc_llm {cmd[3]}"), timeout=None)
            if not done.ok:
                raise ExternalToolError(f"mlc_llm {cmd[3]} failed: {done.error_line()}")
        if not (out / LIB).is_file() or not (out / "mlc-chat-config.json").is_file():
            raise ExternalToolError(f"mlc_llm compile finished without writing {LIB} and mlc-chat-config.json")
        for name in ("config.json", "generation_config.json", *TOKENIZER_FILES):
            if (hf_dir / name).is_file() and not (out / name).exists():
                shutil.copy2(hf_dir / name, out / name)  # our chat templating reads the HF tokenizer
        (out / META).write_text(json.dumps({"precision": precision, "device": device, "lib": LIB}, indent=2))
        return {
            "tool": "mlc_llm convert_weight / gen_config / compile",
            "precision": precision,
            "device": device,
            "options": dict(options or {}),
            "commands": [shlex.join(c) for c in steps],
            "notes": notes,
            "seconds": round(time.perf_counter() - start, 2),
        }

    def describe(
        self, hf_dir: Path, out: Path, precision: str, device: str, options: dict[str, str] | None = None
    ) -> list[str]:
        return [shlex.join(cmd) for cmd in commands(hf_dir, out, precision, device, options)]

    def open(self, folder: Path, device: str = "cuda") -> MlcSession:
        self.check()
        if not (folder / LIB).is_file():
            raise IntegrityError(f"{folder} holds no MLC model library ({LIB}); compile it with --runtime mlc")
        return MlcSession(folder, device)


class MlcSession:
    """Token ids in, token ids out, through MLC's serving engine.

    `SyncMLCEngine` is the same engine core as `MLCEngine` (the OpenAI-style API) but hands back the
    raw `delta_token_ids` of each step; our chat applies the HF chat template itself and needs ids,
    and a timed run must see each token as it is made rather than detokenized text.
    """

    runtime = "mlc"

    def __init__(self, folder: Path, device: str = "cuda") -> None:
        from mlc_llm.serve import EngineConfig
        from mlc_llm.serve.sync_engine import SyncMLCEngine

        self.device = device
        chat_config = json.loads((folder / "mlc-chat-config.json").read_text())
        self.context_length = int(chat_config.get("context_window_size") or 2048)
        hf = (
            json.loads((folder / "generation_config.json").read_text())
            if (folder / "generation_config.json").is_file()
            else {}
        )
        eos = hf.get("eos_token_id", chat_config.get("eos_token_id", []))
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self._pending: list[int] = []
        self._finished = False
        self._next_id = 0
        self._engine = SyncMLCEngine(
            model=str(folder), device=device, model_lib=str(folder / LIB), mode="interactive",
            engine_config=EngineConfig(max_num_sequence=1, max_total_sequence_length=self.context_length),
            request_stream_callback=self._on_stream,
        )  # fmt: skip

    def _on_stream(self, outputs: list[Any]) -> None:
        for output in outputs:
            _, streams = output.unpack()
            self._pending.extend(int(t) for t in streams[0].delta_token_ids)
            if streams[0].finish_reason is not None:
                self._finished = True

    def _request(self, ids: list[int], sampling: Sampling) -> str:
        from mlc_llm.protocol.debug_protocol import DebugConfig
        from mlc_llm.protocol.generation_config import GenerationConfig
        from mlc_llm.serve import data

        room = self.context_length - len(ids)
        config = GenerationConfig(
            max_tokens=max(1, min(sampling.max_new_tokens, room)),
            temperature=sampling.temperature, top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
            seed=sampling.seed,
            # MLC has no minimum length; a measured run asks for exactly min == max tokens, so ignore EOS
            debug_config=DebugConfig(ignore_eos=sampling.min_new_tokens > 0),
        )  # fmt: skip
        rid = str(self._next_id)
        self._next_id += 1
        self._pending.clear()
        self._finished = False
        self._engine.add_request(self._engine.create_request(rid, [data.TokenData(ids)], config))
        return rid

    def stream(self, ids: list[int], sampling: Sampling) -> Iterator[int]:
        rid = self._request(ids, sampling)
        try:
            while True:
                self._engine.step()
                while self._pending:
                    yield self._pending.pop(0)
                if self._finished:
                    return
        finally:
            if not self._finished:  # the caller stopped early: free the sequence's KV pages
                self._engine.abort_request(rid)

    def first_token(self, ids: list[int]) -> tuple[float, float]:
        """MLC does prefill and the first sample in one engine step, so both figures are that step."""
        start = time.perf_counter()
        for _ in self.stream(ids, Sampling(max_new_tokens=1, min_new_tokens=1)):
            break
        elapsed = time.perf_counter() - start
        return elapsed, elapsed
