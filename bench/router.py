"""Flextron's input-adaptive router against the static choice: on prompts neither the checkpoint nor the router
saw, at three mean-latency budgets on this host, the routed menu against the best static shape whose measured
latency is the routed mean.

    .venv/bin/python bench/router.py [--elastic smollm2-135m] [--budgets 0.65,0.75,0.85] [--max-prompts N]

Menu: edgekit's auto menu on this host's LUT. Latency: every menu shape and every static comparison shape built
as ORT GenAI int4 (the deploy graph) and measured here, ms/token. The router is fitted on the router part of
chat/prompts.jsonl's dev prompts and its policy calibrated there for each budget (a share of the full model's
measured ms/token); every figure below is on the evaluation part (the other dev prompts, minus those the
checkpoint's chat reference holds). Quality in fp32 with the SMOL merged, against the full base model's greedy
replies: chat_ppl (of those replies), answer rate and agreement on short answers; per prompt and shape, so
each policy's figures are the chosen shape's on each prompt. Controls: the same shares of prompts sent to
shapes at random (does the router's choice of *which* prompts matter?) and the oracle that knows each prompt's
losses (what a perfect router would reach at that mean latency).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SHARED_DATA, describe, machine, write_result  # noqa: E402

PROMPTS = SHARED_DATA / "chat" / "prompts.jsonl"
RANDOM_DRAWS = 200


def measure_ms(source: Any, shapes: list[Any], work: Path) -> dict[str, float]:
    """ORT GenAI int4 decode ms/token of each shape here (the round-to-nearest build: the deploy graph)."""
    from edgekit.deployment.measure import MeasureSettings, measure_folder
    from edgekit.engines import get_engine

    out = {}
    for shape in shapes:
        hf, built = work / f"hf-{shape.name}", work / f"ort-{shape.name}"
        if not built.exists():
            source.extract(shape, hf)
            built.mkdir()
            get_engine("ort").compile(hf, built, "int4", "cpu", {"quant": "rtn"})
        settings = MeasureSettings(runs=5, warmup=2, prompt_lens=())
        out[shape.name] = round(measure_folder("ort", built, "cpu", settings).decode_ms, 3)
        print(f"  {shape.name}: {out[shape.name]} ms/token", flush=True)
    return out


def per_prompt(source: Any, shape: Any, ref: Any) -> dict[str, list]:
    """One shape's figures on every reference prompt: reply NLL and token count, answered, agreement."""
    from edgekit.engines.torch_engine import ElasticTorchSession
    from edgekit.evaluation.chat import agreement, answered, own_replies, prompt_losses
    from edgekit.evaluation.model_io import sequence_logits
    from edgekit.models.weights import read_config

    elastic = source.load().eval()
    losses = prompt_losses(sequence_logits(elastic.at(shape)), ref)
    session = ElasticTorchSession(elastic, source.plan, read_config(source.base_folder()), shape)
    tokenizer = source.tokenizer()
    facts = dict(ref.facts)
    ans, agree = [], []
    for i, (tokens, done) in enumerate(own_replies(session, ref.prompt_ids, int(ref.record["max_new_tokens"]))):
        text = tokenizer.decode([t for t in tokens if t not in session.eos_ids], skip_special_tokens=True)
        ans.append(bool(answered(text, tokens, done)))
        agree.append(agreement(text, facts[i]) if i in facts else None)
    return {"loss": losses, "answered": ans, "agreement": agree}


