"""docs/benchmarks.md from bench/results/*.json: every table the docs quote, generated, never copied by hand.

    .venv/bin/python bench/report.py           # rewrite docs/benchmarks.md
    .venv/bin/python bench/report.py --check   # exit 1 if it is not what the results say (a test runs this)

Each benchmark script writes its JSON with the machine it ran on; this turns each into markdown tables with
that machine named beside them. Re-run a benchmark, then this.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
OUT = ROOT.parent / "docs" / "benchmarks.md"
SHAPES = ["d30-w100", "d24-w100", "d20-w100", "d15-w100", "d30-w82", "d30-w61", "d30-w48"]


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine(m: dict[str, Any] | None) -> str:
    """One line naming the machine a result file was measured on."""
    if not m:
        return "machine not recorded"
    host = m.get("host") or {}
    cpu = host.get("cpu") or {}
    gpus = ", ".join(g["name"] for g in host.get("gpus") or []) or "no GPU"
    isa = " ".join(cpu.get("isa") or [])
    return (
        f"{host.get('kind', '?')} host: {cpu.get('model', '?')} ({isa}), {cpu.get('logical_cores', '?')} threads, "
        f"{host.get('memory_total_gb', '?')} GB, {gpus}; torch {m.get('torch', '?')} "
        f"({m.get('torch_threads', '?')} threads), edgekit {m.get('edgekit', '?')}, {m.get('date', '?')[:10]}"
    )


def big(x: float) -> str:
    """Perplexities run from 20 to 1e9: a few significant figures, thousands separated, then exponents."""
    if x >= 1e6:
        return f"{x:.1e}"
    if x >= 1000:
        return f"{x:,.0f}"
    return f"{x:.1f}"


# ------------------------------------------------------------------ one section per result file


def plan_budget(r: dict[str, Any]) -> str:
    rows = [[f"{run['budget_tokens']:,}", run["scorer_calls"], f"{run['seconds']:.0f}",
             *(f"{run['held_out_ppl'][d]:.2f}" for d in ("24", "20", "15"))] for run in r["runs"]]  # fmt: skip
    return "\n\n".join([
        "`bench/plan_budget.py`: the DP's calibration budget against the held-out quality of the layer sets it "
        f"picks. Calibration: {r['calibration']}; held out: {r['held_out']}.",
        table(["budget (tokens)", "scorer calls", "DP seconds", "d24 held-out ppl", "d20 held-out ppl",
               "d15 held-out ppl"], rows),  # fmt: skip
        f"Machine: {machine(r.get('machine'))}. The seconds were taken while other work shared the machine.",
    ])  # fmt: skip


def frontier(r: dict[str, Any]) -> str:
    ev = r["evaluation"]
    points = r["points"]
    labels = list(dict.fromkeys(p["label"] for p in points))
    by = {(p["label"], p["shape"]): p for p in points}
    shapes = [s for s in SHAPES if any(k[1] == s for k in by)]
    full = by.get((labels[0], shapes[0])) if shapes else None

    def cell(p: dict[str, Any] | None) -> str:
        if p is None or p.get("shared_with"):
            return ""
        return f"{big(p['ppl'])} / {p['acc']:.3f} / {p['acc_norm']:.3f}"

    rows = []
    for s in shapes[1:]:
        fraction = next(p["param_fraction"] for k, p in by.items() if k[1] == s)
        rows.append([f"{s} ({fraction:.0%})", *(cell(by.get((label, s))) for label in labels)])
    intro = (
        f"`bench/frontier.py` (as `edgekit elastic frontier --baselines all`): stage 1, no fine-tuning. Perplexity "
        f"on held-out {Path(ev['text']).name} ({ev['max_tokens']:,} tokens after the {ev['skip_tokens']:,} the plan "
        f"read, windows {ev['windows']}); zero-shot {Path(ev['mc']).name}, first {ev['items']} items. Cells: "
        "perplexity / acc / acc_norm. A depth baseline keeps our width order and a width baseline our layer "
        "sets, so each column changes one thing; an empty cell is the same network as ours."
    )
    parts = [intro, table(["shape (params)", *labels], rows)]
    if full:
        parts.append(f"Full model: {full['ppl']:.2f} / {full['acc']:.3f} / {full['acc_norm']:.3f}.")
    parts.append(f"Machine: {machine(r.get('machine'))}; {r['seconds'] / 60:.1f} min in all.")
    return "\n\n".join(parts)


def space(r: dict[str, Any]) -> str:
    ev = r.get("evaluation") or {}

    def side(p: dict[str, Any] | None, ms: bool = False) -> list[str]:
        if not p:
            return ["-"] * (4 if ms else 3)
        cells = [f"{p['shape']} ({p['params_pct']:.0f} %)", big(p["ppl"]), f"{p['acc_norm']:.3f}"]
        if ms:
            cells.append(f"{p['predicted_ms']:.2f} / {p['measured_ms']:.2f}")
        return cells

    def ratio(row: dict[str, Any]) -> str:
        return f"{row['ppl_ratio_grid_over_space']:.2f}x" if row.get("ppl_ratio_grid_over_space") else "-"

    parts = [
        "`bench/space.py`: stage 1 (no fine-tuning), the default model's shipped plan. The space's pick is the best "
        "*predicted* perplexity within the budget (what deploy does); the grid's is the best *measured* of its 16 "
        "coupled shapes within it (the old grid at its strongest). Both are then measured on held-out data: "
        f"perplexity on {ev.get('ppl')}; {ev.get('mc')} (standard error about 2.9 points at 300 items).",
    ]
    if r.get("size"):
        rows = [[row["budget"], *side(row["space"]), *side(row["grid"]), ratio(row)] for row in r["size"]]
        parts.append(table(["budget", "space: shape", "ppl", "acc_norm", "grid: shape", "ppl", "acc_norm",
                            "grid ppl / space ppl"], rows))  # fmt: skip
    lat = r.get("latency")
    if lat:
        rows = [[row["budget"], *side(row["space"], True), *side(row["grid"], True), ratio(row)] for row in lat["rows"]]
        parts.append(f"Latency budgets on this machine, from its LUT ({lat['lut']}); ms/token predicted / measured "
                     "(ORT GenAI int4, CPU):")  # fmt: skip
        parts.append(table(["budget", "space: shape", "ppl", "acc_norm", "ms/token", "grid: shape", "ppl",
                            "acc_norm", "ms/token", "grid ppl / space ppl"], rows))  # fmt: skip
        deploys = []
        for row in lat["rows"]:
            d = row["deploy"]
            ups = ", ".join(f"{u['from']} → {u['shape']} ({'kept' if u['kept'] else 'dropped'})"
                            for u in d["stepped_up"]) or "-"  # fmt: skip
            downs = ", ".join(d["stepped_down_from"]) or "-"
            deploys.append([row["budget"].split(" (")[0], d["shape"], f"{d['measured_ms']:.2f} / {d['budget_ms']:.2f}",
                            big(d["ppl"]), f"{d['acc_norm']:.3f}", downs, ups, f"{d['wall_s']:.0f}"])  # fmt: skip
        parts.append("What `edgekit deploy --target host --budget N% --plan smollm2-135m` shipped (it measures, then "
                     "steps down or up):")  # fmt: skip
        parts.append(table(["budget", "shipped", "measured / budget ms", "ppl", "acc_norm", "stepped down from",
                            "stepped up", "wall s"], deploys))  # fmt: skip
    pred = r.get("predictor")
    if pred:
        v, extra = pred["stored_validation"], pred["extra"]

        def stats(label: str, x: dict[str, Any]) -> list[str]:
            if not x.get("n"):
                return [label, "0", "-", "-", "-", "-"]
            return [label, str(x["n"]), f"{x['median_pct']:.1f} %", f"{x['max_pct']:.0f} %",
                    f"{x['within_10_pct']:.0f} %", f"{x['spearman']:.3f}"]  # fmt: skip

        rows = [stats("stored validation, all", v), stats("stored validation, useful", v.get("useful", {})),
                stats(f"{extra['n']} more at random, all", extra["all"]),
                stats(f"{extra['n']} more at random, useful", extra["useful"])]  # fmt: skip
        parts.append(f"The accuracy predictor's error on shapes left out of its fit ({pred['description']}); "
                     "useful: measured within x20 of the full model's perplexity.")  # fmt: skip
        parts.append(table(["shapes", "n", "median error", "max error", "within ±10 %", "rank correlation"], rows))
    if r.get("search"):
        q = r["search"]
        parts.append(f"Search: {q['shapes']} shapes (the coupled grid had {q['grid_shapes']}) ranked and predicted in "
                     f"{q['seconds'] * 1000:.0f} ms, {q['frontier']} on the latency-accuracy frontier.")  # fmt: skip
    if r.get("plan_time"):
        t = r["plan_time"]
        parts.append(f"Planning from scratch (`edgekit elastic plan`, {t['scorer_calls']} DP scorer calls): "
                     f"{t['wall_s'] / 60:.1f} min in all: depth {t['depth_s']:.0f} s, width {t['width_s']:.0f} s, "
                     f"accuracy predictor {t['predictor_s']:.0f} s.")  # fmt: skip
    parts.append(f"Machine: {machine(r.get('machine'))}.")
    return "\n\n".join(parts)


def quantization(r: dict[str, Any]) -> str:
    if "shapes" not in r:
        return quantization_builder_only(r)
    parts = [
        f"`bench/quantization.py`: ONNX Runtime GenAI int4 builds of {r['source']}'s shapes against the fp32 weights "
        f"they are built from, through the runtime's own logits: text perplexity on {r['evaluation']['ppl']}, chat "
        f"perplexity on {r['evaluation']['chat_ppl']}. `gptq`, `gptq-mixed`, `gptq-sym` and `rtn` are edgekit's "
        "weights in the builder's graph (edgekit.quantize); `builder*` are the builder's own. Speed: the median of "
        "alternating rounds of edgekit's measurement, every build of a shape in each round.",
    ]
    for shape, row in r["shapes"].items():
        fp = row["fp32"]
        rows = [["fp32 (torch)", "", f"{fp['ppl']:.2f}", f"{fp['chat_ppl']:.3f}", "-", "-", "-"]]
        for name, b in row["builds"].items():
            opts = r["settings"][name]
            how = ", ".join([opts["precision"], *(f"{k}={v}" for k, v in opts["options"].items())])
            if "error" in b:
                rows.append([name, how, "fails", "-", "-", "-", "-"])
                continue
            rows.append([name, how, f"{b['ppl']:.2f} ({b['ppl_ratio']:.3f}x)",
                         f"{b['chat_ppl']:.3f} ({b['chat_ratio']:.3f}x)", f"{b.get('decode_ms', 0):.2f}",
                         f"{b.get('speed_vs_builder', 1.0):.2f}x", f"{b['mb']:.0f}"])  # fmt: skip
        parts.append(f"**{shape}**")
        parts.append(table(["build", "precision, options", "text ppl (x fp32)", "chat ppl (x fp32)", "ms/token",
                            "speed vs builder", "MB"], rows))  # fmt: skip
    parts.append(f"Machine: {machine(r.get('machine'))}.")
    return "\n\n".join(parts)


def quantization_builder_only(r: dict[str, Any]) -> str:
    """Results of the first version of bench/quantization.py: the builder's own options, one shape."""
    rows = []
    for name, b in r["builds"].items():
        opts = ", ".join(f"{k}={v}" for k, v in b["options"].items()) or "(the builder's defaults)"
        if "error" in b:
            rows.append([name, opts, "fails to load", "-", "-", "-"])
            continue
        rows.append([name, opts, f"{b['ppl']:.2f} ({b['ppl_ratio']:.3f}x)", f"{b['decode_ms']:.2f}",
                     f"{b.get('speed_vs_default', 1.0):.2f}x", f"{b['mb']:.0f}"])  # fmt: skip
    return "\n\n".join([
        f"`bench/quantization.py`: ONNX Runtime GenAI int4 builds of {r['shape']} ({r['source']}) against the fp32 "
        f"weights they are built from, perplexity through the runtime's own logits on {r['evaluation']} (fp32 in "
        f"torch: {r['fp32_ppl']:.2f}); speed by edgekit's measurement, one build at a time in one run.",
        table(["build", "builder options", "ppl (x fp32)", "ms/token", "speed vs default", "MB"], rows),
        f"Machine: {machine(r.get('machine'))}.",
    ])  # fmt: skip


