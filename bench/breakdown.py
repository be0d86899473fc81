"""Where a decode step's time goes: ONNX Runtime GenAI from ONNX Runtime's own profiler, TVM from its VM's
instrumentation hook.

    .venv/bin/python bench/breakdown.py DEPLOYMENT [--tokens 64] [--name breakdown]

ONNX Runtime GenAI (an ort deployment): the deployment's model folder is copied, its genai_config.json told to
profile (`enable_profiling`), and a greedy reply of up to --tokens tokens (it ends at the end of turn) made
through onnxruntime_genai. ONNX Runtime writes one trace event per kernel and per run: the first run is the
prompt (prefill), every later one a decode step. Reported per decode step: the run's wall time, the kernels'
time grouped by what they compute (the LM head, the attention and MLP projections, attention itself, norms, the
rest) and the time outside any kernel (the runtime's own overhead between them). Profiling slows every kernel a
little, so the shares are the figures to read, not the times.

TVM (a tvm deployment): the relax VM calls a Python hook before and after every call it makes (each compiled
kernel, the paged KV cache's attention, its own builtins for allocation and tuples); the hook times each call
and reads the shapes of its arguments, which name the projection (the LM head's output is the vocabulary, the
MLP's gate/up output twice the FFN width...). The hook's own cost lands in "outside kernels".

llama.cpp (a llamacpp deployment): llama.cpp's own perf counters (llama_perf_context: time and count of prompt
and decode evaluations inside the library) around a greedy reply through the session; a decode step splits into
llama.cpp's graph evaluation and everything outside it (llama-cpp-python's generator, the logits copy,
sampling). The Python bindings do not expose ggml's per-operator timings, so this one is two groups only.
Figures go to bench/results/breakdown.json (or --name) with the machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe, machine, write_result  # noqa: E402

PROMPT = "Write a short paragraph about why small language models are useful on edge devices."
GROUPS = [  # (group, test on the node name), first match wins
    ("LM head", lambda n: "lm_head" in n),
    ("attention q/k/v/o projections", lambda n: "/attn/" in n and "MatMul" in n),
    ("MLP gate/up/down projections", lambda n: "/mlp/" in n and "MatMul" in n),
    ("attention (GroupQueryAttention)", lambda n: "GroupQueryAttention" in n),
    ("norms", lambda n: "LayerNorm" in n or "layernorm" in n.lower()),
    ("MLP activation", lambda n: "/mlp/" in n),
    ("embedding", lambda n: "embed_tokens" in n),
]


def group_of(name: str) -> str:
    return next((g for g, test in GROUPS if test(name)), "other")


def profile(model_dir: Path, tokens: int, work: Path) -> list[dict[str, Any]]:
    import onnxruntime_genai as og

    folder = work / "model"
    shutil.copytree(model_dir, folder)
    config_path = folder / "genai_config.json"
    config = json.loads(config_path.read_text())
    config["model"]["decoder"].setdefault("session_options", {})["enable_profiling"] = str(work / "ort")
    config_path.write_text(json.dumps(config, indent=1))
    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    ids = tokenizer.apply_chat_template(json.dumps([{"role": "user", "content": PROMPT}]), add_generation_prompt=True)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(tokenizer.encode(ids)) + tokens + 1)
    generator = og.Generator(model, params)
    generator.append_tokens(tokenizer.encode(ids))
    made = 0
    while made < tokens and not generator.is_done():
        generator.generate_next_token()
        made += 1
    del generator, params, tokenizer, model  # the trace is written when the last reference to the session goes
    import gc

    gc.collect()
    (trace,) = work.glob("ort_*.json")
    return json.loads(trace.read_text())


def breakdown(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Per decode step (every run after the first): wall ms, and ms per kernel group and outside kernels."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"), key=lambda e: e["ts"])
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    decode = runs[1:]
    per_group: dict[str, list[float]] = collections.defaultdict(lambda: [0.0] * len(decode))
    per_op: dict[str, float] = collections.Counter()
    starts = [r["ts"] for r in decode]
    for e in nodes:
        # the decode step whose run holds this kernel
        i = next((k for k in range(len(decode) - 1, -1, -1) if starts[k] <= e["ts"]), None)
        if i is None or e["ts"] > decode[i]["ts"] + decode[i]["dur"]:
            continue
        per_group[group_of(e["name"])][i] += e["dur"] / 1000
        per_op[e["args"].get("op_name", "?")] += e["dur"] / 1000 / len(decode)
    wall = [r["dur"] / 1000 for r in decode]
    kernels = [sum(g[i] for g in per_group.values()) for i in range(len(decode))]
    groups = {g: round(statistics.median(v), 3) for g, v in per_group.items()}
    groups["outside kernels"] = round(statistics.median(w - k for w, k in zip(wall, kernels, strict=True)), 3)
    step = statistics.median(wall)
    return {
        "prefill_ms": round(runs[0]["dur"] / 1000, 2), "decode_steps": len(decode), "step_ms": round(step, 3),
        "groups_ms": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
        "groups_share": {g: round(v / step, 4) for g, v in sorted(groups.items(), key=lambda kv: -kv[1])},
        "ops_ms": {k: round(v, 3) for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])[:10]},
    }  # fmt: skip


def tvm_group(symbol: str, args: list[Any], config: dict[str, Any]) -> str:
    """The group of one VM call, from its symbol and its arguments' shapes (x, weight, ..., out)."""
    if "attention" in symbol:
        return "attention (paged KV cache)"
    if symbol.startswith("vm.builtin"):
        return "runtime (VM builtins)"
    if "rms_norm" in symbol:
        return "norms"
    if "silu" in symbol:
        return "MLP activation"
    if "take" in symbol:
        return "embedding"
    if "matmul" not in symbol:
        return "other"
    shapes = [tuple(int(d) for d in a.shape) for a in args if hasattr(a, "shape")]
    k, n = shapes[0][-1], shapes[-1][-1]  # x's width and the output's
    h, f = config["hidden_size"], config["intermediate_size"]
    if n == config["vocab_size"]:
        return "LM head"
    if n == 2 * f or k == f:
        return "MLP gate/up/down projections"
    return "attention q/k/v/o projections" if k == h or n == h else "other"


