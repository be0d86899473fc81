"""The accuracy predictor, the latency predictor's twin: fitted on a few dozen shapes evaluated on a dev text
(chosen to cover the space: its corners, edge midpoints and centre), it predicts the perplexity of every
shape of the plan's space, so deploy can search thousands of shapes without evaluating them.

    log ppl = b0 + b1 D + b2 D^2 + b3 u + b4 u^2 + b5 v + b6 v^2 + b7 D u + b8 D v + b9 u v + b10 u^2 v + b11 u v^2

where D is how much the depth's layer set raises calibration log-perplexity at full width (the DP's own
score, known for every depth), u the fraction of FFN channels removed and v the fraction of query heads
removed. Most of a stage-1 space is broken (one query head per group costs SmolLM2 x200 in perplexity) and
no deploy picks from there, so the fit is weighted to where choices are made: a shape e^k times worse than
the full model weighs 1 / (1 + k)^2. On SmolLM2-135M this halves the error on useful shapes against an
unweighted fit (bench/space.py; the remaining ~10 % is each depth's own layer set, which no smooth form
follows).

Its error is reported on shapes left out of the fit, as the LUT reports its own (median and max relative
error of the perplexity, share within ±10 %, rank correlation), over the whole space and over the useful
region (predicted within USEFUL x the full model): half the held-out shapes are drawn from each. Then it is
refitted on every evaluated shape. A predictor belongs to one plan (and SMOL weights) and is refused for any
other.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.artifacts import read_format_json, utc_now, write_manifest
from edgekit.elastic.plan import PREDICTOR_FILE
from edgekit.errors import IntegrityError, UsageError
from edgekit.formats import tag
from edgekit.shapes import Shape

if TYPE_CHECKING:
    from edgekit.elastic.plan import Plan
    from edgekit.elastic.source import Source

FORMAT = tag("edgekit-accuracy-predictor")
FILE = PREDICTOR_FILE
CHAT_FILE = "chat-predictor.json"  # the same model of the space, fitted on chat_ppl (edgekit.evaluation.chat)
FILES = {"ppl": FILE, "chat_ppl": CHAT_FILE}
CHAT_PROMPTS = 24  # reference replies a chat predictor scores each design shape on (about 3.5k tokens)
# every term is a product of powers up to 2, so the 3 x 3 x 3 design determines it
TERMS = ["1", "D", "D^2", "u", "u^2", "v", "v^2", "D*u", "D*v", "u*v", "u^2*v", "u*v^2"]
HELD_OUT = 10  # shapes evaluated only to measure the predictor's error
USEFUL = 20.0  # the useful region: perplexity within this factor of the full model's
DEV_TOKENS = 1024  # tokens of dev text each design shape is scored on (37 shapes: about 80 s on 2 cores)
WINDOW = 512


def features(plan: Plan, shape: Shape) -> list[float]:
    g = plan.geometry
    scores = plan.depth.scores
    d = math.log(scores[shape.depth]) - math.log(scores[g.num_layers])
    u = 1 - g.dims(shape).ffn / g.ffn
    v = 1 - shape.heads / g.heads_per_group
    return [1.0, d, d * d, u, u * u, v, v * v, d * u, d * v, u * v, u * u * v, u * v * v]


def weights(log_ppl: np.ndarray, log_full: float) -> np.ndarray:
    """1 / (1 + k)^2 for a shape e^k times worse than the full model (1 for any better)."""
    return 1.0 / (1.0 + np.maximum(0.0, log_ppl - log_full)) ** 2


def fit(plan: Plan, measured: dict[Shape, float]) -> list[float]:
    """Weighted least squares on log perplexity. A plan whose space lacks an axis (one depth, one head per group)
    leaves some terms undetermined: the least-norm solution sets them to what the data cannot tell apart."""
    x = np.array([features(plan, s) for s in measured])
    y = np.log(np.array(list(measured.values())))
    full = measured.get(plan.geometry.full)
    root = np.sqrt(weights(y, math.log(full) if full else float(y.min())))
    coef, *_ = np.linalg.lstsq(root[:, None] * x, root * y, rcond=None)
    return [float(c) for c in coef]


def rank_correlation(a: list[float], b: list[float]) -> float:
    """Spearman's rho (ties get their mean rank)."""

    def ranks(values: list[float]) -> np.ndarray:
        order = np.argsort(values, kind="stable")
        r = np.empty(len(values))
        r[order] = np.arange(len(values))
        for v in set(values):  # mean rank for ties
            idx = [i for i, x in enumerate(values) if x == v]
            r[idx] = r[idx].mean()
        return r

    if len(a) < 2:
        return 1.0
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def error_stats(predicted: list[float], measured: list[float]) -> dict[str, Any]:
    """On perplexities: median and max relative error, share within ±10 %, log RMSE, rank correlation."""
    if not measured:
        return {"n": 0}
    rel = [abs(p - m) / m * 100 for p, m in zip(predicted, measured, strict=True)]
    log_rmse = math.sqrt(sum((math.log(p) - math.log(m)) ** 2 for p, m in zip(predicted, measured, strict=True))
                         / len(rel))  # fmt: skip
    return {
        "n": len(rel),
        "median_pct": round(float(np.median(rel)), 2),
        "max_pct": round(max(rel), 2),
        "within_10_pct": round(100 * sum(r <= 10 for r in rel) / len(rel), 1),
        "log_rmse": round(log_rmse, 4),
        "spearman": round(rank_correlation(predicted, measured), 4),
    }