def one_for_all(r: dict[str, Any]) -> str:
    sys.path.insert(0, str(ROOT))
    from one_for_all import comparison, runs_table

    return "\n\n".join([
        "`bench/one_for_all.py`: stage-2 one-for-all training against stage 1, one plain LoRA, per-shape LoRA and "
        "the ablations, on the same batches. Cells: held-out wikitext-2 ppl / pydoc-dev ppl / PIQA-dev acc_norm "
        "(400 items, standard error about 2.5 points). `@100` runs are read at step 100 of the same 250-step "
        "schedule (equal budget); per-shape LoRA gets the same shape-samples spread over its shapes.",
        runs_table(r),
        "At equal budget (step 100), ours against every other run and stage 1:",
        comparison(r, 100),
        "The full schedule (250 steps):",
        comparison(r, None),
    ])  # fmt: skip


def deploy(r: dict[str, Any]) -> str:
    parts = [f"`bench/deploy.py`, ONNX Runtime GenAI int4 on the CPU. Machine: {machine(r.get('machine'))}."]
    v = (r.get("predictor") or {}).get("validation")
    if v:
        rows = [[key, f"{v[key]['median_pct']:.1f}", f"{v[key]['max_pct']:.1f}", f"{v[key]['rmse']:.3f} {unit}",
                 f"{v[key]['within_10_pct']:.0f}%"] for key, unit in (("decode", "ms"), ("ttft", "ms"),
                                                                      ("memory", "MB"))]  # fmt: skip
        parts += [f"**(a) The latency predictor** on {v['decode']['n']} shapes it was not fitted on (fitted on "
                  f"{', '.join(v['fitted_on'])}):", table(["figure", "median %", "max %", "RMSE", "within ±10 %"],
                                                           rows)]  # fmt: skip
    sweep = r.get("sweep")
    if sweep:
        rows = []
        for row in sweep["rows"]:
            if row.get("chosen") is None:
                rows.append([f"{row['budget_ms']:.2f}", "infeasible", "", "", "", "", row["oracle"] or "-", ""])
                continue
            rows.append([f"{row['budget_ms']:.2f}", row["chosen"], f"{row['predicted_ms']:.2f}",
                         f"{row['measured_ms']:.2f}", "yes" if row["within_budget"] else "**no**",
                         big(row["chosen_score"]), row["oracle"] or "-",
                         big(row["oracle_score"]) if row["oracle_score"] else "-"])  # fmt: skip
        parts += [f"**(b) Budget sweep** from {sweep['source']}; accuracy: {sweep['ranking']}; the oracle is the "
                  "best shape whose measured latency fits:",
                  table(["budget ms/token", "chosen", "predicted", "measured", "fits", "ppl", "oracle", "oracle ppl"],
                        rows)]  # fmt: skip
    dt = r.get("deploy_time")
    if dt:
        parts.append("**(c) Deploy time**, median over the sweep: " + ", ".join(f"{k} {v:.1f}" for k, v in dt.items()))
    rt = r.get("runtimes")
    if rt:
        rows = [[name, f"{x['decode_ms']:.2f}", f"{x['tokens_per_s']:.1f}", f"{x['vs_ort_int4']:.2f}",
                 f"{x['spread_pct']:.1f}%"] for name, x in rt.items() if "decode_ms" in x]  # fmt: skip
        parts += ["**(d) The full model's decode**, batch 1, side by side in one run:",
                  table(["runtime", "ms/token", "tokens/s", "× ORT int4", "spread"], rows)]  # fmt: skip
    return "\n\n".join(parts)


