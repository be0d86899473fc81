"""Evaluation data: a plain-text file for perplexity, multiple-choice items in PIQA's layout (goal, sol1, sol2
and a labels file) or a generic one (context, choices, label)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import IntegrityError, UsageError


@dataclass
class MCItem:
    context: str  # the prompt exactly as the model sees it, e.g. "Question: ...\nAnswer:"
    choices: list[str]  # each is scored as the continuation " " + choice
    label: int


def read_text(path: Path, what: str = "text file") -> str:
    """A UTF-8 file's text; a missing, undecodable or empty file is refused in one line naming it as `what`."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise UsageError(f"{what} {path} is empty")
    return text


def load_piqa(jsonl: Path, labels: Path | None = None, limit: int | None = None) -> list[MCItem]:
    """Items from PIQA's layout (goal/sol1/sol2 plus a labels file) or a generic one (context, choices, label)."""
    jsonl = Path(jsonl)
    if not jsonl.is_file():
        raise UsageError(f"multiple-choice file not found: {jsonl}")
    rows = _read_jsonl(jsonl)
    if not rows:
        raise UsageError(f"{jsonl} has no items")
    if labels is None:
        beside = jsonl.with_name(f"{jsonl.stem}-labels.lst")
        labels = beside if beside.is_file() else None
    elif not Path(labels).is_file():
        raise UsageError(f"labels file not found: {labels}")
    file_labels = _read_labels(Path(labels)) if labels is not None else None
    if file_labels is not None and len(file_labels) != len(rows):
        raise IntegrityError(f"{labels} has {len(file_labels)} labels but {jsonl} has {len(rows)} items")
    items = []
    for i, (line_no, row) in enumerate(rows):
        label = file_labels[i] if file_labels is not None else row.get("label")
        items.append(_to_item(row, label, f"{jsonl}:{line_no}"))
    return items[:limit] if limit is not None else items


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}:{line_no} is not valid JSON: {exc.msg}") from None
            if not isinstance(row, dict):
                raise UsageError(f"{path}:{line_no} is not a JSON object")
            rows.append((line_no, row))
    return rows


def _read_labels(path: Path) -> list[int]:
    out = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(int(line.strip()))
        except ValueError:
            raise UsageError(f"{path}:{line_no} is not an integer label: {line.strip()!r}") from None
    return out


def _to_item(row: dict[str, Any], label: Any, where: str) -> MCItem:
    if "goal" in row:
        if not isinstance(row.get("sol1"), str) or not isinstance(row.get("sol2"), str):
            raise UsageError(f"{where} has a goal but not both sol1 and sol2")
        # lm-evaluation-harness's PIQA prompt, so accuracies compare with its published numbers
        context, choices = f"Question: {row['goal']}\nAnswer:", [row["sol1"], row["sol2"]]
    elif "choices" in row and ("context" in row or "query" in row):
        context, choices = row.get("context", row.get("query")), row["choices"]
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise UsageError(f"{where}: choices must be a list of at least two strings")
        if not isinstance(context, str):
            raise UsageError(f"{where}: context must be a string")
    else:
        raise UsageError(f"{where} has neither goal/sol1/sol2 (PIQA) nor context/choices/label")
    if label is None:
        raise UsageError(f"{where} has no label (and no labels file was found)")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
        raise IntegrityError(f"{where}: label {label!r} is not the index of one of its {len(choices)} choices")
    return MCItem(context=context, choices=list(choices), label=label)
