"""Decode against the bandwidth floor: every runtime's 4-bit builds of the same subnets, in one run.

    .venv/bin/python bench/decode.py [--shapes d30-f100-h3,d24-f88-h3,d18-f79-h3] [--rounds 3] [--runs 3]
        [--configs ort:int4,ort:int4:block_size=64,tvm:int4,tvm:int4:block_size=64,llamacpp:q4_1,llamacpp:q4_0,...]
        [--quality-tokens 2048] [--name decode]

Each shape is cut once from the shipped checkpoint; every config (runtime:precision[:KEY=VALUE...]) builds it
as deploy would (our GPTQ weights for ORT GenAI int4, TVM int4 and llama.cpp q4_1; llama.cpp's own quantizer
for its other types). Then, per build:
- quality: perplexity through the runtime's own logits on the shipped calibration file's held-out sequences
  (those GPTQ does not read), and the same for the subnet's fp32 weights in torch, so every ratio is against the
  weights the build came from;
- speed, in --rounds interleaved rounds (every build once per round, the order rotated, each in a fresh worker
  process): decode ms/token of 64 new tokens after a 128-token prompt (median of --runs), time to first token for
  a 128-token prompt, peak resident memory; the host's read bandwidth is measured at the start of every round;
- the bandwidth floor: the build's weight bytes (what a decode step reads: every matrix once, the tied
  embedding once as the LM head; the KV cache of 192 positions adds a few per cent and is left out) over the
  median read bandwidth, and the fraction of it the build reaches (floor / measured ms).
"Searched" for a runtime is the pick rule of `profile --search-options` applied to its configs in this run: the
fastest whose perplexity is within 2 % of the runtime's default (its first config). Goals (the performance
issue) are reported whether met or not. Results: bench/results/decode.json with the machine.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe, machine, write_result  # noqa: E402

CONFIGS = "ort:int4,ort:int4:block_size=64,tvm:int4,tvm:int4:block_size=64,llamacpp:q4_1,llamacpp:q4_0,llamacpp:q4_k_m"
EDGEKIT = ("ort", "tvm")  # the builds edgekit makes (llama.cpp is the comparison)
WEIGHT_FILES = {"ort": ("*.onnx.data", "*.onnx"), "tvm": ("params.safetensors",), "llamacpp": ("model.gguf",),
                "torch": ("*.safetensors",)}  # fmt: skip


def parse_config(text: str) -> tuple[str, str, dict[str, str]]:
    runtime, precision, *opts = text.split(":")
    return runtime, precision, dict(o.split("=", 1) for o in opts)


def weight_bytes(runtime: str, folder: Path) -> int:
    return sum(p.stat().st_size for pattern in WEIGHT_FILES[runtime] for p in folder.glob(pattern))


def session_ppl(runtime: str, folder: Path, seqs: list[list[int]]) -> float:
    from edgekit.deployment.option_search import sequence_ppl
    from edgekit.engines import get_engine

    session = get_engine(runtime).open(folder, "cpu")
    try:
        return sequence_ppl(session, seqs)
    finally:
        del session
        gc.collect()


def pick_searched(rows: list[dict[str, Any]], tolerance: float = 0.02) -> dict[str, Any]:
    """The fastest row within `tolerance` of the first row's perplexity (the runtime's default)."""
    base = rows[0]["ppl"]
    return min((r for r in rows if r["ppl"] <= base * (1 + tolerance)), key=lambda r: r["decode_ms"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="d30-f100-h3,d24-f88-h3,d18-f79-h3")
    ap.add_argument("--configs", default=CONFIGS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quality-tokens", type=int, default=2048)
    ap.add_argument("--name", default="decode")
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from edgekit.deployment.measure import MeasureSettings, measure_folder
    from edgekit.deployment.option_search import interleaved, quality_text
    from edgekit.elastic.source import Source
    from edgekit.engines import get_engine
    from edgekit.hardware.microbench import memory_bandwidth

    source = Source.resolve(elastic=None, model="smollm2-135m")
    configs = [parse_config(c) for c in args.configs.split(",")]
    settings = MeasureSettings(new_tokens=64, runs=args.runs, warmup=1, prompt_lens=(128,), decode_prompt_len=128)
    seqs, quality = quality_text(source.tokenizer(), args.quality_tokens)
    builds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-decode-") as tmp:
        for shape_name in args.shapes.split(","):
            shape = source.plan.shape(shape_name)
            hf = Path(tmp) / shape.name / "hf"
            source.extract(shape, hf)
            fp32_ppl = session_ppl("torch", hf, seqs)
            print(f"{shape.name}: fp32 weights in torch, ppl {fp32_ppl:.3f}", flush=True)
            for runtime, precision, opts in configs:
                label = ":".join([runtime, precision, *(f"{k}={v}" for k, v in opts.items())])
                out = Path(tmp) / shape.name / label.replace(":", "-").replace("=", "")
                out.mkdir()
                start = time.perf_counter()
                get_engine(runtime).compile(hf, out, precision, "cpu", opts)
                compile_s = time.perf_counter() - start
                ppl = session_ppl(runtime, out, seqs)
                builds.append({"shape": shape.name, "config": label, "runtime": runtime, "precision": precision,
                               "options": opts, "folder": out, "compile_s": round(compile_s, 1),
                               "weight_bytes": weight_bytes(runtime, out), "ppl": round(ppl, 4),
                               "fp32_ppl": round(fp32_ppl, 4), "ppl_vs_fp32": round(ppl / fp32_ppl, 4)})  # fmt: skip
                print(f"  {label}: built in {compile_s:.0f} s, {builds[-1]['weight_bytes'] / 1e6:.1f} MB of weights, "
                      f"ppl {ppl:.3f} ({ppl / fp32_ppl:.3f}x fp32)", flush=True)  # fmt: skip

        bandwidth: list[float] = []
        figures: dict[int, list[Any]] = {i: [] for i in range(len(builds))}
        round_started = [-1]

        def measure(i: int) -> float:
            rnd = sum(len(v) for v in figures.values()) // len(builds)
            if rnd != round_started[0]:  # first measurement of a round: the host's read bandwidth now
                round_started[0] = rnd
                bandwidth.append(memory_bandwidth("cpu").value)
                print(f"round {rnd + 1}: read bandwidth {bandwidth[-1]:.1f} GB/s", flush=True)
            b = builds[i]
            fig = measure_folder(b["runtime"], b["folder"], "cpu", settings)
            figures[i].append(fig)
            print(f"  {b['shape']} {b['config']}: {fig.decode_ms:.2f} ms/token", flush=True)
            return fig.decode_ms

        interleaved(measure, len(builds), args.rounds)
    gbps = statistics.median(bandwidth)
    rows = []
    for i, b in enumerate(builds):
        figs = figures[i]
        decode = statistics.median(f.decode_ms for f in figs)
        floor_ms = b["weight_bytes"] / (gbps * 1e9) * 1000
        rows.append({**{k: v for k, v in b.items() if k != "folder"}, "decode_ms": round(decode, 3),
                     "decode_ms_rounds": [f.decode_ms for f in figs],
                     "ttft_ms_128": round(statistics.median(f.ttft_ms[128] for f in figs), 1),
                     "peak_rss_mb": round(max(f.peak_rss_mb for f in figs), 1), "floor_ms": round(floor_ms, 3),
                     "floor_fraction": round(floor_ms / decode, 4)})  # fmt: skip
    searched = {}
    for shape_name in args.shapes.split(","):
        for runtime in dict.fromkeys(r["runtime"] for r in rows):
            mine = [r for r in rows if r["shape"] == shape_name and r["runtime"] == runtime]
            if mine:
                best = pick_searched(mine)
                searched[f"{shape_name} {runtime}"] = best["config"]
                for r in mine:
                    r["searched"] = r is best
    full = args.shapes.split(",")[0]
    goals = goals_of([r for r in rows if r["shape"] == full])
    result = {"machine": machine(), "settings": {**settings.to_dict(), "rounds": args.rounds},
              "bandwidth_gbps": bandwidth, "bandwidth_median_gbps": round(gbps, 2), "quality_text": quality,
              "source": source.label, "rows": rows, "searched": searched, "goals": goals}  # fmt: skip
    path = write_result(args.name, result)

    table = Table(title=f"decode, batch 1, 128-token prompt, 64 new tokens; read bandwidth {gbps:.1f} GB/s")
    for col in ("shape", "build", "ms/token", "first token", "peak MB", "weights MB", "floor", "ppl", "× fp32"):
        table.add_column(col, justify="left" if col in ("shape", "build") else "right")
    for r in rows:
        table.add_row(r["shape"], r["config"] + (" *" if r.get("searched") else ""), f"{r['decode_ms']:.2f}",
                      f"{r['ttft_ms_128']:.0f} ms", f"{r['peak_rss_mb']:.0f}", f"{r['weight_bytes'] / 1e6:.1f}",
                      f"{r['floor_fraction']:.0%}", f"{r['ppl']:.3f}", f"{r['ppl_vs_fp32']:.3f}")  # fmt: skip
    Console().print(table)
    for g in goals:
        print(f"{'met' if g['met'] else 'NOT met'}: {g['goal']} ({g['measured']})")
    print(describe(result["machine"]))
    print(f"written {path}")


def goals_of(full: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The performance issue's goals on the full model's rows (speculation has its own benchmark)."""
    ours = [r for r in full if r["runtime"] in EDGEKIT]
    theirs = [r for r in full if r["runtime"] == "llamacpp"]
    goals = []
    if ours and theirs:
        fastest, rival = min(ours, key=lambda r: r["decode_ms"]), min(theirs, key=lambda r: r["decode_ms"])
        speed, quality = rival["decode_ms"] / fastest["decode_ms"], fastest["ppl"] / rival["ppl"]
        goals.append({"goal": "fastest edgekit build >= 1.6x faster than llama.cpp's fastest quant, no worse ppl",
                      "met": speed >= 1.6 and quality <= 1.0,
                      "measured": f"{fastest['config']} at {speed:.2f}x the speed of {rival['config']}, "
                                  f"ppl {quality:.3f}x its"})  # fmt: skip
    if ours:
        best = max(ours, key=lambda r: r["floor_fraction"])
        rival = max(theirs, key=lambda r: r["floor_fraction"], default=None)
        also = f"; llama.cpp's best, {rival['config']}, {rival['floor_fraction']:.0%}" if rival else ""
        goals.append({"goal": "an edgekit build at 60 % of the bandwidth floor or more",
                      "met": best["floor_fraction"] >= 0.6,
                      "measured": f"best {best['config']} at {best['floor_fraction']:.0%}{also}"})  # fmt: skip
    tvm = next((r for r in full if r["config"] == "tvm:int4"), None)
    ort = next((r for r in full if r["config"] == "ort:int4"), None)
    if tvm and ort:
        ratio = tvm["decode_ms"] / ort["decode_ms"]
        measured = f"{tvm['decode_ms']:.2f} against {ort['decode_ms']:.2f} ms/token: {ratio:.2f}x"
        goals.append({"goal": "TVM int4 within 1.2x of ORT int4", "met": ratio <= 1.2, "measured": measured})
    return goals


if __name__ == "__main__":
    main()