def profile_tvm(model_dir: Path, tokens: int) -> dict[str, Any]:
    """Per decode step: wall ms, ms per group of VM calls, and the rest (the hook, Python, the VM loop)."""
    import time

    import numpy as np
    from transformers import AutoTokenizer

    from edgekit.engines.tvm_engine import TvmSession

    config = json.loads((model_dir / "config.json").read_text())
    session = TvmSession(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    chat = [{"role": "user", "content": PROMPT}]
    ids = list(tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"])
    spent: dict[str, float] = collections.Counter()
    calls: dict[str, int] = collections.Counter()
    groups: dict[str, str] = {}
    started: list[float] = []

    def hook(_func: Any, symbol: str, before: bool, _ret: Any, *args: Any) -> int:
        if before:
            started.append(time.perf_counter())
            return 0
        spent[symbol] += time.perf_counter() - started.pop()
        calls[symbol] += 1
        if symbol not in groups:
            groups[symbol] = tvm_group(symbol, list(args), config)
        return 0

    start = time.perf_counter()
    logits = session.prefill(ids)
    prefill_ms = (time.perf_counter() - start) * 1000
    walls = []
    session._vm.set_instrument(hook)  # noqa: SLF001 (the bench reads the session's VM on purpose)
    for _ in range(tokens):
        token = int(np.argmax(logits.numpy()[0, -1]))
        start = time.perf_counter()
        logits = session.decode(token)
        walls.append((time.perf_counter() - start) * 1000)
    per_group: dict[str, float] = collections.Counter()
    for symbol, seconds in spent.items():
        per_group[groups[symbol]] += seconds * 1000 / tokens
    step = statistics.median(walls)
    mean_wall = statistics.mean(walls)
    per_group["outside kernels"] = mean_wall - sum(per_group.values())
    scale = step / mean_wall  # groups are means; report them on the median step
    grouped = {g: round(v * scale, 3) for g, v in sorted(per_group.items(), key=lambda kv: -kv[1])}
    ops = sorted(spent.items(), key=lambda kv: -kv[1])[:10]
    return {
        "prefill_ms": round(prefill_ms, 2), "decode_steps": tokens, "step_ms": round(step, 3),
        "groups_ms": grouped, "groups_share": {g: round(v / step, 4) for g, v in grouped.items()},
        "ops_ms": {f"{k} (x{calls[k] // tokens})": round(v * 1000 / tokens, 3) for k, v in ops},
    }  # fmt: skip


def profile_llamacpp(model_dir: Path, tokens: int) -> dict[str, Any]:
    """Per decode step: wall ms, llama.cpp's own decode time (its perf counters) and the rest."""
    import time

    import llama_cpp
    from transformers import AutoTokenizer

    from edgekit.engines import Sampling
    from edgekit.engines.llamacpp import LlamaCppSession

    session = LlamaCppSession(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    chat = [{"role": "user", "content": PROMPT}]
    ids = list(tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"])
    greedy = Sampling(max_new_tokens=tokens, min_new_tokens=tokens)
    list(session.stream(ids, Sampling(max_new_tokens=4)))  # warm
    ctx = session.llm._ctx.ctx  # noqa: SLF001 (the counters live on the context)
    llama_cpp.llama_perf_context_reset(ctx)
    stamps = []
    start = time.perf_counter()
    for _ in session.stream(ids, greedy):
        stamps.append(time.perf_counter())
    perf = llama_cpp.llama_perf_context(ctx)
    steps = [(b - a) * 1000 for a, b in zip(stamps, stamps[1:], strict=False)]
    step = statistics.median(steps)
    inside = perf.t_eval_ms / max(perf.n_eval, 1)
    scale = step / statistics.mean(steps)
    outside = statistics.mean(steps) - inside
    grouped = {"llama.cpp decode (ggml graph)": round(inside * scale, 3),
               "outside llama.cpp (bindings, logits copy, sampling)": round(outside * scale, 3)}  # fmt: skip
    return {
        "prefill_ms": round(perf.t_p_eval_ms, 2), "decode_steps": len(steps), "step_ms": round(step, 3),
        "groups_ms": grouped, "groups_share": {g: round(v / step, 4) for g, v in grouped.items()},
        "ops_ms": {}, "counters": {"n_p_eval": perf.n_p_eval, "n_eval": perf.n_eval, "t_eval_ms": perf.t_eval_ms,
                                    "first_token_wall_ms": round((stamps[0] - start) * 1000, 2)},
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("deployment", type=Path)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--name", default="breakdown")
    args = ap.parse_args()
    manifest = json.loads((args.deployment / "manifest.json").read_text())
    runtime = manifest["runtime"]["name"]
    if runtime == "ort":
        with tempfile.TemporaryDirectory(prefix="edgekit-breakdown-") as tmp:
            figures = breakdown(profile(args.deployment / "model", args.tokens, Path(tmp)))
    elif runtime == "tvm":
        figures = profile_tvm(args.deployment / "model", args.tokens)
    elif runtime == "llamacpp":
        figures = profile_llamacpp(args.deployment / "model", args.tokens)
    else:
        raise SystemExit(f"{args.deployment} runs on {runtime}: this breakdown reads ORT's, TVM's and llama.cpp's")
    result = {"machine": machine(), "deployment": {"shape": manifest["shape"]["shape"], "runtime": runtime,
              "precision": manifest["runtime"]["precision"]}, "tokens": args.tokens, **figures}  # fmt: skip
    write_result(args.name, result)
    print(f"{result['deployment']['shape']} {runtime} {result['deployment']['precision']}: decode step "
          f"{result['step_ms']:.2f} ms (profiled), prefill {result['prefill_ms']:.1f} ms")  # fmt: skip
    for g, ms in result["groups_ms"].items():
        print(f"  {g:<34} {ms:7.3f} ms  {result['groups_share'][g]:6.1%}")
    print(describe(result["machine"]))


if __name__ == "__main__":
    main()
