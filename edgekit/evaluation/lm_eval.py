"""lm-evaluation-harness tasks on a loaded Hugging Face model, where `lm_eval` is installed (its tasks
download their datasets from the hub)."""

from __future__ import annotations

from typing import Any

from edgekit.errors import MissingDependencyError, UsageError, first_line


def require_lm_eval() -> None:
    from importlib.util import find_spec

    if find_spec("lm_eval") is None:
        raise MissingDependencyError(
            "--lm-eval needs lm-evaluation-harness: pip install lm-eval (its tasks download datasets from the hub)"
        )


def run_lm_eval(model: Any, tokenizer: Any, tasks: list[str]) -> dict[str, Any]:
    """lm-evaluation-harness on a transformers model; a plan's shape must be extracted first."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise UsageError("--lm-eval runs on Hugging Face checkpoints: cut the shape with `edgekit elastic extract`")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8)
    try:
        out = simple_evaluate(model=lm, tasks=tasks)
    except Exception as exc:  # unknown task, dataset unreachable: lm_eval raises many kinds
        raise UsageError(f"lm-eval failed on {', '.join(tasks)}: {first_line(exc)}") from None
    return {task: dict(metrics) for task, metrics in out["results"].items()}
