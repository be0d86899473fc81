"""The build-option search on the full default model: which ONNX Runtime GenAI int4 build decodes fastest on this
host at equal quality (edgekit.deployment.option_search, what `edgekit profile --search-options` runs).

    .venv/bin/python bench/options.py [--rounds 3] [--tolerance 0.02] [--runs 5]

Every candidate is built as deploy builds it (GPTQ weights in the builder's graph), scored through ONNX Runtime's
own logits on the shipped calibration file's held-out sequences, and timed in interleaved rounds (batch 1, decode
of 64 new tokens after a short prompt, median of --runs timed runs per round). Figures go to
bench/results/options.json with the machine; nothing is written to the LUTs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe, machine, write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    from edgekit.deployment.measure import MeasureSettings
    from edgekit.deployment.option_search import search_options
    from edgekit.deployment.profile import input_widths
    from edgekit.elastic.base_model import base_folder
    from edgekit.elastic.extract import extract
    from edgekit.elastic.plan import load_permutations, load_plan

    plan = load_plan("smollm2-135m")
    settings = MeasureSettings(runs=args.runs, warmup=2, prompt_lens=())
    with tempfile.TemporaryDirectory(prefix="edgekit-options-") as tmp:
        hf = Path(tmp) / "hf"
        extract(plan, load_permutations(plan), base_folder(plan), plan.full, hf)
        found = search_options(hf, "ort", "int4", "cpu", Path(tmp), settings, plan.full.name, args.tolerance,
                               args.rounds, None, lambda s: print(s, flush=True), input_widths(plan))  # fmt: skip
    result = {"machine": machine(), "settings": settings.to_dict(), **found.to_dict()}
    write_result("options", result)
    base = found.trials[0].decode_ms
    print(f"{'options':<34} {'ms/token':>9} {'speed-up':>9} {'ppl':>8} {'vs default':>10}")
    for t in found.trials:
        mark = " *" if t.options == found.winner else ""
        print(f"{t.label + mark:<34} {t.decode_ms:>9.2f} {base / t.decode_ms:>8.2f}x {t.ppl:>8.3f} "
              f"{t.quality_ratio:>9.3f}x")  # fmt: skip
    print(f"chosen {found.winner}: {found.speedup:.2f}x the default build; {'; '.join(found.notes)}")
    print(describe(result["machine"]))


if __name__ == "__main__":
    main()
