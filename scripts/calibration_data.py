"""Write edgekit/data/calibration/default.jsonl: the text the int4 builds are calibrated on (GPTQ).

    python scripts/calibration_data.py [--data ../shared/data] [--teacher bench/data/chat/teacher-smollm2-135m.jsonl]

Three kinds of text, none of it evaluation data: the opening of WikiText-2 valid (the tokens every plan
of the default model already calibrates on, which evaluations skip), passages of the Python
documentation's training part, and the default model's own replies to training prompts (teacher data).
Each line is {"text": ...} or {"prompt": ..., "response": ...}, with a "source" field.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHUNK_CHARS = 1400  # about 300 tokens: longer than the 256 each sequence keeps
WIKI_CHARS = 20_000  # well inside the 8,192 tokens the default plan calibrates on


def chunks(text: str, count: int, span: int) -> list[str]:
    """`count` passages of about CHUNK_CHARS, evenly spaced over the first `span` characters, each starting
    at a line start."""
    out = []
    for i in range(count):
        at = text.find("\n", i * span // count) + 1
        out.append(text[at : at + CHUNK_CHARS].strip())
    return [c for c in out if c]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--teacher", type=Path, default=ROOT / "bench/data/chat/teacher-smollm2-135m.jsonl")
    ap.add_argument("--texts", type=int, default=16, help="passages of each text source")
    ap.add_argument("--chats", type=int, default=32, help="teacher replies")
    ap.add_argument("--out", type=Path, default=ROOT / "edgekit/data/calibration/default.jsonl")
    args = ap.parse_args()
    wiki = (args.data / "wikitext-2/valid.txt").read_text(encoding="utf-8")
    pydoc = (args.data / "pydoc/train.txt").read_text(encoding="utf-8")
    rows = [{"source": "wikitext-2 valid (opening)", "text": t} for t in chunks(wiki, args.texts, WIKI_CHARS)]
    rows += [{"source": "python docs (train part)", "text": t} for t in chunks(pydoc, args.texts, len(pydoc))]
    teacher = [json.loads(line) for line in args.teacher.read_text(encoding="utf-8").splitlines() if line.strip()]
    finished = [t for t in teacher if t.get("finished") and t["response"].strip()]
    step = max(1, len(finished) // args.chats)
    for t in finished[::step][: args.chats]:
        rows.append({"source": "SmolLM2-135M-Instruct's replies (teacher data)", "prompt": t["prompt"],
                     "response": t["response"]})  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} rows, {args.out.stat().st_size / 1e3:.0f} kB: {args.out}")


if __name__ == "__main__":
    main()
