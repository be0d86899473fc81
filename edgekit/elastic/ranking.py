"""How good each shape is expected to be: what `deploy` ranks candidates by.

Perplexity from an accuracy predictor fitted for exactly these weights (on a dev text the user names now,
or the one stored with the plan or checkpoint): it covers every shape of the space. Else the elastic
checkpoint's accuracy table (its grid, and the only source of the accuracy metrics); else the shape's
parameter count, said as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.elastic.plan import Plan
from edgekit.elastic.predictor import AccuracyPredictor
from edgekit.shapes import Shape

if TYPE_CHECKING:
    from edgekit.elastic.source import Source

LOWER_IS_BETTER = {"ppl": True, "domain_ppl": True, "chat_ppl": True, "acc": False, "acc_norm": False,
                   "answer_rate": False, "agreement": False, "params": False}  # fmt: skip


@dataclass(frozen=True)
class Ranking:
    source: str  # predictor | dev-text (a predictor fitted now) | accuracy-table | params
    metric: str
    scores: dict[str, float]  # shape name -> value of `metric`
    note: str

    def order(self, names: list[str]) -> list[str]:
        """Best first."""
        return sorted(names, key=lambda n: self.scores[n], reverse=not LOWER_IS_BETTER[self.metric])


def from_table(accuracy: dict[str, Any], metric: str) -> Ranking:
    rows = accuracy.get("shapes", {})
    scores = {name: float(row[metric]) for name, row in rows.items() if row.get(metric) is not None}
    section = "chat" if metric in ("chat_ppl", "answer_rate", "agreement") else metric
    data = accuracy.get("data", {}).get(section.replace("acc_norm", "mc").replace("acc", "mc"), "")
    return Ranking("accuracy-table", metric, scores, f"elastic checkpoint's accuracy table ({metric}; {data})")


def from_params(plan: Plan, shapes: list[Shape]) -> Ranking:
    scores = {s.name: float(plan.geometry.non_embedding_params(s)) for s in shapes}
    return Ranking(
        "params", "params", scores, "no accuracy table: ranked by parameter count (give --dev-text to measure)"
    )


def from_predictor(plan: Plan, predictor: AccuracyPredictor, shapes: list[Shape], source: str = "predictor") -> Ranking:
    scores = {s.name: predictor.predict(plan, s) for s in shapes}
    what = "chat perplexity (of the full model's replies)" if predictor.metric == "chat_ppl" else "perplexity"
    return Ranking(source, predictor.metric, scores, f"{what} predicted by {predictor.describe()}")


def from_dev_text(source: Source, shapes: list[Shape], text: Path) -> Ranking:
    """Perplexity on `text` predicted for every shape by a predictor fitted on it now (the design's few dozen
    shapes are measured); remembered per (weights, text) in $EDGEKIT_HOME so repeated deploys do not refit."""
    from edgekit.artifacts import read_format_json, sha256_cached
    from edgekit.elastic.predictor import fit_source, save
    from edgekit.paths import home

    plan = source.plan
    weights = f"{plan.permutations_sha256[:16]}-{(source.smol_sha256 or 'stage1')[:16]}"
    cache = home() / "predictors" / f"{weights}-{sha256_cached(text)[:16]}"
    what = f"cached accuracy predictor {cache}"
    if (cache / "accuracy-predictor.json").is_file():
        data = read_format_json(cache / "accuracy-predictor.json", "edgekit-accuracy-predictor", what)
        predictor = AccuracyPredictor.from_dict(data, what)
    else:
        predictor = fit_source(source, text)
        cache.mkdir(parents=True, exist_ok=True)
        save(predictor, cache)
    return from_predictor(plan, predictor, shapes, "dev-text")
