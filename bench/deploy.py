"""Deploy benchmark on this machine, default model, ONNX Runtime GenAI int4 on CPU:

(a) the latency predictor's error on shapes left out of its fit (median, max, RMSE, within ±10 %);
(b) a sweep of 8 budgets from the fastest shape to the full model: measured ms/token of what deploy
    chose against the budget, and its accuracy against the best shape that really fits (the oracle,
    from the measured LUT);
(c) end-to-end deploy time split into extract, compile and verify;
(d) the full model's decode speed in ORT int4, llama.cpp (llama-cpp-python, on the same GGUF the
    default model is pulled from) and torch eager fp32, side by side in one run.

    .venv/bin/python bench/deploy.py [--skip-profile] [--only a,b,c,d]

Run it on an idle machine: every figure is a latency. The measured LUT is written to
$EDGEKIT_HOME/luts and, with --ship, copied to edgekit/data/luts/ as the reference LUT estimates scale from.
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

from common import RESULTS, WIKITEXT, describe, machine, write_result  # noqa: E402

MODEL = "smollm2-135m"


def profile_host(plan: Any) -> Any:
    from edgekit.deployment.latency import fit_subset
    from edgekit.deployment.lut import save_lut
    from edgekit.deployment.measure import MeasureSettings
    from edgekit.deployment.profile import ProfileRequest, profile
    from edgekit.deployment.resolve import resolve_target

    res = resolve_target("host", "ort", "int4")
    grid = plan.grid()
    req = ProfileRequest(res.target_name, "ort", "int4", "cpu", grid, fit_subset(grid), MeasureSettings(runs=7))
    lut = profile(plan, req, on_shape=lambda s: print(f"profiling {s}", flush=True))
    save_lut(lut)
    return lut


def ranking_for(plan: Any) -> Any:
    """The shipped elastic checkpoint's table when there is one, else stage-1 held-out wikitext ppl."""
    from edgekit.elastic.source import Source

    source = Source.resolve(model=MODEL)
    dev_text = None if source.accuracy else WIKITEXT
    return source, source.ranking(source.shapes(), "ppl", dev_text), dev_text


def sweep(lut: Any, plan: Any, dev_text: Path | None) -> dict[str, Any]:
    from edgekit.deployment.budget import parse_budget
    from edgekit.deployment.pipeline import DeployRequest, deploy
    from edgekit.errors import UsageError
    from edgekit.shapes import parse_shape

    source, ranking, _ = ranking_for(plan)
    measured = {m.shape: m.decode_ms for m in lut.measured}
    predicted = {m.shape: lut.predict(parse_shape(m.shape, lut.geometry)).decode_ms for m in lut.measured}
    # from the fastest shape (as measured, and as the predictor sees it) to the full model
    fastest = max(min(measured.values()), min(predicted.values())) * 1.02
    slowest = max(measured[plan.full.name], predicted[plan.full.name])
    budgets = [fastest + (slowest - fastest) * i / 7 for i in range(8)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for b in budgets:
            req = DeployRequest(target="host", budget=parse_budget(f"{b:.3f}ms"), model=MODEL,
                                out=Path(tmp) / f"b{b:.2f}", dev_text=dev_text)  # fmt: skip
            start = time.perf_counter()
            fits = [s for s, ms in measured.items() if ms <= b]
            oracle = ranking.order(fits)[0] if fits else None
            try:
                dep = deploy(req)
            except UsageError as exc:
                rows.append({"budget_ms": round(b, 3), "chosen": None, "error": str(exc), "oracle": oracle})
                print(rows[-1], flush=True)
                continue
            wall = time.perf_counter() - start
            m = dep.manifest
            rows.append({
                "budget_ms": round(b, 3), "chosen": dep.shape, "predicted_ms": m.predicted.decode_ms,
                "measured_ms": m.measured.decode_ms, "within_budget": m.measured.decode_ms <= b,
                "stepped_down_from": [s["shape"] for s in m.stepped_down_from],
                "metric": ranking.metric, "chosen_score": ranking.scores[dep.shape], "oracle": oracle,
                "oracle_score": ranking.scores[oracle] if oracle else None, "timings": m.timings,
                "wall_s": round(wall, 1),
            })  # fmt: skip
            print(rows[-1], flush=True)
    return {"ranking": ranking.note, "rows": rows, "source": source.label}


def _llamacpp_decode(gguf: Path, new_tokens: int, runs: int, warmup: int, threads: int) -> dict[str, Any]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=512, n_threads=threads, verbose=False)
    prompt = llm.tokenize(b"The history of the city of Paris begins", add_bos=True)
    per_token = []
    for i in range(warmup + runs):
        llm.reset()
        llm.eval(prompt)
        stamps = []
        for _ in range(new_tokens):
            token = llm.sample(temp=0.0)
            llm.eval([token])
            stamps.append(time.perf_counter())
        if i >= warmup:
            per_token.append((stamps[-1] - stamps[0]) / (len(stamps) - 1) * 1000)
    med = statistics.median(per_token)
    return {"decode_ms": round(med, 3), "spread_pct": round(100 * (max(per_token) - min(per_token)) / med, 1),
            "version": llama_cpp.__version__}  # fmt: skip


