"""How good each shape is expected to be: what `deploy` ranks candidates by.

In order of trust: the elastic checkpoint's accuracy table (measured after one-for-all training);
perplexity measured now on a dev text the user names (stage-1 weights); else the shape's
parameter count, the only ordering a plan alone supports, said as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.elastic.plan import Plan
from edgekit.shapes import Shape

LOWER_IS_BETTER = {"ppl": True, "domain_ppl": True, "acc": False, "acc_norm": False, "params": False}


@dataclass(frozen=True)
class Ranking:
    source: str  # accuracy-table | dev-text | params
    metric: str
    scores: dict[str, float]  # shape name -> value of `metric`
    note: str

    def order(self, names: list[str]) -> list[str]:
        """Best first."""
        return sorted(names, key=lambda n: self.scores[n], reverse=not LOWER_IS_BETTER[self.metric])


def from_table(accuracy: dict[str, Any], metric: str) -> Ranking:
    rows = accuracy.get("shapes", {})
    scores = {name: float(row[metric]) for name, row in rows.items() if row.get(metric) is not None}
    data = accuracy.get("data", {}).get(metric.replace("acc_norm", "mc").replace("acc", "mc"), "")
    return Ranking("accuracy-table", metric, scores, f"elastic checkpoint's accuracy table ({metric}; {data})")


def from_params(plan: Plan, shapes: list[Shape]) -> Ranking:
    scores = {s.name: float(plan.geometry.non_embedding_params(s)) for s in shapes}
    return Ranking(
        "params", "params", scores, "no accuracy table: ranked by parameter count (give --dev-text to measure)"
    )


def from_dev_text(plan: Plan, shapes: list[Shape], text: Path, max_tokens: int = 4096) -> Ranking:
    """Perplexity of each shape on `text` (stage-1 weights, calibrated tokens skipped); remembered per
    (plan, text, budget) in $EDGEKIT_HOME so repeated deploys do not re-measure."""
    import json

    from transformers import AutoTokenizer

    from edgekit.artifacts import sha256_cached, write_json_atomic
    from edgekit.elastic.base_model import base_folder, load_elastic
    from edgekit.evaluation.data import read_text
    from edgekit.evaluation.perplexity import perplexity
    from edgekit.paths import home

    corpus = read_text(text)
    cache = home() / "rankings" / f"{plan.permutations_sha256[:16]}-{sha256_cached(text)[:16]}-{max_tokens}.json"
    known: dict[str, float] = json.loads(cache.read_text()) if cache.is_file() else {}
    note = f"perplexity on {text.name} ({max_tokens} tokens), stage-1 weights"
    if all(s.name in known for s in shapes):
        return Ranking("dev-text", "ppl", {s.name: known[s.name] for s in shapes}, note)
    tokenizer = AutoTokenizer.from_pretrained(base_folder(plan))
    elastic = load_elastic(plan)
    skip = plan.held_out_skip(text)
    scores = {}
    for shape in shapes:
        result = perplexity(
            elastic.at(shape), tokenizer, corpus, 512, 512, max_tokens, progress=False, skip_tokens=skip
        )
        scores[shape.name] = result.ppl
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cache, {**known, **scores})
    return Ranking("dev-text", "ppl", scores, note)
