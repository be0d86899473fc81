"""The accuracy table of an elastic model: per shape, dev perplexities and zero-shot accuracy.

`deploy` ranks shapes by it. Perplexity on the calibration text skips the tokens the plan was
calibrated on, so the figure is held out from selection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgekit.artifacts import utc_now
from edgekit.elastic.plan import Plan
from edgekit.evaluation.settings import EvalData, EvalSettings, score
from edgekit.formats import tag
from edgekit.shapes import Shape

FORMAT = tag("edgekit-accuracy")


def evaluate_shapes(
    elastic: Any,
    tokenizer: Any,
    plan: Plan,
    shapes: list[Shape],
    settings: EvalSettings,
    on_shape: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The table for `shapes`: each shape's parameters and figures, and what data they were measured on."""
    for shape in shapes:
        plan.check_shape(shape)
    data = EvalData.load(settings, plan)
    rows: dict[str, dict[str, Any]] = {}
    for shape in shapes:
        if on_shape:
            on_shape(shape.name)
        rows[shape.name] = {"params": plan.geometry.non_embedding_params(shape),
                            **score(elastic.eval().at(shape), tokenizer, data)}  # fmt: skip
    return {"format": FORMAT, "shapes": rows, "data": data.describe(), "created": utc_now()}