@dataclass
class AccuracyPredictor:
    coefficients: list[float]
    identity: dict[str, str | None]  # the model digest, plan permutations and SMOL weights it was fitted for
    data: dict[str, Any]  # the dev text (name, sha256), tokens scored, window, tokens skipped
    measured: dict[str, float]  # every evaluated shape's perplexity
    fitted_on: list[str]
    validation: dict[str, Any] | None = None
    metric: str = "ppl"
    terms: list[str] = field(default_factory=lambda: list(TERMS))
    created: str = field(default_factory=utc_now)
    format: str = FORMAT

    def predict(self, plan: Plan, shape: Shape) -> float:
        return math.exp(float(np.dot(self.coefficients, features(plan, shape))))

    def describe(self) -> str:
        """One line: what it was fitted on and how well it predicts shapes it did not see."""
        d = self.data
        text = f"the accuracy predictor fitted on {len(self.fitted_on)} shapes' {self.metric} on {d.get('file')}"
        text += f" ({d.get('tokens')} tokens"
        v = self.validation
        if v:
            useful = v.get("useful", {})
            text += (f"; on {v['n']} shapes left out: median error {v['median_pct']:.0f} %, rank correlation "
                     f"{v['spearman']:.2f}")  # fmt: skip
            if useful.get("n"):
                text += f"; on the {useful['n']} of them within x{useful['within']:.0f} of the full model: "
                text += f"median {useful['median_pct']:.0f} %"
        return text + ")"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {"format": data.pop("format"), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any], what: str) -> AccuracyPredictor:
        try:
            found = {k: v for k, v in data.items() if k != "format"}
            predictor = cls(**found)
        except TypeError as exc:
            raise IntegrityError(f"{what} does not describe an accuracy predictor ({exc})") from None
        if predictor.terms != TERMS or len(predictor.coefficients) != len(TERMS):
            raise IntegrityError(f"{what} has terms {predictor.terms}; this edgekit predicts with {TERMS}")
        return predictor


def identity(plan: Plan, smol_sha256: str | None = None) -> dict[str, str | None]:
    return {"model": plan.model.digest, "plan": plan.permutations_sha256, "smol": smol_sha256}