def runtimes(plan: Any) -> dict[str, Any]:
    import torch

    from edgekit.deployment.measure import MeasureSettings, measure_folder
    from edgekit.elastic.base_model import base_folder
    from edgekit.engines import get_engine

    settings = MeasureSettings(new_tokens=64, runs=5, warmup=2, prompt_lens=())
    base = base_folder(plan)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, precision in (("ort", "int4"), ("torch", "fp32")):
            folder = Path(tmp) / name
            folder.mkdir()
            get_engine(name).compile(base, folder, precision, "cpu")
            f = measure_folder(name, folder, "cpu", settings)
            out[f"{name} {precision}"] = {"decode_ms": f.decode_ms, "spread_pct": f.decode_spread_pct,
                                          "peak_rss_mb": f.peak_rss_mb}  # fmt: skip
    gguf = next((base / "gguf").glob("*.gguf"), None)
    try:
        out["llama.cpp " + gguf.stem.split(".")[-1]] = _llamacpp_decode(gguf, 64, 5, 2, torch.get_num_threads())
    except ImportError:
        out["llama.cpp"] = {"error": "llama-cpp-python not installed"}
    ort = out["ort int4"]["decode_ms"]
    for row in out.values():
        if "decode_ms" in row:
            row["tokens_per_s"] = round(1000 / row["decode_ms"], 1)
            row["vs_ort_int4"] = round(row["decode_ms"] / ort, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="a,b,c,d")
    ap.add_argument("--skip-profile", action="store_true", help="reuse this machine's measured LUT")
    ap.add_argument("--ship", action="store_true", help="copy the measured LUT to edgekit/data/luts/")
    args = ap.parse_args()
    only = set(args.only.split(","))

    from edgekit.deployment.lut import find_lut, shipped_dir
    from edgekit.deployment.resolve import resolve_target
    from edgekit.elastic.plan import load_plan

    plan = load_plan(MODEL)
    path = RESULTS / "deploy.json"
    import json

    results = json.loads(path.read_text()) if path.is_file() else {}
    results["machine"] = machine()
    res = resolve_target("host", "ort", "int4")
    lut = find_lut(res.target_name, "ort", MODEL, "int4") if args.skip_profile else None
    if lut is None or lut.status != "measured":
        start = time.perf_counter()
        lut = profile_host(plan)
        results["profile_wall_s"] = round(time.perf_counter() - start, 1)
    if args.ship:
        from edgekit.deployment.lut import save_lut

        save_lut(lut, shipped_dir())
    if "a" in only:
        results["predictor"] = {"lut": lut.key, "validation": lut.validation,
                                "measured": [m.to_dict() for m in lut.measured]}  # fmt: skip
        write_result("deploy", results)
    _, _, dev_text = ranking_for(plan)
    if "b" in only or "c" in only:
        results["sweep"] = sweep(lut, plan, dev_text)
        t = [r["timings"] for r in results["sweep"]["rows"] if r.get("chosen")]
        results["deploy_time"] = {k: round(statistics.median(x[k] for x in t), 2) for k in t[0]}
        write_result("deploy", results)
    if "d" in only:
        results["runtimes"] = runtimes(plan)
        write_result("deploy", results)
    print_tables(results)
    print(describe(results["machine"]))


def print_tables(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    v = (results.get("predictor") or {}).get("validation")
    if v:
        t = Table(title=f"(a) predictor error on {v['decode']['n']} held-out shapes (fitted on {len(v['fitted_on'])})")
        for col in ("figure", "median %", "max %", "RMSE", "within ±10 %"):
            t.add_column(col, justify="right")
        for key, unit in (("decode", "ms"), ("ttft", "ms"), ("memory", "MB")):
            e = v[key]
            t.add_row(key, f"{e['median_pct']:.1f}", f"{e['max_pct']:.1f}", f"{e['rmse']:.3f} {unit}",
                      f"{e['within_10_pct']:.0f}%")  # fmt: skip
        console.print(t)
    sweep = results.get("sweep")
    if sweep:
        t = Table(title=f"(b) budget sweep; accuracy = {sweep['ranking']}")
        for col in ("budget ms", "chosen", "predicted", "measured", "fits", "score", "oracle", "oracle score"):
            t.add_column(col, justify="right")
        for r in sweep["rows"]:
            if r.get("chosen") is None:
                t.add_row(f"{r['budget_ms']:.2f}", "infeasible", "", "", "", "", r["oracle"] or "-", "")
                continue
            t.add_row(f"{r['budget_ms']:.2f}", r["chosen"], f"{r['predicted_ms']:.2f}", f"{r['measured_ms']:.2f}",
                      "yes" if r["within_budget"] else "NO", f"{r['chosen_score']:.4g}", r["oracle"] or "-",
                      f"{r['oracle_score']:.4g}" if r["oracle_score"] else "-")  # fmt: skip
        console.print(t)
    dt = results.get("deploy_time")
    if dt:
        console.print("(c) deploy time, median over the sweep: " + ", ".join(f"{k} {v:.1f}" for k, v in dt.items()))
    rt = results.get("runtimes")
    if rt:
        t = Table(title="(d) full model decode, batch 1, same machine, one run")
        for col in ("runtime", "ms/token", "tokens/s", "x ORT int4", "spread"):
            t.add_column(col, justify="right")
        for name, r in rt.items():
            if "decode_ms" in r:
                t.add_row(name, f"{r['decode_ms']:.2f}", f"{r['tokens_per_s']:.1f}", f"{r['vs_ort_int4']:.2f}",
                          f"{r['spread_pct']:.1f}%")  # fmt: skip
            else:
                t.add_row(name, r.get("error", "?"), "", "", "")
        console.print(t)


if __name__ == "__main__":
    main()
