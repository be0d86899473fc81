"""Self-speculative decoding on the shipped checkpoint: 3 drafts x 3 k against the verifier alone, in torch.

    .venv/bin/python bench/speculative.py [--elastic smollm2-135m] [--verifier d30-f100-h3]
        [--drafts d15-f79-h3,d21-f83-h3,d24-f88-h3] [--ks 2,4,6] [--weights slice,own] [--prompts 6]
        [--tokens 64] [--rounds 2]

The verifier and each draft are shapes of one elastic checkpoint, greedy, batch 1, on
held-apart dev prompts of chat/prompts.jsonl (their chat template applied). Interleaved: each prompt is
answered by the verifier alone and by every (draft, k) in turn, for --rounds rounds, so a slower moment of the
host falls on all of them. Reported per (draft, k): decode ms/token (the reply's whole time after the first token
over its tokens), speed-up against the verifier alone, the share of drafted tokens kept, tokens per verifier
pass, and whether every reply equals the verifier's alone token for token. A draft's weights are either a slice
of the verifier's tensors with its SMOL mix as a low-rank correction (`slice`, what chat --draft uses: see
edgekit/speculative/slice.py) or its own merged copy (`own`); `draft_bytes` is what each adds to memory beside the
verifier. Figures go to bench/results/speculative.json with the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SHARED_DATA, describe, machine, write_result  # noqa: E402

PROMPTS = SHARED_DATA / "chat" / "prompts.jsonl"


def timed(session: Any, ids: list[int], tokens: int) -> tuple[list[int], float]:
    """The reply's tokens and its decode ms/token (from the first token to the last)."""
    from edgekit.engines import Sampling

    out, stamps = [], []
    for token in session.stream(ids, Sampling(max_new_tokens=tokens, min_new_tokens=tokens)):
        stamps.append(time.perf_counter())
        out.append(token)
    return out, (stamps[-1] - stamps[0]) * 1000 / max(1, len(stamps) - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--elastic", default="smollm2-135m")
    ap.add_argument("--verifier", default=None, help="the verifier's shape (default: the full model)")
    ap.add_argument("--drafts", default="d15-f79-h3,d21-f83-h3,d24-f88-h3")
    ap.add_argument("--ks", default="2,4,6")
    ap.add_argument("--weights", default="slice,own", help="the draft's weights: slice of the verifier's, own copy")
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--name", default="speculative")
    args = ap.parse_args()
    if not PROMPTS.is_file():
        raise SystemExit(f"benchmark data missing: {PROMPTS} (set EDGEKIT_DATASETS)")

    import numpy as np
    import torch

    from edgekit.elastic.source import Source
    from edgekit.elastic.teacher_data import prompts_from_file
    from edgekit.engines.torch_engine import ElasticTorchSession
    from edgekit.models.weights import read_config
    from edgekit.speculative import SpeculativeSession, elastic_speculative

    source = Source.resolve(elastic=args.elastic)
    plan = source.plan
    verifier = plan.shape(args.verifier) if args.verifier else plan.full
    session = ElasticTorchSession(source.load(), plan, read_config(source.base_folder()), verifier)
    tokenizer = source.tokenizer()
    prompts = prompts_from_file(PROMPTS, args.prompts, "dev")
    ids = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True)
           for p in prompts]  # fmt: skip
    ids = [list(x["input_ids"]) if isinstance(x, dict) or hasattr(x, "keys") else list(x) for x in ids]
    from edgekit.speculative.slice import own_bytes

    kinds = args.weights.split(",")
    names = args.drafts.split(",")
    # one draft model per shape and kind, shared by its k's (each session keeps its own counts)
    drafts: dict[tuple[str, str], Any] = {}
    for d in names:
        for kind in kinds:
            spec = elastic_speculative(session, plan.shape(d), 1)
            if kind == "own" or not spec.draft_sliced:
                drafts[d, kind] = session._build(plan.shape(d))
            else:
                drafts[d, kind] = spec.draft_model
    label = lambda d, k, kind: f"{d} k={k}" + (f" {kind}" if len(kinds) > 1 else "")  # noqa: E731
    configs = {label(d, k, kind): (d, int(k), kind) for d in names for kind in kinds for k in args.ks.split(",")}
    specs = {name: SpeculativeSession(session, drafts[d, kind], k, d) for name, (d, k, kind) in configs.items()}
    draft_bytes = {f"{d} {kind}": own_bytes(m, session.model) for (d, kind), m in drafts.items()}
    times: dict[str, list[float]] = {"verifier alone": [], **{n: [] for n in specs}}
    same: dict[str, bool] = {n: True for n in specs}
    print(f"verifier {verifier.name}; {len(prompts)} prompts x {args.rounds} rounds, {args.tokens} tokens each; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)  # fmt: skip
    for r in range(args.rounds):
        for i, prompt_ids in enumerate(ids):
            reference, ms = timed(session, prompt_ids, args.tokens)
            times["verifier alone"].append(ms)
            for name, spec in specs.items():
                tokens, ms = timed(spec, prompt_ids, args.tokens)
                times[name].append(ms)
                same[name] &= tokens == reference
            print(f"  round {r + 1} prompt {i + 1}: verifier {times['verifier alone'][-1]:.1f} ms/token", flush=True)
    base = float(np.median(times["verifier alone"]))
    rows = {"verifier alone": {"ms_per_token": round(base, 2), "speedup": 1.0}}
    for name, spec in specs.items():
        ms = float(np.median(times[name]))
        s = spec.stats
        rows[name] = {"draft": configs[name][0], "k": configs[name][1], "weights": configs[name][2],
                      "ms_per_token": round(ms, 2),
                      "speedup": round(base / ms, 3), "acceptance": round(s.acceptance, 4),
                      "tokens_per_pass": round(s.tokens_per_pass, 3), "identical_greedy": same[name]}  # fmt: skip
    results = {"machine": machine(), "source": source.label, "verifier": verifier.name, "prompts": len(prompts),
               "rounds": args.rounds, "new_tokens": args.tokens, "runtime": "torch fp32",
               "draft_bytes": draft_bytes, "rows": rows}  # fmt: skip
    write_result(args.name, results)
    print_table(results)


def print_table(results: dict[str, Any]) -> None:
    """The rows of a speculation benchmark (this one's or bench/speculative_compiled.py's) and the machine."""
    print(f"{'':>26} {'ms/token':>9} {'speed-up':>9} {'kept':>6} {'tok/pass':>9} {'same':>5}")
    for name, row in results["rows"].items():
        print(f"{name:>26} {row['ms_per_token']:>9.2f} {row['speedup']:>8.2f}x {row.get('acceptance', 1):>6.0%} "
              f"{row.get('tokens_per_pass', 1):>9.2f} {str(row.get('identical_greedy', '-')):>5}")  # fmt: skip
    print(describe(results["machine"]))


if __name__ == "__main__":
    main()