def figures(choice: list[str], table: dict[str, dict[str, list]], ref: Any, ms: dict[str, float]) -> dict[str, Any]:
    """Chat metrics and mean latency when prompt i is answered by shape choice[i]."""
    nll = count = 0.0
    ans, agree = [], []
    for i, name in enumerate(choice):
        row = table[name]
        if row["loss"][i] is not None:
            nll += row["loss"][i] * len(ref.replies[i])
            count += len(ref.replies[i])
        ans.append(row["answered"][i])
        if row["agreement"][i] is not None:
            agree.append(row["agreement"][i])
    return {"chat_ppl": round(math.exp(nll / count), 4), "answer_rate": round(float(np.mean(ans)), 4),
            "agreement": round(float(np.mean(agree)), 4) if agree else None,
            "mean_ms": round(float(np.mean([ms[n] for n in choice])), 3)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--elastic", default="smollm2-135m")
    ap.add_argument("--budgets", default="0.65,0.75,0.85", help="shares of the full model's measured ms/token")
    ap.add_argument("--max-prompts", type=int, default=None, help="router prompts (default: all of its part)")
    ap.add_argument("--name", default="router", help="results file under bench/results/")
    args = ap.parse_args()
    if not PROMPTS.is_file():
        raise SystemExit(f"benchmark data missing: {PROMPTS} (set EDGEKIT_DATASETS)")

    from edgekit.deployment.resolve import lut_for, resolve_target
    from edgekit.elastic.source import Source
    from edgekit.routing import data, fit_router, policy
    from edgekit.routing.menu import auto_menu

    source = Source.resolve(elastic=args.elastic)
    res = resolve_target("host", "ort", "int4")
    lut, _ = lut_for(res, source.plan.model.name)
    menu = auto_menu(source, lut)
    results: dict[str, Any] = {"machine": machine(), "source": source.label, "menu": [s.name for s in menu]}
    print(f"menu: {results['menu']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="edgekit-router-bench-") as tmp:
        work = Path(tmp)
        print("measuring the menu and the full model", flush=True)
        ms = measure_ms(source, list(dict.fromkeys([*menu, source.plan.full])), work)  # the full model once
        start = time.perf_counter()
        router, extractor, routing = fit_router(source, PROMPTS, menu, args.max_prompts,
                                                lambda text: print(f"  {text}", flush=True))  # fmt: skip
        results["router"] = {**router.stats, "fit_s": round(time.perf_counter() - start, 1)}
        exclude = set(source.chat_reference().prompts)
        ref = data.reference(source, PROMPTS, "eval", None, exclude)
        print(f"evaluation prompts: {len(ref.prompts)}", flush=True)
        table = {s.name: per_prompt(source, s, ref) for s in menu}
        keep = [i for i in range(len(ref.prompts)) if all(table[s.name]["loss"][i] is not None for s in menu)]
        results["evaluation"] = {"prompts": len(keep), "of": len(ref.prompts), "part": "dev, eval",
                                 "excluded": "the checkpoint's chat reference prompts"}  # fmt: skip
        ref = subset(ref, keep)  # prompts whose reference reply is empty have nothing to score
        table = {n: {k: [v[i] for i in keep] for k, v in row.items()} for n, row in table.items()}
        feats = np.stack([extractor.features(ids) for ids in ref.prompt_ids])
        timing = []
        for ids in ref.prompt_ids[:32]:
            t = time.perf_counter()
            router.predict(extractor.features(ids))
            timing.append((time.perf_counter() - t) * 1000)
        results["router_overhead_ms"] = {"median": round(float(np.median(timing)), 2),
                                         "max": round(float(np.max(timing)), 2), "prompts": len(timing)}  # fmt: skip
        pred = router.predict(feats)
        names = [s.name for s in menu]
        menu_ms = np.array([ms[n] for n in names])
        actual = np.array([[table[n]["loss"][i] for n in names] for i in range(len(ref.prompts))])
        full_ms = ms[source.plan.full.name]
        rows: dict[str, Any] = {}
        rng = np.random.default_rng(0)
        metric = source.default_metric()
        ranking = source.ranking(source.shapes(metric), metric)
        lut_scale = full_ms / lut.predict(source.plan.full).decode_ms  # the LUT's prediction of this host, corrected
        for frac in (float(b) for b in args.budgets.split(",")):
            budget = frac * full_ms
            cal = policy.calibrate(router.calibration, menu_ms, budget)
            choice = [names[j] for j in policy.choose(pred, menu_ms, cal.lam)]
            routed = figures(choice, table, ref, ms)
            oracle_lam = policy.calibrate(actual, menu_ms, routed["mean_ms"]).lam
            oracle = figures([names[j] for j in policy.choose(actual, menu_ms, oracle_lam)], table, ref, ms)
            draws = [figures(list(rng.permutation(choice)), table, ref, ms) for _ in range(RANDOM_DRAWS)]
            shuffled = {k: round(float(np.mean([d[k] for d in draws if d[k] is not None])), 4)
                        for k in ("chat_ppl", "answer_rate", "agreement", "mean_ms")}  # fmt: skip
            # the static router's pick at the routed mean latency: the best ranked shape predicted to fit it, then
            # measured; one that measures more than 3 % slower than the routed mean gives way to the next
            fits = [s.name for s in source.plan.space() if lut.predict(s).decode_ms * lut_scale <= routed["mean_ms"]]
            static = None
            for name in ranking.order([n for n in fits if n in ranking.scores])[:4]:
                if name not in ms:
                    ms.update(measure_ms(source, [source.shape(name)], work))
                if ms[name] <= routed["mean_ms"] * 1.03:
                    static = name
                    break
            static = static or names[0]
            if static not in table:
                table[static] = per_prompt(source, source.shape(static), ref)
            st = figures([static] * len(ref.prompts), table, ref, ms)
            rows[f"{frac:.0%}"] = {
                "budget_ms": round(budget, 3), "lambda": cal.lam, "calibration_mean_ms": round(cal.mean_ms, 3),
                "shares": {n: round(choice.count(n) / len(choice), 4) for n in names},
                "adaptive": routed, "static": {"shape": static, **st}, "same_shares_at_random": shuffled,
                "oracle": oracle,
            }  # fmt: skip
            print(f"{frac:.0%}: {json.dumps(rows[f'{frac:.0%}'])}", flush=True)
            results.update(ms=ms, budgets=rows)
            write_result(args.name, results)
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=1))
    print(describe(results["machine"]))


def subset(ref: Any, keep: list[int]) -> Any:
    from edgekit.evaluation.chat import ChatReference

    return ChatReference([ref.prompts[i] for i in keep], [ref.prompt_ids[i] for i in keep],
                         [ref.replies[i] for i in keep], [ref.finished[i] for i in keep],
                         [ref.texts[i] for i in keep], ref.record)  # fmt: skip


if __name__ == "__main__":
    main()
