"""The accuracy table of an elastic model: per shape, dev perplexities and zero-shot accuracy.

`deploy` ranks shapes by it. Perplexity on the calibration text skips the tokens the plan was
calibrated on, so the figure is held out from selection.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.elastic.plan import Plan
from edgekit.shapes import Shape


def evaluate_shapes(
    elastic: Any,
    tokenizer: Any,
    plan: Plan,
    shapes: list[Shape],
    text: str | None = None,
    text_max_tokens: int = 16384,
    domain_text: str | None = None,
    mc: str | None = None,
    mc_labels: str | None = None,
    mc_limit: int | None = None,
    on_shape: Callable[[str], None] | None = None,
    window: int = 512,
) -> dict[str, Any]:
    from edgekit.evaluation.metrics import load_piqa, multiple_choice, perplexity, read_text

    texts = {}
    for key, path in (("ppl", text), ("domain_ppl", domain_text)):
        if path:
            p = Path(path)
            texts[key] = (read_text(p), plan.held_out_skip(p), p.name)
    items = load_piqa(Path(mc), Path(mc_labels) if mc_labels else None, limit=mc_limit) if mc else None
    rows: dict[str, dict[str, Any]] = {}
    for shape in shapes:
        plan.check_shape(shape)
        if on_shape:
            on_shape(shape.name)
        start = time.perf_counter()
        shaped = elastic.eval().at(shape)
        row: dict[str, Any] = {"params": plan.geometry.non_embedding_params(shape)}
        for key, (corpus, skip, _) in texts.items():
            budget = {"max_length": window, "stride": window, "max_tokens": text_max_tokens, "skip_tokens": skip}
            row[key] = perplexity(shaped, tokenizer, corpus, progress=False, **budget).ppl
        if items:
            result = multiple_choice(shaped, tokenizer, items, progress=False)
            row["acc"], row["acc_norm"] = result.acc, result.acc_norm
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows[shape.name] = row
    return {
        "shapes": rows,
        "data": {
            "ppl": f"{texts['ppl'][2]}, {text_max_tokens} tokens after {texts['ppl'][1]}, windows {window}/{window}"
            if "ppl" in texts
            else None,
            "domain_ppl": f"{texts['domain_ppl'][2]}, first {text_max_tokens} tokens, windows {window}/{window}"
            if "domain_ppl" in texts
            else None,
            "mc": f"{Path(mc).name}, {len(items)} items, zero-shot" if items else None,
        },
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def score(row: dict[str, Any]) -> float:
    """One number to rank shapes by (higher is better): acc_norm when measured, else -log perplexity."""
    import math

    if row.get("acc_norm") is not None:
        return float(row["acc_norm"])
    if row.get("ppl") is not None:
        return -math.log(float(row["ppl"]))
    return float("-inf")
