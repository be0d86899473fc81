"""ONNX Runtime GenAI int4 builds against the fp32 weights they come from: what each build option costs in
perplexity and what it buys in speed, on one shape, in one run.

    .venv/bin/python bench/quantization.py [--shape full] [--elastic smollm2-135m | --plan smollm2-135m]
                                           [--text-tokens 8192] [--only default,asym,...]

Perplexity: wikitext-2 valid, --text-tokens tokens after those the plan calibrated on (and its predictor read),
windows of 512, through ORT GenAI's own logits (edgekit.evaluation.model_io.SessionModel) and through torch
on the extracted fp32 subnet. Speed: edgekit's measurement (5 runs of 128 tokens after 2 warm-ups).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import WIKITEXT, describe, machine, require_data, write_result  # noqa: E402

# the builder's own option names (onnxruntime_genai.models.builder --extra_options)
BUILDS: dict[str, dict[str, str]] = {
    "default": {},  # symmetric RTN, block 32, int8 activations (accuracy_level 4 on CPUs)
    "block128": {"block_size": "128"},
    "acc-fp32": {"accuracy_level": "1"},  # fp32 activations into the int4 matmuls
    "asym": {"is_symmetric": "false", "shared_embeddings": "false"},  # zero points; tied head kept apart
    "head-int8": {"matmul_mixed_precision": "last_matmul:int8"},  # the 49k-vocabulary head in int8
    "k-quant": {"algo_config": "k_quant"},
    "asym-head-int8": {
        "is_symmetric": "false",
        "shared_embeddings": "false",
        "matmul_mixed_precision": "last_matmul:int8",
    },  # fmt: skip
    "mixed-int8": {"algo_config": "k_quant", "matmul_mixed_precision": "last_matmul:int8,mixed_layers:int8"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="full")
    ap.add_argument("--elastic", default=None)
    ap.add_argument("--plan", default="smollm2-135m")
    ap.add_argument("--text-tokens", type=int, default=8192)
    ap.add_argument("--only", default=",".join(BUILDS))
    ap.add_argument("--name", default="quantization", help="results file under bench/results/")
    args = ap.parse_args()
    require_data()

    from transformers import AutoModelForCausalLM

    from edgekit.deployment.measure import MeasureSettings, measure_folder
    from edgekit.elastic.source import Source
    from edgekit.engines import get_engine
    from edgekit.evaluation.data import read_text
    from edgekit.evaluation.model_io import SessionModel, bos, encode
    from edgekit.evaluation.perplexity import perplexity_of_ids

    source = Source.resolve(elastic=args.elastic) if args.elastic else Source.resolve(plan=args.plan)
    shape = source.shape(args.shape)
    tokenizer = source.tokenizer()
    skip = source.plan.held_out_skip(WIKITEXT)
    ids = encode(tokenizer, read_text(WIKITEXT)[: (skip + args.text_tokens) * 8])[skip:]
    ids = bos(tokenizer) + ids[: args.text_tokens]
    results: dict[str, Any] = {"machine": machine(), "source": source.label, "shape": shape.name,
                               "evaluation": f"{WIKITEXT.name}, {len(ids)} tokens after {skip}, windows 512/512",
                               "builds": {}}  # fmt: skip
    settings = MeasureSettings(runs=5, warmup=2, prompt_lens=())
    with tempfile.TemporaryDirectory(prefix="edgekit-quant-") as tmp:
        hf = Path(tmp) / "hf"
        source.extract(shape, hf)
        fp32 = perplexity_of_ids(AutoModelForCausalLM.from_pretrained(hf).eval(), ids, 512, 512).ppl
        results["fp32_ppl"] = round(fp32, 4)
        print(f"fp32 (torch): ppl {fp32:.3f}", flush=True)
        for name in args.only.split(","):
            out = Path(tmp) / name
            out.mkdir()
            try:
                built = get_engine("ort").compile(hf, out, "int4", "cpu", BUILDS[name])
                session = get_engine("ort").open(out)
                ppl = perplexity_of_ids(SessionModel(session), ids, 512, 512).ppl
                del session
                speed = measure_folder("ort", out, "cpu", settings)
            except Exception as exc:  # a build option this builder rejects is a result too
                results["builds"][name] = {"options": BUILDS[name], "error": str(exc).splitlines()[0][:300]}
                print(f"{name}: failed: {results['builds'][name]['error']}", flush=True)
                continue
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            row = {"options": BUILDS[name], "ppl": round(ppl, 4), "ppl_ratio": round(ppl / fp32, 4),
                   "decode_ms": round(speed.decode_ms, 3), "mb": round(size / 1e6, 1),
                   "build_s": built["seconds"]}  # fmt: skip
            results["builds"][name] = row
            print(f"{name}: ppl {ppl:.3f} ({ppl / fp32:.3f}x fp32), {speed.decode_ms:.2f} ms/token, "
                  f"{size / 1e6:.0f} MB", flush=True)  # fmt: skip
            write_result(args.name, results)
    base = results["builds"].get("default", {}).get("decode_ms")
    for row in results["builds"].values():
        if base and "decode_ms" in row:
            row["speed_vs_default"] = round(base / row["decode_ms"], 3)
    write_result(args.name, results)
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=1))
    print(describe(results["machine"]))


if __name__ == "__main__":
    main()