def runtimes(r: dict[str, Any]) -> str:
    rows = [[x["shape"], f"{x['runtime']} {x['precision']}", f"{x['decode_ms']:.2f}", f"{x['decode_spread_pct']:.1f}%",
             f"{x['vs_first']:.2f}" if x["vs_first"] is not None else "-",
             f"{x['ttft_ms_64']:.0f}" if x["ttft_ms_64"] else "-", f"{x['peak_rss_mb']:.0f}", f"{x['compile_s']:.1f}",
             "-" if x["greedy_agree_with_torch"] is None else f"{x['greedy_agree_with_torch']}/16"]
            for x in r["rows"]]  # fmt: skip
    return "\n\n".join([
        f"`bench/runtimes.py`: every runtime on the same subnets ({r['source']}), CPU, batch 1, one run; ratios "
        f"against {r['reference']}.",
        table(["shape", "runtime", "ms/token", "spread", f"× {r['reference']}", "first token @64 ms", "peak MB",
               "compile s", "greedy tokens = torch"], rows),  # fmt: skip
        f"Machine: {machine(r.get('machine'))}.",
    ])  # fmt: skip


def chat_overhead(r: dict[str, Any]) -> str:
    info = r["info"]
    rows = [[name, f"{x['ms_per_token']:.2f}", f"{x['tokens_per_s']:.1f}", x["tokens"], len(x["runs"])]
            for name, x in r["summary"].items()]  # fmt: skip
    return "\n\n".join([
        f"`bench/chat_overhead.py`: the same greedy reply, the runtime alone against inside the Textual app "
        f"(headless, same engine), alternating; {info['model']} {info['shape']} {info['runtime']} "
        f"{info['precision']} on {info['device']}.",
        table(["", "ms/token", "tokens/s", "tokens", "rounds"], rows),
        f"The UI costs {r['ui_cost_pct']:.1f} % of throughput; `edgekit chat DEPLOYMENT` reaches a ready prompt in "
        f"{r['ready_s']} s. Machine: {machine(r.get('machine'))}.",
    ])  # fmt: skip


