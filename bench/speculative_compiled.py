"""Self-speculative decoding in a compiled runtime's int4 builds: drafts x k against the full model alone.

    .venv/bin/python bench/speculative_compiled.py [--runtime ort|tvm] [--elastic smollm2-135m]
        [--drafts d15-f79-h3,d21-f83-h3,d24-f88-h3] [--ks 2,3,4] [--weights slice,own] [--tokens 48] [--rounds 2]

The verifier (the full model) and every draft are built as deploy ships them (int4, edgekit's GPTQ weights of the
checkpoint's shapes, SMOL merged; in ORT GenAI on a CPU the verifier with float compute, see
edgekit/deployment/speculation.py); each (draft, k) is measured in a fresh process by the code `deploy --draft`
and `profile --drafts` use (edgekit.deployment.speculation): greedy replies to the checkpoint's stored chat prompts,
the verifier alone and with the draft in turn on each prompt, for --rounds rounds. Reported per (draft, k): decode
ms/token (median over replies), speed-up against the verifier alone measured beside it, the share of drafted
tokens kept, tokens per verifier pass, and whether every reply equals the verifier's alone. `--weights`: in TVM
int4 a draft can run on the verifier's own arrays (`slice`, a library without weights, as deploy ships it) or be
its own build (`own`); ORT GenAI drafts are always their own builds. Figures go to
bench/results/speculative_RUNTIME.json with the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, write_result  # noqa: E402
from speculative import print_table  # noqa: E402

RUNTIMES = {
    "ort": "ONNX Runtime GenAI int4 (GPTQ; the draft a second session; the verifier built with accuracy_level=0, "
    "speed-ups against the plain build)",
    "tvm": "TVM int4 (GPTQ, groups of 32; the draft a library on the verifier's arrays (slice) or its own build)",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtime", choices=("ort", "tvm"), default="ort")
    ap.add_argument("--elastic", default="smollm2-135m")
    ap.add_argument("--drafts", default="d15-f79-h3,d21-f83-h3,d24-f88-h3")
    ap.add_argument("--ks", default="2,3,4")
    ap.add_argument("--weights", default="slice,own", help="drafts on the verifier's arrays (slice), own builds")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--name", default=None, help="results name (default: speculative_RUNTIME)")
    args = ap.parse_args()

    from edgekit.deployment.speculation import profile_drafts
    from edgekit.elastic.source import Source

    source = Source.resolve(elastic=args.elastic)
    drafts = [source.shape(d) for d in args.drafts.split(",")]
    ks = [int(k) for k in args.ks.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-spec-") as tmp:
        table = profile_drafts(source, args.runtime, "int4", "cpu", drafts, ks, None, Path(tmp), print, trial=False,
                               new_tokens=args.tokens, rounds=args.rounds,
                               weights=tuple(args.weights.split(",")))  # fmt: skip
    alone = statistics.median(r["alone_ms"] for r in table["rows"])
    rows = {"verifier alone": {"ms_per_token": round(alone, 2), "speedup": 1.0}}
    kinds = {r["weights"] for r in table["rows"]}
    for r in table["rows"]:
        rows[f"{r['draft']} k={r['k']}" + (f" {r['weights']}" if len(kinds) > 1 else "")] = {
            "draft": r["draft"], "k": r["k"], "weights": r["weights"], "ms_per_token": round(r["speculative_ms"], 2),
            "alone_ms": r["alone_ms"], "speedup": r["speedup"], "acceptance": r["acceptance"],
            "tokens_per_pass": r["tokens_per_pass"], "identical_greedy": r["identical"],
        }  # fmt: skip
    results = {"machine": machine(), "script": "bench/speculative_compiled.py", "source": source.label,
               "verifier": table["verifier"], "verifier_options": table["verifier_options"],
               "prompts": table["prompts"], "rounds": args.rounds, "new_tokens": args.tokens,
               "runtime": RUNTIMES[args.runtime],
               "draft_bytes": table["draft_bytes"], "seconds": table["seconds"], "rows": rows}  # fmt: skip
    write_result(args.name or f"speculative_{args.runtime}", results)
    print_table(results)


if __name__ == "__main__":
    main()
