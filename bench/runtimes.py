"""Runtimes side by side on the same subnets, in one run: ONNX Runtime GenAI int4, TVM (Relax) and
PyTorch eager, on this machine's CPU (or its GPU with --device cuda).

For each shape the subnet is cut once, then each runtime compiles it and is measured in its own
worker process (decode ms/token over 64 tokens, time to first token for a 64-token prompt, peak
memory) with the runtimes interleaved per shape, so machine drift hits them alike. Greedy tokens are
compared with PyTorch's on a fixed prompt: TVM at fp32 should agree exactly, int4 need not.

    .venv/bin/python bench/runtimes.py [--shapes d30-w100,d20-w100,d30-w61,d15-w48]
                                       [--runtimes ort:int4,tvm:fp32,torch:fp32] [--device cpu] [--name runtimes]
    .venv/bin/python bench/runtimes.py --shapes d30-f100-h3,d25-f92-h3,d16-f100-h3 \
        --runtimes ort:int4,llamacpp:q4_1,torch:fp32 --name runtimes_llamacpp     # llama.cpp against ORT GenAI

Run it on an idle machine: every figure is a latency.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe, machine, write_result  # noqa: E402

MODEL = "smollm2-135m"
PROMPT = "The three most useful things to know about the Python standard library are"
AGREE_TOKENS = 16


def greedy(runtime: str, folder: Path, device: str, ids: list[int]) -> list[int]:
    from edgekit.engines import Sampling, get_engine

    session = get_engine(runtime).open(folder, device)
    return list(session.stream(ids, Sampling(max_new_tokens=AGREE_TOKENS, min_new_tokens=AGREE_TOKENS)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="d30-w100,d20-w100,d30-w61,d15-w48")
    ap.add_argument("--runtimes", default="ort:int4,tvm:fp32,torch:fp32", help="runtime:precision, comma-separated")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--elastic", default=None, help="elastic checkpoint to cut from (default: the shipped one)")
    ap.add_argument("--name", default="runtimes", help="results file under bench/results/")
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from edgekit.deployment.measure import MeasureSettings, measure_folder
    from edgekit.elastic.source import Source
    from edgekit.engines import get_engine
    from edgekit.engines.base import folder_bytes

    source = Source.resolve(elastic=args.elastic, model=MODEL)
    plan = source.plan
    runtimes = [tuple(r.split(":")) for r in args.runtimes.split(",")]
    settings = MeasureSettings(new_tokens=64, runs=args.runs, warmup=2, prompt_lens=(64,))
    ids = source.tokenizer()(PROMPT)["input_ids"]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-rt-") as tmp:
        for shape_name in args.shapes.split(","):
            shape = plan.shape(shape_name)
            hf = Path(tmp) / shape.name / "hf"
            source.extract(shape, hf)
            reference = greedy("torch", hf, args.device, ids) if ("torch", "fp32") in runtimes else None
            for runtime, precision in runtimes:
                out = Path(tmp) / shape.name / f"{runtime}-{precision}"
                out.mkdir()
                start = time.perf_counter()
                build = get_engine(runtime).compile(hf, out, precision, args.device)
                compile_s = time.perf_counter() - start
                fig = measure_folder(runtime, out, args.device, settings)
                tokens = greedy(runtime, out, args.device, ids)
                agree = None
                if reference is not None:
                    agree = next(
                        (i for i, (a, b) in enumerate(zip(tokens, reference, strict=False)) if a != b), len(reference)
                    )
                row = {
                    "shape": shape.name, "runtime": runtime, "precision": precision, "device": args.device,
                    "decode_ms": fig.decode_ms, "decode_spread_pct": fig.decode_spread_pct,
                    "ttft_ms_64": fig.ttft_ms.get(64), "peak_rss_mb": fig.peak_rss_mb, "load_s": fig.load_s,
                    "compile_s": round(compile_s, 2), "size_mb": round(folder_bytes(out) / 1e6, 1),
                    "greedy_agree_with_torch": agree, "build": {k: v for k, v in build.items() if k != "seconds"},
                }  # fmt: skip
                rows.append(row)
                print(f"{shape.name} {runtime}-{precision}: {fig.decode_ms:.2f} ms/token", flush=True)
    base = {(r["shape"]): r["decode_ms"] for r in rows if (r["runtime"], r["precision"]) == runtimes[0]}
    for r in rows:
        r["vs_first"] = round(r["decode_ms"] / base[r["shape"]], 3) if r["shape"] in base else None
    result = {"machine": machine(), "settings": settings.to_dict(), "source": source.label, "rows": rows,
              "reference": f"{runtimes[0][0]}-{runtimes[0][1]}"}  # fmt: skip
    path = write_result(args.name, result)

    first = f"{runtimes[0][0]} {runtimes[0][1]}"
    table = Table(title=f"runtimes on the same subnets, {args.device}, batch 1, one run ({source.label})")
    for col in ("shape", "runtime", "ms/token", "spread", f"× {first}", "first token (64)", "peak MB", "compile s",
                f"greedy = torch ({AGREE_TOKENS})"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("shape", "runtime") else "right")
    for r in rows:
        agree = "-" if r["greedy_agree_with_torch"] is None else f"{r['greedy_agree_with_torch']}/{AGREE_TOKENS}"
        table.add_row(r["shape"], f"{r['runtime']} {r['precision']}", f"{r['decode_ms']:.2f}",
                      f"{r['decode_spread_pct']:.1f}%", f"{r['vs_first']:.2f}", f"{r['ttft_ms_64']:.0f} ms",
                      f"{r['peak_rss_mb']:.0f}", f"{r['compile_s']:.1f}", agree)  # fmt: skip
    Console().print(table)
    ratios = {f"{rt}-{p}": statistics.median(r["vs_first"] for r in rows if (r["runtime"], r["precision"]) == (rt, p))
              for rt, p in runtimes}  # fmt: skip
    print("median ms/token ratio to " + first + ": " + ", ".join(f"{k} {v:.2f}×" for k, v in ratios.items()))
    print(describe(result["machine"]))
    print(f"written {path}")


if __name__ == "__main__":
    main()