def fmt(x: Any, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def chat(r: dict[str, Any]) -> str:
    cols = [("stage1", "stage 1"), ("previous", "previous ckpt"), ("new", "new ckpt"),
            ("new_int4", "new, int4 GPTQ"), ("new_int4_rtn", "new, int4 builder RTN")]  # fmt: skip

    def chat_cell(x: dict[str, Any] | None) -> str:
        if x is None:
            return "-"
        return f"{fmt(x['chat_ppl'])} / {fmt(x['answer_rate'], '.2f')} / {fmt(x['agreement'], '.2f')}"

    def text_cell(x: dict[str, Any] | None) -> str:
        return "-" if x is None else f"{fmt(x['ppl'], '.1f')} / {fmt(x['acc_norm'], '.3f')}"

    chat_rows, text_rows = [], []
    for shape, row in r["rows"].items():
        head = [row["budget"], shape]
        chat_rows.append(head + [chat_cell(row.get(k)) for k, _ in cols])
        text_rows.append(head + [text_cell(row.get(k)) for k, _ in cols] + [fmt(row.get("predicted_ms"), ".2f")])
    ev = r["evaluation"]
    return "\n\n".join([
        "`bench/chat.py`: the chat-preserving checkpoint (one plain LoRA of rank 18 on pydoc text and the base "
        "model's replies) against the previous shipped checkpoint (pydoc text only) and stage 1, on the shape deploy's "
        f"chat predictor picks at each share of the full model's latency ({r['lut']}), in fp32 (SMOL merged) and as "
        "the int4 ONNX Runtime GenAI artifact: edgekit's GPTQ build (what deploy ships now) and the builder's own "
        f"round to nearest (what it shipped before). Chat: {ev['chat']}. Text: {ev['ppl']}. PIQA: {ev['mc']}.",
        "Chat: chat_ppl (of the full model's replies) / answer rate / agreement with its short answers.",
        table(["budget", "shape", *(c for _, c in cols)], chat_rows),
        "Text: wikitext-2 perplexity / PIQA acc_norm; and the shape's int4 ms/token on this host's measured LUT (the "
        "speed deploy ranks by; the artifacts' own timings in the JSON ran beside other jobs and are not quoted).",
        table(["budget", "shape", *(c for _, c in cols), "LUT ms/token"], text_rows),
        f"Machine: {machine(r.get('machine'))}.",
    ])  # fmt: skip


def router(r: dict[str, Any]) -> str:
    rows = []
    for frac, b in r["budgets"].items():
        a, st, rnd, orc = b["adaptive"], b["static"], b["same_shares_at_random"], b["oracle"]
        shares = ", ".join(f"{n} {x:.0%}" for n, x in b["shares"].items() if x)

        def cell(x: dict[str, Any]) -> str:
            return f"{x['mean_ms']:.2f} / {x['chat_ppl']:.3f} / {x['answer_rate']:.2f} / {fmt(x['agreement'], '.2f')}"

        rows.append([frac, f"{b['budget_ms']:.2f}", shares, cell(a), f"{st['shape']}: {cell(st)}",
                     f"{rnd['chat_ppl']:.3f} / {rnd['answer_rate']:.2f}",
                     f"{orc['mean_ms']:.2f} / {orc['chat_ppl']:.3f} / {orc['answer_rate']:.2f}"])  # fmt: skip
    st = r["router"]
    return "\n\n".join([
        f"`bench/router.py`: the input-adaptive router over {', '.join(r['menu'])} (ms/token here: "
        + ", ".join(f"{n} {r['ms'][n]:.2f}" for n in r["menu"])
        + f") against the best static shape measured at the routed mean latency, on {r['evaluation']['prompts']} "
        "prompts neither the checkpoint nor the router saw; quality in fp32 against the full model's greedy replies. "
        f"The router, fitted on {st['prompts']} prompts: its cross-validated predictions rank the prompts by each "
        "menu shape's loss with Spearman "
        + ", ".join(f"{x['spearman']:.2f}" for x in st["per_shape"].values())
        + f" (smallest shape first); its overhead {r['router_overhead_ms']['median']:.1f} ms per prompt (median).",
        "Cells: mean ms/token / chat_ppl / answer rate / agreement.",
        table(["budget", "ms/token", "shares", "adaptive", "static", "same shares at random", "oracle"], rows),
        f"Machine: {machine(r.get('machine'))}.",
    ])  # fmt: skip


def serve(r: dict[str, Any]) -> str:
    s, load = r["summary"], r["load"]
    d = r["deployment"]
    return "\n\n".join([
        f"`bench/serve.py`: {d['shape']} {d['runtime']} {d['precision']}, the same greedy reply of {r['tokens']} "
        "tokens made in-process by the chat engine and streamed through `edgekit serve` to the `openai` client, "
        "alternating.",
        table(["", "ms/token", "first token ms"],
              [["in-process", s["in_process"]["ms_per_token"], s["in_process"]["ttft_ms"]],
               ["through serve", s["served"]["ms_per_token"], s["served"]["ttft_ms"]]]),
        f"Serving costs {s['overhead']['ms_per_token_ratio']:.3f}x the ms/token and adds "
        f"{s['overhead']['ttft_ms_added']:.0f} ms to the first token. Load: {load['clients']} clients x "
        f"{load['requests']} requests (queue {load['queue']}): {load['completed']} completed, "
        f"{load['rejected_429']} answered 429, {load['failed']} failed of {load['sent']}; completed latency p50 "
        f"{load['latency_ms']['p50']:.0f} ms, p90 {load['latency_ms']['p90']:.0f}, "
        f"p99 {load['latency_ms']['p99']:.0f}; {load['wall_s']} s in all.",
        f"Machine: {machine(r.get('machine'))}.",
    ])  # fmt: skip


SHORT_STEPS = 150  # the first per-depth fine-tunes: as many steps as the first (150-step) trim run


def trim(r: dict[str, Any]) -> str:
    names = [("trimllm", "TrimLLM domain ckpt"), ("general", "general ckpt"), ("stage1", "stage 1"),
             ("per-depth", "per-depth fine-tune")]  # fmt: skip
    if any("per-depth-short" in row for row in r["rows"].values()):
        names[-1] = ("per-depth", "per-depth fine-tune, same tokens")
        names.append(("per-depth-short", f"per-depth, {SHORT_STEPS} steps"))
    previous = r.get("previous_run")
    if previous:
        names.insert(1, ("trimllm-previous", "TrimLLM, earlier run"))
    rows = []
    for depth, row in r["rows"].items():
        rows.append([depth, fmt(row.get("decode_ms"), ".2f")] + [
            f"{row[k]['domain_ppl']:.2f} / {row[k]['ppl']:.1f} / {row[k]['acc_norm']:.3f}" if k in row else "-"
            for k, _ in names])  # fmt: skip
    ev = r["evaluation"]
    return "\n\n".join([
        "`bench/trim.py`: TrimLLM on the Python documentation (progressive layer dropping while fine-tuning, "
        "every depth a shape of one domain checkpoint) against the general checkpoint, stage 1 and a per-depth "
        f"domain fine-tune; drop order {r.get('drop_order')}. Cells: domain ppl "
        f"({ev.get('domain_ppl', 'pydoc dev')}) / general ppl ({ev.get('ppl', 'wikitext-2')}) / PIQA acc_norm; "
        "ms/token of the depth's int4 ONNX Runtime GenAI build here.",
        table(["depth", "ms/token", *(n for _, n in names)], rows),
        "Training: " + "; ".join(f"{k} {t['steps']} steps, {t['tokens']:,} tokens, {t['seconds'] / 60:.0f} min on "
                                 f"{t['device']}" for k, t in r.get("training", {}).items())
        + (f"; the earlier TrimLLM run ({previous['run']}) {previous['training']['steps']} steps, "
           f"{previous['training']['tokens']:,} tokens, {previous['training']['seconds'] / 60:.0f} min"
           + (" (the TrimLLM domain ckpt goes on from its checkpoint: its steps and tokens come on top)"
              if r.get("continues_previous") else "") if previous and previous.get("training") else "") + ".",
        f"Machine: {machine(r.get('machine'))}.",
    ])  # fmt: skip


def options(r: dict[str, Any]) -> str:
    base = r["trials"][0]["decode_ms"]
    rows = [
        [
            ",".join(f"{k}={v}" for k, v in t["options"].items())
            + (" (chosen)" if t["options"] == r["winner"] else ""),
            fmt(t["decode_ms"], ".2f"),
            f"{base / t['decode_ms']:.2f}x",
            fmt(t["ppl"], ".3f"),
            f"{t['quality_ratio']:.3f}x",
            " / ".join(f"{x:.2f}" for x in t["rounds_ms"]),
        ]
        for t in r["trials"]
    ]
    text = r["text"]
    return "\n\n".join([
        f"`bench/options.py`: the build-option search on the full model ({r['shape']}, {r['runtime']} "
        f"{r['precision']}, {r['device']}). Each build made as deploy makes it (GPTQ), scored through ONNX Runtime's "
        f"own logits on {text['tokens']} held-out tokens of {text['file']} (past the {text['after_tokens']} GPTQ "
        f"reads), timed in {r['rounds']} interleaved rounds (median of {r['settings']['runs']} runs of "
        f"{r['settings']['new_tokens']} new tokens each); the winner is the fastest within "
        f"{100 * r['tolerance']:.0f} % of the default build's perplexity. " + " ".join(r.get("notes", [])),
        table(["options", "ms/token", "speed-up", "ppl", "vs default", "rounds (ms/token)"], rows),
        f"Chosen: {r['winner']}, {r['speedup']:.2f}x the default build. Machine: {machine(r.get('machine'))}.",
    ])  # fmt: skip


def decode(r: dict[str, Any]) -> str:
    rows = [[x["shape"], x["config"] + (" (searched)" if x.get("searched") else ""), f"{x['decode_ms']:.2f}",
             " / ".join(f"{v:.2f}" for v in x["decode_ms_rounds"]), f"{x['ttft_ms_128']:.0f}",
             f"{x['peak_rss_mb']:.0f}", f"{x['weight_bytes'] / 1e6:.1f}", f"{x['floor_ms']:.2f}",
             f"{x['floor_fraction']:.0%}", f"{x['ppl']:.3f}", f"{x['ppl_vs_fp32']:.3f}x"]
            for x in r["rows"]]  # fmt: skip
    q, s = r["quality_text"], r["settings"]
    goals = [[g["goal"], "met" if g["met"] else "not met", g["measured"]] for g in r["goals"]]
    return "\n\n".join([
        f"`bench/decode.py`: every runtime's 4-bit builds of the same subnets in one run: batch 1, decode of "
        f"{s['new_tokens']} new tokens after a {s['decode_prompt_len']}-token prompt (median of {s['runs']} runs per "
        f"round, {s['rounds']} interleaved rounds, each build in a fresh process), first token for a 128-token "
        f"prompt, peak memory. Floor: the build's weight bytes (what a decode step reads; the KV cache left out) "
        f"over the host's read bandwidth measured at the start of each round (median "
        f"{r['bandwidth_median_gbps']:.1f} GB/s; rounds: {', '.join(f'{b:.1f}' for b in r['bandwidth_gbps'])}). "
        f"Perplexity through each runtime's own logits on {q['tokens']} held-out tokens of {q['file']}, against the "
        f"subnet's fp32 weights in torch. Searched: the fastest of a runtime's builds within 2 % of its default's "
        f"perplexity (the pick rule of `profile --search-options`).",
        table(["shape", "build", "ms/token", "rounds", "first token (ms)", "peak MB", "weights MB", "floor (ms)",
               "of floor", "ppl", "vs fp32"], rows),  # fmt: skip
        table(["goal (the performance issue)", "", "measured"], goals),
        f"Machine: {machine(r.get('machine'))}.",
    ])  # fmt: skip


def faults(r: dict[str, Any]) -> str:
    b, f, k, c = r["bad_input"], r["flips"], r["kills"], r["chat"]
    flips = [[kind, x["trials"], x["detected"], sum(1 for t in x["runs"] if t["mtime_restored"] and t["detected"])]
             for kind, x in f.items()]  # fmt: skip
    kills = [[job, len(x["runs"]), f"{x['seconds_per_run']} s", x["orphans"], x["left_after_kill"], x["leftovers"],
              x["destination_broken"], x["next_run_failed"]] for job, x in k.items()]  # fmt: skip
    return "\n\n".join([
        "`bench/faults.py`: the console script on the tests' tiny Llama in a scratch EDGEKIT_HOME. Bad input: "
        f"{b['clean']} of {b['cases']} rows of tests/bad_inputs.py gave one line, the exit code the table names, "
        "no traceback.",
        "Byte flips (one random bit of one random file of the artifact, half of them with the mtime put back), "
        "then the artifact used; detected = exit 3 with one line before anything ran on it:",
        table(["artifact", "flips", "detected", "of them with mtime restored"], flips),
        "SIGKILL at a random moment within the command's run time, then the same command again (train: with "
        "--resume). Orphans: programs it had started alive 2 s after the kill. Leftovers: temporary folders "
        "still there after the next run:",
        table(["command", "kills", "one run", "orphans", "left right after", "leftovers", "destination broken",
               "next run failed"], kills),  # fmt: skip
        f"Chat: a --plain session of {c['turns']} messages ({c['accepted']} answered; empty and over-long ones "
        f"refused): {c['lost']} messages lost from the store; a store cut mid-line, then appended to: "
        f"{c['lost_after_truncation']} lost beyond the torn line. {r['seconds']} s in all. "
        f"Machine: {machine(r.get('machine'))}."
        + (f" Rerun since, with `--only`: {', '.join(r['rerun']['parts'])} ({machine(r['rerun']['machine'])})."
           if "rerun" in r else ""),
    ])  # fmt: skip


def speculative(r: dict[str, Any]) -> str:
    rows = [[name, f"{row['ms_per_token']:.2f}", f"{row['speedup']:.2f}x", fmt(row.get("acceptance"), ".0%"),
             fmt(row.get("tokens_per_pass"), ".2f"), {True: "yes", False: "no"}.get(row.get("identical_greedy"), "-")]
            for name, row in r["rows"].items()]  # fmt: skip
    sizes = ", ".join(f"{d} {b / 2**20:.0f} MiB" for d, b in r["draft_bytes"].items())
    best = max((row for row in r["rows"].values() if "k" in row), key=lambda row: row["speedup"])
    return "\n\n".join([
        f"`{r.get('script', 'bench/speculative.py')}`: self-speculative decoding on {r['source']}, "
        f"verifier {r['verifier']}, "
        f"{r['runtime']}, greedy, batch 1: {r['prompts']} held-apart chat prompts x {r['rounds']} "
        f"round{'s' if r['rounds'] != 1 else ''}, "
        f"{r['new_tokens']} new tokens each, every configuration in turn on each prompt. Kept: the share of drafted "
        "tokens the verifier kept; tokens/pass: tokens made per verifier forward pass (1 without a draft).",
        table(["", "ms/token", "speed-up", "kept", "tokens/pass", "same greedy tokens"], rows),
        f"Best: {best['draft']} with k={best['k']}, {best['speedup']:.2f}x the verifier alone. "
        + (f"What each draft adds to memory beside the verifier (slice: a view of the verifier's tensors plus its "
           f"SMOL correction; own: its merged copy): {sizes}. " if any("weights" in row for row in r["rows"].values())
           else f"The drafts' own weights in this build: {sizes}. ")
        + f"Machine: {machine(r.get('machine'))}.",
    ])  # fmt: skip


PROFILERS = {
    "ort": "ONNX Runtime's profiler",
    "tvm": "a timing hook on TVM's relax VM (every call it makes)",
    "llamacpp": "llama.cpp's perf counters",
}


def breakdown(r: dict[str, Any]) -> str:
    d = r["deployment"]
    rows = [[g, f"{ms:.3f}", f"{r['groups_share'][g]:.1%}"] for g, ms in r["groups_ms"].items()]
    return "\n\n".join([
        f"`bench/breakdown.py`: one decode step of {d['shape']} ({d['runtime']} {d['precision']}) as "
        f"{PROFILERS.get(d['runtime'], d['runtime'])} sees it: the median over {r['decode_steps']} steps of a "
        f"greedy reply, kernels grouped by what they compute. A profiled step took {r['step_ms']:.2f} ms "
        f"(profiling slows it; read the shares); the prompt's run {r['prefill_ms']:.0f} ms.",
        *([r["note"]] if r.get("note") else []),
        table(["where", "ms per step", "share"], rows),
        f"Machine: {machine(r.get('machine'))}.",
    ])  # fmt: skip


SECTIONS: list[tuple[str, str, Callable[[dict[str, Any]], str]]] = [
    ("plan_budget", "Planning budget", plan_budget),
    ("frontier", "Stage 1: ours against the baselines", frontier),
    ("space", "The whole space against the coupled grid", space),
    ("one_for_all", "Stage 2: one-for-all fine-tuning", one_for_all),
    ("deploy", "Deploy: predictor, budget sweep, runtimes", deploy),
    ("runtimes", "Runtimes on the same subnets", runtimes),
    ("runtimes_llamacpp", "llama.cpp against ONNX Runtime GenAI on the same subnets", runtimes),
    ("quantization", "int4 builds against their fp32 weights", quantization),
    ("chat", "Subnets that chat: the chat-preserving checkpoint and its int4 artifacts", chat),
    ("router", "Input-adaptive routing", router),
    ("trim", "TrimLLM: a domain checkpoint", trim),
    ("serve", "Serving: edgekit serve", serve),
    ("speculative", "Self-speculative decoding", speculative),
    ("speculative_ort", "Self-speculative decoding in ONNX Runtime GenAI int4", speculative),
    ("speculative_tvm", "Self-speculative decoding in TVM int4", speculative),
    ("breakdown", "Where a decode step's time goes (ONNX Runtime GenAI)", breakdown),
    ("breakdown_tvm", "Where a decode step's time goes (TVM int4)", breakdown),
    ("breakdown_llamacpp", "Where a decode step's time goes (llama.cpp)", breakdown),
    ("options", "Build options: the fastest int4 build at equal quality", options),
    ("decode", "Decode against the bandwidth floor: every runtime's 4-bit builds", decode),
    ("chat_overhead", "Chat: the UI's cost", chat_overhead),
    ("faults", "Reliability: fault injection", faults),
]


def render() -> str:
    parts = [
        "# Benchmarks",
        "Generated by `bench/report.py` from `bench/results/*.json`; do not edit by hand (a test compares this "
        "file with what the results say). Each benchmark prints its table when it runs and records the machine; "
        "absolute times hold for that machine only, ratios in one run compare.",
    ]
    for name, title, section in SECTIONS:
        path = RESULTS / f"{name}.json"
        if path.is_file():
            parts += [f"## {title}", section(json.loads(path.read_text()))]
    return "\n\n".join(parts).rstrip() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/benchmarks.md is stale")
    args = ap.parse_args()
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            sys.exit(f"{OUT} is not what bench/results says: run python bench/report.py")
        return
    OUT.write_text(text)
    print(f"written {OUT}")


if __name__ == "__main__":
    main()