def design(plan: Plan) -> list[Shape]:
    """The shapes a predictor is fitted on: the space's corners, edge midpoints and centre (depth x FFN x
    heads, each at its widest, middle and narrowest)."""
    g = plan.geometry
    ffn = g.ffn_grid(plan.width.ffn_floor)
    heads = list(range(g.heads_per_group, 0, -1))

    def three(values: list[int]) -> list[int]:
        return list(dict.fromkeys([values[0], values[len(values) // 2], values[-1]]))

    return [Shape(d, f, h) for d in three(sorted(plan.depths, reverse=True)) for f in three(ffn) for h in three(heads)]


def held_out_shapes(plan: Plan, coef: list[float], fit_on: list[Shape], n: int, seed: int = 0) -> list[Shape]:
    """`n` shapes to measure the error on: half drawn from the whole space, half from the shapes the first fit
    puts in the useful region (where deploy chooses), none of them fitted on."""
    probe = AccuracyPredictor(coef, {}, {}, {}, [])
    rest = [s for s in plan.space() if s not in set(fit_on)]
    rng = random.Random(seed)
    full = probe.predict(plan, plan.geometry.full)
    useful = [s for s in rest if probe.predict(plan, s) <= USEFUL * full]
    picked = rng.sample(useful, min(n - n // 2, len(useful)))
    others = [s for s in rest if s not in set(picked)]
    return picked + rng.sample(others, min(n - len(picked), len(others)))


def build(
    plan: Plan,
    evaluate: Callable[[Shape], float],
    data: dict[str, Any],
    smol_sha256: str | None = None,
    held_out: int = HELD_OUT,
    on_shape: Callable[[str], None] | None = None,
    metric: str = "ppl",
) -> AccuracyPredictor:
    """Evaluate the design (`evaluate(shape)` gives its perplexity) and fit; then measure the error on held-out
    shapes and refit on all."""
    measured: dict[Shape, float] = {}

    def run(shapes: list[Shape]) -> None:
        for shape in shapes:
            if on_shape:
                on_shape(shape.name)
            measured[shape] = evaluate(shape)

    fit_on = design(plan)
    run(fit_on)
    coef = fit(plan, measured)
    extra = held_out_shapes(plan, coef, fit_on, held_out)
    run(extra)
    validation = None
    if extra:
        probe = AccuracyPredictor(coef, {}, data, {}, [])
        predicted = {s: probe.predict(plan, s) for s in extra}
        full = measured[plan.geometry.full] if plan.geometry.full in measured else min(measured.values())
        useful = [s for s in extra if measured[s] <= USEFUL * full]
        validation = {
            "fitted_on": len(fit_on),
            "held_out": [s.name for s in extra],
            **error_stats([predicted[s] for s in extra], [measured[s] for s in extra]),
            "useful": {"within": USEFUL, **error_stats([predicted[s] for s in useful], [measured[s] for s in useful])},
            "per_shape": {s.name: {"ppl": round(measured[s], 3), "predicted": round(predicted[s], 3)} for s in extra},
        }
    return AccuracyPredictor(
        coefficients=fit(plan, measured),
        identity=identity(plan, smol_sha256),
        data=data,
        measured={s.name: round(v, 4) for s, v in measured.items()},
        fitted_on=[s.name for s in measured],
        validation=validation,
        metric=metric,
    )


def file_for(metric: str) -> str:
    if metric not in FILES:
        raise UsageError(f"no accuracy predictor predicts {metric}: {', '.join(FILES)} can be predicted")
    return FILES[metric]


def save(predictor: AccuracyPredictor, folder: Path) -> Path:
    path = folder / file_for(predictor.metric)
    write_manifest(path, predictor.to_dict())  # sealed: a flipped coefficient would rank shapes wrongly
    return path


def load(folder: Path, plan: Plan, smol_sha256: str | None = None, metric: str = "ppl") -> AccuracyPredictor | None:
    """The predictor of `metric` stored in `folder`, checked to belong to this plan (and SMOL weights); None if
    there is none."""
    path = folder / file_for(metric)
    if not path.is_file():
        return None
    what = f"accuracy predictor {path}"
    predictor = AccuracyPredictor.from_dict(read_format_json(path, "edgekit-accuracy-predictor", what), what)
    if predictor.identity != identity(plan, smol_sha256):
        raise IntegrityError(
            f"{what} was fitted for another plan or model: refit it with `edgekit elastic predictor` "
            f"(it names model {str(predictor.identity.get('model'))[:12]}, this plan's is {plan.model.digest[:12]})"
        )
    return predictor


# ------------------------------------------------------------------ fitting on a model


@dataclass(frozen=True)
class DevTokens:
    """The dev text a predictor is fitted on, encoded once: past the tokens the plan calibrated on."""

    ids: list[int]
    record: dict[str, Any]  # file, sha256, skip_tokens, tokens, window


def dev_tokens(plan: Plan, tokenizer: Any, text: Path, tokens: int = DEV_TOKENS, window: int = WINDOW) -> DevTokens:
    from edgekit.artifacts import sha256_file
    from edgekit.evaluation.data import read_text
    from edgekit.evaluation.model_io import bos, encode

    if tokens < window:
        raise UsageError(f"an accuracy predictor scores at least one window: tokens ({tokens}) < window ({window})")
    corpus = read_text(text)
    skip = plan.held_out_skip(text, past_predictor=False)  # a refit reads the same tokens as the first fit
    ids: list[int] = []
    for chars in ((skip + tokens) * 8, None):  # a prefix is surely long enough; else the whole text
        ids = encode(tokenizer, corpus[:chars] if chars else corpus)[skip:]
        if len(ids) >= tokens:
            break
    if len(ids) < tokens:
        past = f" past the {skip:,} the plan calibrated on" if skip else ""
        raise UsageError(
            f"{text} has {len(ids):,} tokens{past}; an accuracy predictor reads {tokens:,}: "
            "give a longer dev text or fewer tokens"
        )
    record = {"file": text.name, "sha256": sha256_file(text), "skip_tokens": skip, "tokens": tokens,
              "window": window}  # fmt: skip
    return DevTokens(bos(tokenizer) + ids[: tokens - len(bos(tokenizer))], record)


def fit_on_model(
    elastic: Any,
    plan: Plan,
    dev: DevTokens,
    smol_sha256: str | None = None,
    held_out: int = HELD_OUT,
    on_shape: Callable[[str], None] | None = None,
) -> AccuracyPredictor:
    """Build the predictor by scoring the design's shapes of `elastic` (stage-1 weights, or with SMOL) on `dev`."""
    from edgekit.evaluation.perplexity import perplexity_of_ids

    window = dev.record["window"]

    def evaluate(shape: Shape) -> float:
        return perplexity_of_ids(elastic.eval().at(shape), dev.ids, window, window).ppl

    return build(plan, evaluate, dev.record, smol_sha256, held_out, on_shape)


def fit_source(
    source: Source,
    text: Path,
    tokens: int = DEV_TOKENS,
    window: int = WINDOW,
    held_out: int = HELD_OUT,
    on_shape: Callable[[str], None] | None = None,
) -> AccuracyPredictor:
    """The predictor of a plan's stage-1 weights, or of a checkpoint with its SMOL, fitted on `text`."""
    dev = dev_tokens(source.plan, source.tokenizer(), text, tokens, window)
    return fit_on_model(source.load(), source.plan, dev, source.smol_sha256, held_out, on_shape)


def fit_chat_source(
    source: Source,
    ref: Any,
    held_out: int = HELD_OUT,
    on_shape: Callable[[str], None] | None = None,
) -> AccuracyPredictor:
    """The chat predictor: every design shape's chat_ppl (the perplexity of the full base model's greedy replies
    in `ref`, an edgekit.evaluation.chat.ChatReference), fitted with the same terms as the text predictor."""
    from edgekit.evaluation.chat import chat_ppl
    from edgekit.evaluation.model_io import sequence_logits

    elastic = source.load()

    def evaluate(shape: Shape) -> float:
        return chat_ppl(sequence_logits(elastic.eval().at(shape)), ref)

    data = {**ref.record, "tokens": sum(len(r) for r in ref.replies)}
    return build(source.plan, evaluate, data, source.smol_sha256, held_out, on_shape, metric="chat_ppl")
