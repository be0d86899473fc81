"""Subnets that chat: the new chat-preserving checkpoint against the previous shipped one and stage 1, on
shapes across its frontier, in fp32 and as the int4 artifact deploy ships.

    .venv/bin/python bench/chat.py --new edgekit/data/checkpoints/smollm2-135m --previous PREV_CHECKPOINT
                                   [--fractions 0.9,0.8,0.7,0.62,0.55,0.5] [--prompts 48] [--limit 200]

Shapes: for each fraction of the full model's predicted ms/token on this host's LUT (ORT GenAI int4), the
shape the new checkpoint's chat predictor ranks best among those predicted to fit (what `deploy` picks
before it measures), plus the full model. Every shape is measured under each source (fp32 PyTorch, SMOL
merged), and the new checkpoint's as its int4 ONNX Runtime GenAI artifact through that runtime's own
logits: deploy's build (GPTQ, edgekit.quantize) and the builder's own round to nearest (what deploy
shipped before). Metrics: wikitext-2 held-out perplexity (--text-tokens after what the plan and its
predictors read), PIQA dev acc_norm (the first --limit items), and the chat metrics on the first --prompts
dev prompts of chat/prompts.jsonl against the full base model's greedy replies (edgekit.evaluation.chat).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PIQA, PIQA_LABELS, SHARED_DATA, WIKITEXT, describe, machine, require_data, write_result  # noqa: E402

PROMPTS = SHARED_DATA / "chat" / "prompts.jsonl"
MODEL = "smollm2-135m"


class Measure:
    """The figures of one model (anything the evaluators take) and its session for generation."""

    def __init__(self, text_tokens: int, limit: int, prompts: int) -> None:
        from edgekit.elastic.source import Source
        from edgekit.evaluation.chat import reference_for
        from edgekit.evaluation.data import load_piqa, read_text
        from edgekit.evaluation.model_io import bos, encode

        plan_source = Source.resolve(plan=MODEL)
        self.tokenizer = plan_source.tokenizer()
        skip = plan_source.plan.held_out_skip(WIKITEXT)
        ids = encode(self.tokenizer, read_text(WIKITEXT)[: (skip + text_tokens) * 8])[skip:]
        self.ids = bos(self.tokenizer) + ids[:text_tokens]
        self.items = load_piqa(PIQA, PIQA_LABELS, limit=limit)
        self.ref = reference_for(plan_source.base_folder(), plan_source.plan.model.digest, PROMPTS, prompts, 96)
        self.describe = {"ppl": f"{WIKITEXT.name}, {len(self.ids)} tokens after {skip}, windows 512/512",
                         "mc": f"{PIQA.name}, first {len(self.items)} items, zero-shot acc_norm",
                         "chat": f"{PROMPTS.name} dev part, {len(self.ref.prompts)} prompts, replies of up to 96 "
                                 f"tokens; agreement on {len(self.ref.facts)} short answers"}  # fmt: skip

    def figures(self, model: Any, session: Any, logits: Any) -> dict[str, Any]:
        from edgekit.evaluation.chat import chat_scores
        from edgekit.evaluation.multiple_choice import multiple_choice
        from edgekit.evaluation.perplexity import perplexity_of_ids

        start = time.perf_counter()
        row = {"ppl": round(perplexity_of_ids(model, self.ids, 512, 512).ppl, 3),
               "acc_norm": round(multiple_choice(model, self.tokenizer, self.items, False).acc_norm, 4)}  # fmt: skip
        chat = chat_scores(session, self.tokenizer, self.ref, logits)
        row.update({k: (round(v, 4) if isinstance(v, float) else v) for k, v in chat.items()})
        row["seconds"] = round(time.perf_counter() - start, 1)
        return row


def fp32_figures(m: Measure, source: Any, shape: Any) -> dict[str, Any]:
    from edgekit.engines.torch_engine import ElasticTorchSession
    from edgekit.evaluation.model_io import sequence_logits
    from edgekit.models.weights import read_config

    elastic = source.load()
    model = elastic.eval().at(shape)
    session = ElasticTorchSession(elastic, source.plan, read_config(source.base_folder()), shape)
    return m.figures(model, session, sequence_logits(model))


def int4_figures(m: Measure, source: Any, shape: Any, work: Path, quant: str = "gptq") -> dict[str, Any]:
    """The int4 artifact: `quant=gptq` as deploy builds it now, `builder` as it did before (the builder's own
    round to nearest)."""
    from edgekit.deployment.measure import MeasureSettings, measure_folder
    from edgekit.engines import get_engine
    from edgekit.evaluation.model_io import SessionModel

    hf, built = work / f"hf-{shape.name}", work / f"ort-{shape.name}-{quant}"
    if not hf.is_dir():
        source.extract(shape, hf)
    built.mkdir()
    get_engine("ort").compile(hf, built, "int4", "cpu", {"quant": quant})
    session = get_engine("ort").open(built)
    row = m.figures(SessionModel(session), session, session.sequence_logits)
    del session
    speed = measure_folder("ort", built, "cpu", MeasureSettings(runs=5, warmup=2, prompt_lens=()))
    row["decode_ms"] = round(speed.decode_ms, 3)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new", default=MODEL, help="the new checkpoint (folder or shipped name)")
    ap.add_argument("--previous", required=True, help="the previous shipped checkpoint's folder")
    ap.add_argument("--fractions", default="0.9,0.8,0.7,0.62,0.55,0.5")
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--text-tokens", type=int, default=4096)
    ap.add_argument("--name", default="chat", help="results file under bench/results/")
    args = ap.parse_args()
    require_data()

    from edgekit.deployment.lut import find_lut
    from edgekit.deployment.resolve import resolve_target
    from edgekit.elastic.source import Source

    new, prev, stage1 = (
        Source.resolve(elastic=args.new),
        Source.resolve(elastic=args.previous),
        Source.resolve(plan=MODEL),
    )
    predictor = new.predictor("chat_ppl")
    if predictor is None:
        raise SystemExit(f"{args.new} has no chat predictor: pack it with bench/chat_checkpoint.py")
    plan = new.plan
    res = resolve_target("host", "ort", "int4")
    lut = find_lut(res.target_name, "ort", MODEL, "int4")
    full_ms = lut.predict(plan.full).decode_ms
    picks: dict[str, Any] = {"100%": plan.full}
    for frac in (float(f) for f in args.fractions.split(",")):
        fits = [s for s in plan.space() if lut.predict(s).decode_ms <= frac * full_ms]
        if fits:
            picks[f"{frac:.0%}"] = min(fits, key=lambda s: predictor.predict(plan, s))
    m = Measure(args.text_tokens, args.limit, args.prompts)
    path = Path(__file__).resolve().parent / "results" / f"{args.name}.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    results.update({"machine": machine(), "evaluation": m.describe, "lut": f"{lut.key} ({lut.status})",
                    "sources": {"new": new.label, "previous": prev.label, "stage1": stage1.label}})  # fmt: skip
    rows = results.setdefault("rows", {})
    with tempfile.TemporaryDirectory(prefix="edgekit-chat-bench-") as tmp:
        for budget, shape in picks.items():
            first = {"budget": budget, "predicted_ms": round(lut.predict(shape).decode_ms, 3),
                     "predicted_chat_ppl": round(predictor.predict(plan, shape), 3)}  # fmt: skip
            row = rows.setdefault(shape.name, first)
            for name, source in (("new", new), ("previous", prev), ("stage1", stage1)):
                if name not in row:
                    print(f"{shape.name} ({budget}) {name} fp32", flush=True)
                    row[name] = fp32_figures(m, source, shape)
                    print(f"  {row[name]}", flush=True)
                    write_result(args.name, results)
            for key, quant in (("new_int4", "gptq"), ("new_int4_rtn", "builder")):
                if key not in row:
                    print(f"{shape.name} ({budget}) new int4 ({quant})", flush=True)
                    row[key] = int4_figures(m, new, shape, Path(tmp), quant)
                    print(f"  {row[key]}", flush=True)
                    write_result(args.name, results)
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=1))
    print(describe(results["machine"]))


if __name__ == "__main__":
    main()
