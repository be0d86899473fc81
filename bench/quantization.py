"""ONNX Runtime GenAI int4 builds against the fp32 weights they come from: what each way of making the int4
weights costs in text and chat perplexity and what it does to speed, on the same shapes, in one run.

    .venv/bin/python bench/quantization.py [--shapes full,d25-f92-h3] [--elastic smollm2-135m]
                                           [--text-tokens 8192] [--prompts 32] [--only gptq,builder,...]

Builds: edgekit's own int4 weights in the builder's graph (edgekit.quantize: GPTQ or round to nearest, zero
points, blocks of 32; `gptq-mixed` keeps the LM head in int8) against the builder's own quantization with its
options. Quality through ONNX Runtime GenAI's own logits: wikitext-2 valid, --text-tokens after those the plan
calibrated on and its predictor read (windows of 512), and chat_ppl on the first --prompts of the checkpoint's
reference replies (the full model's greedy replies to held-apart dev prompts); the same for the extracted fp32
subnet in torch. Speed: edgekit's measurement (5 runs of 64 tokens after 2 warm-ups) of every build of a shape,
in --rounds alternating rounds after all are built; the median of the rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import WIKITEXT, describe, machine, require_data, write_result  # noqa: E402

# build options: ours (quant=...) and the builder's own (quant=builder plus its --extra_options names)
BUILDS: dict[str, tuple[str, dict[str, str]]] = {
    "gptq": ("int4", {}),  # what deploy builds: GPTQ, zero points, blocks of 32, the head in int4
    "gptq-mixed": ("int4-mixed", {}),  # the same with the LM head (and tied embedding) in int8
    "gptq-sym": ("int4", {"is_symmetric": "true"}),
    "rtn": ("int4", {"quant": "rtn"}),  # our grid, no calibration: the same graph as gptq
    "builder": ("int4", {"quant": "builder"}),  # what deploy built before: the builder's symmetric RTN
    "builder-block128": ("int4", {"quant": "builder", "block_size": "128"}),
    "builder-mixed": ("int4-mixed", {"quant": "builder"}),  # k-quant, the head and sensitive layers in int8
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="full,d25-f92-h3")
    ap.add_argument("--elastic", default="smollm2-135m")
    ap.add_argument("--text-tokens", type=int, default=8192)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default=",".join(BUILDS))
    ap.add_argument("--name", default="quantization", help="results file under bench/results/")
    args = ap.parse_args()
    require_data()

    from transformers import AutoModelForCausalLM

    from edgekit.deployment.measure import MeasureSettings, measure_folder
    from edgekit.elastic.source import Source
    from edgekit.engines import get_engine
    from edgekit.engines.torch_engine import TorchSession
    from edgekit.evaluation.chat import chat_ppl
    from edgekit.evaluation.data import read_text
    from edgekit.evaluation.model_io import SessionModel, bos, encode
    from edgekit.evaluation.perplexity import perplexity_of_ids

    source = Source.resolve(elastic=args.elastic)
    tokenizer = source.tokenizer()
    skip = source.plan.held_out_skip(WIKITEXT)
    ids = encode(tokenizer, read_text(WIKITEXT)[: (skip + args.text_tokens) * 8])[skip:]
    ids = bos(tokenizer) + ids[: args.text_tokens]
    ref = source.chat_reference().head(args.prompts)
    results: dict[str, Any] = {
        "machine": machine(), "source": source.label,
        "evaluation": {"ppl": f"{WIKITEXT.name}, {len(ids)} tokens after {skip}, windows 512/512",
                       "chat_ppl": f"the checkpoint's chat reference, first {len(ref.prompts)} prompts"},
        "settings": {name: {"precision": p, "options": o} for name, (p, o) in BUILDS.items()},
        "shapes": {},
    }  # fmt: skip
    speed = MeasureSettings(runs=5, warmup=2, prompt_lens=())
    with tempfile.TemporaryDirectory(prefix="edgekit-quant-") as tmp:
        for shape_name in args.shapes.split(","):
            shape = source.shape(shape_name)
            hf = Path(tmp) / f"hf-{shape.name}"
            source.extract(shape, hf)
            fp32_model = AutoModelForCausalLM.from_pretrained(hf).eval()
            row: dict[str, Any] = {
                "fp32": {"ppl": round(perplexity_of_ids(fp32_model, ids, 512, 512).ppl, 4),
                         "chat_ppl": round(chat_ppl(TorchSession(fp32_model).sequence_logits, ref), 4)},
                "builds": {},
            }  # fmt: skip
            del fp32_model
            results["shapes"][shape.name] = row
            print(f"{shape.name} fp32 (torch): {row['fp32']}", flush=True)
            built: dict[str, Path] = {}
            for name in args.only.split(","):
                precision, options = BUILDS[name]
                out = Path(tmp) / f"{shape.name}-{name}"
                out.mkdir()
                try:
                    record = get_engine("ort").compile(hf, out, precision, "cpu", options)
                    session = get_engine("ort").open(out)
                    ppl = perplexity_of_ids(SessionModel(session), ids, 512, 512).ppl
                    chat = chat_ppl(session.sequence_logits, ref)
                    del session
                except Exception as exc:  # a build option this builder rejects is a result too
                    row["builds"][name] = {"error": str(exc).splitlines()[0][:300]}
                    print(f"  {name}: failed: {row['builds'][name]['error']}", flush=True)
                    continue
                size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
                quant = record.get("quantization") or {}
                row["builds"][name] = {
                    "ppl": round(ppl, 4), "ppl_ratio": round(ppl / row["fp32"]["ppl"], 4),
                    "chat_ppl": round(chat, 4), "chat_ratio": round(chat / row["fp32"]["chat_ppl"], 4),
                    "mb": round(size / 1e6, 1), "build_s": record["seconds"],
                    "quantize_s": quant.get("seconds"), "check": quant.get("check"),
                }  # fmt: skip
                built[name] = out
                print(f"  {name}: {row['builds'][name]}", flush=True)
                write_result(args.name, results)
            times: dict[str, list[float]] = {name: [] for name in built}
            for r in range(args.rounds):
                for name, out in built.items():
                    times[name].append(measure_folder("ort", out, "cpu", speed).decode_ms)
                print(f"  speed round {r + 1}: " + ", ".join(f"{n} {t[-1]:.2f}" for n, t in times.items()), flush=True)
            base = statistics.median(times["builder"]) if times.get("builder") else None
            for name, runs in times.items():
                ms = statistics.median(runs)
                row["builds"][name].update(decode_ms=round(ms, 3), decode_runs=[round(t, 3) for t in runs])
                if base:
                    row["builds"][name]["speed_vs_builder"] = round(base / ms, 3)
            write_result(args.name, results)
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=1))
    print(describe(results["machine"]))


if __name__ == "__main__":
    main()
