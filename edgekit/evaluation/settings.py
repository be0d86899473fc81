"""What an accuracy measurement reads and how, in the one form a recipe's `eval` section, the accuracy table,
the frontier and the benchmarks share; the data it names, loaded once; and one shape's row of figures."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekit.elastic.plan import Plan
    from edgekit.evaluation.data import MCItem


@dataclass
class EvalSettings:
    text: str | None = None  # perplexity text: held out from calibration (the calibrated tokens are skipped)
    text_max_tokens: int = 16384  # at most this many tokens of each text are scored
    window: int = 512  # perplexity windows of this many tokens
    stride: int | None = None  # how far a window moves (default: the window, so windows do not overlap)
    domain_text: str | None = None  # a second text, e.g. the fine-tuning domain's dev split
    mc: str | None = None  # zero-shot multiple choice (PIQA layout, or context/choices/label)
    mc_labels: str | None = None
    mc_limit: int | None = 400
    predictor_tokens: int = 1024  # after training, the accuracy predictor is fitted on this much of `text` (0: not)
    # chat metrics on the dev part of a prompt file (edgekit.evaluation.chat): the full model's greedy replies
    # to `chat_limit` prompts of at most `chat_tokens` tokens are the reference
    chat_prompts: str | None = None
    chat_limit: int = 64
    chat_tokens: int = 96

    @property
    def step(self) -> int:
        return self.stride or self.window


@dataclass
class EvalData:
    """The files EvalSettings names, read: per perplexity metric (ppl, domain_ppl) its text, the leading tokens
    to skip, and the file's name; and the multiple-choice items."""

    settings: EvalSettings
    texts: dict[str, tuple[str, int, str]]
    items: list[MCItem] | None

    @classmethod
    def load(cls, settings: EvalSettings, plan: Plan | None = None) -> EvalData:
        """Read everything up front, so a bad file fails before any model is loaded. With a plan, a text that
        is the plan's calibration file skips the tokens planning read."""
        from edgekit.evaluation.data import load_piqa, read_text

        texts = {}
        for key, path in (("ppl", settings.text), ("domain_ppl", settings.domain_text)):
            if path:
                p = Path(path)
                texts[key] = (read_text(p), plan.held_out_skip(p) if plan is not None else 0, p.name)
        items = None
        if settings.mc:
            labels = Path(settings.mc_labels) if settings.mc_labels else None
            items = load_piqa(Path(settings.mc), labels, limit=settings.mc_limit)
        return cls(settings, texts, items)

    def describe(self) -> dict[str, str | None]:
        """Each metric's data in words, as accuracy tables record it."""
        s, windows = self.settings, f"windows {self.settings.window}/{self.settings.step}"
        out: dict[str, str | None] = {"ppl": None, "domain_ppl": None, "mc": None}
        if "ppl" in self.texts:
            _, skip, name = self.texts["ppl"]
            out["ppl"] = f"{name}, {s.text_max_tokens} tokens after {skip}, {windows}"
        if "domain_ppl" in self.texts:
            out["domain_ppl"] = f"{self.texts['domain_ppl'][2]}, first {s.text_max_tokens} tokens, {windows}"
        if self.items:
            out["mc"] = f"{Path(s.mc or '').name}, {len(self.items)} items, zero-shot"
        return out


def score(model: Any, tokenizer: Any, data: EvalData) -> dict[str, Any]:
    """One model's (or one shape's) figures on `data`: ppl / domain_ppl, acc / acc_norm, and the seconds taken."""
    from edgekit.evaluation.multiple_choice import multiple_choice
    from edgekit.evaluation.perplexity import perplexity

    start = time.perf_counter()
    s = data.settings
    row: dict[str, Any] = {}
    for key, (text, skip, _) in data.texts.items():
        row[key] = perplexity(model, tokenizer, text, s.window, s.step, s.text_max_tokens, progress=False,
                              skip_tokens=skip).ppl  # fmt: skip
    if data.items:
        result = multiple_choice(model, tokenizer, data.items, progress=False)
        row["acc"], row["acc_norm"] = result.acc, result.acc_norm
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row
