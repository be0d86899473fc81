"""What subnets are cut from: an elastic checkpoint (a plan plus the SMOL adapters trained on it) or a
plan alone (stage-1 weights). Every caller that takes either (deploy, profile, chat, extract, eval)
goes through one Source, so "checkpoint or plan" is decided here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import UsageError
from edgekit.shapes import Shape

if TYPE_CHECKING:
    from edgekit.elastic.checkpoint import ElasticCheckpoint
    from edgekit.elastic.extract import SubnetInfo
    from edgekit.elastic.plan import Plan
    from edgekit.elastic.predictor import AccuracyPredictor
    from edgekit.elastic.ranking import Ranking


@dataclass
class Source:
    plan: Plan
    checkpoint: ElasticCheckpoint | None
    label: str
    base_model: str | None = None  # where the base weights are, when not where the plan says
    _loaded: dict[str, Any] = field(default_factory=dict, repr=False)  # device -> ElasticModel

    @classmethod
    def resolve(cls, elastic: str | None = None, plan: str | None = None, model: str | None = None,
                base_model: str | None = None) -> Source:  # fmt: skip
        """An elastic checkpoint, a plan, or (neither given) the shipped checkpoint of `model`, else its
        shipped plan; `model` defaults to the default model."""
        from edgekit.elastic.checkpoint import list_checkpoints, load_checkpoint
        from edgekit.elastic.plan import load_plan, shipped_plans
        from edgekit.models.registry import DEFAULT_MODEL

        if elastic and plan:
            raise UsageError("give --elastic or --plan, not both")
        if elastic:
            ckpt = load_checkpoint(elastic)
            return cls(ckpt.plan, ckpt, f"elastic checkpoint {ckpt.name}", base_model)
        if plan:
            the_plan = load_plan(plan)
            return cls(the_plan, None, f"plan {the_plan.name} (stage 1, no fine-tuning)", base_model)
        model = model or DEFAULT_MODEL
        for found in list_checkpoints([]):
            general = found.origin == "shipped" and found.kind == "general"
            if general and found.manifest and found.manifest["model"]["name"] == model:
                ckpt = load_checkpoint(found.path)
                return cls(ckpt.plan, ckpt, f"shipped elastic checkpoint {ckpt.name}", base_model)
        if model in shipped_plans():
            the_plan = load_plan(model)
            return cls(the_plan, None, f"shipped plan {the_plan.name} (stage 1, no fine-tuning)", base_model)
        raise UsageError(
            f"no elastic checkpoint or plan for model '{model}': make one with `edgekit elastic plan --model {model}` "
            "and pass it as --plan (or train it and pass --elastic)"
        )

    @property
    def accuracy(self) -> dict[str, Any] | None:
        return self.checkpoint.accuracy if self.checkpoint is not None else None

    @property
    def name(self) -> str:
        return self.checkpoint.name if self.checkpoint is not None else self.plan.name

    @property
    def smol_sha256(self) -> str | None:
        """The trained SMOL weights' hash (None for a plan): a checkpoint's accuracy belongs to them."""
        if self.checkpoint is None:
            return None
        return str(self.checkpoint.manifest["files"]["smol.safetensors"]["sha256"])

    @property
    def folder(self) -> Path:
        """Where this source's own files live (its accuracy predictor among them)."""
        path = self.checkpoint.path if self.checkpoint is not None else self.plan.path
        if path is None:
            raise UsageError(f"{self.label} has no folder: save the plan first")
        return path

    def predictor(self, metric: str = "ppl") -> AccuracyPredictor | None:
        """The predictor of `metric` (ppl, chat_ppl) fitted for exactly these weights (a checkpoint's own, never
        its plan's stage-1 one), or None; one fitted for other weights is refused."""
        from edgekit.elastic.predictor import FILES, load

        if metric not in FILES:
            return None
        return load(self.folder, self.plan, self.smol_sha256, metric)

    def save_predictor(self, predictor: AccuracyPredictor) -> Path:
        """Store the predictor in the plan's folder, or the checkpoint's (keeping its manifest's hashes true)."""
        from edgekit.elastic.predictor import file_for

        return self.save_file(file_for(predictor.metric), predictor.to_dict())

    def chat_reference(self) -> Any:
        """The full model's reference replies stored with the chat predictor (deploy measures the artifact it
        builds on them), or None."""
        from edgekit.evaluation.chat import REFERENCE_FILE, ChatReference

        path = self.folder / REFERENCE_FILE
        return ChatReference.read(path) if path.is_file() else None

    def save_chat_reference(self, ref: Any) -> Path:
        from edgekit.evaluation.chat import REFERENCE_FILE

        return self.save_file(REFERENCE_FILE, ref.to_dict())

    def save_file(self, name: str, data: dict[str, Any]) -> Path:
        """Store a JSON file of this source's own: beside the plan, or in the checkpoint (keeping its manifest's
        hashes true)."""
        from edgekit.artifacts import write_manifest

        if self.checkpoint is not None:
            from edgekit.elastic.checkpoint import set_file

            set_file(self.checkpoint, name, data)
            return self.checkpoint.path / name
        write_manifest(self.folder / name, data)  # beside a plan nothing else hashes it: sealed
        return self.folder / name

    def default_metric(self) -> str:
        """What deploy ranks by when not told: the chat metric where it can be predicted for every shape (every
        deployment is a chat model), else text perplexity."""
        if self.kind == "domain":  # ranked by what it was trimmed for, where its table measured it
            rows = (self.accuracy or {}).get("shapes") or {}
            return "domain_ppl" if rows and all(r.get("domain_ppl") is not None for r in rows.values()) else "ppl"
        return "chat_ppl" if self.predictor("chat_ppl") is not None else "ppl"

    @property
    def kind(self) -> str:
        """general (a one-for-all space, or a plan) or domain (a trimmed checkpoint: its depths at full width)."""
        return str(self.checkpoint.manifest.get("kind", "general")) if self.checkpoint is not None else "general"

    def shape(self, text: str) -> Shape:
        return self.plan.shape(text)

    def shapes(self, metric: str = "ppl", dev_text: Path | None = None) -> list[Shape]:
        """The shapes worth choosing among: the plan's whole space when perplexity can be predicted for every
        shape (a fitted predictor, or a dev text to fit one on); else those the checkpoint's accuracy table
        measured; else the plan's grid."""
        if (metric == "ppl" and dev_text is not None) or self.predictor(metric) is not None:
            return self.plan.space()
        table = self.accuracy
        if table and table.get("shapes"):
            return [self.plan.shape(name) for name in table["shapes"]]
        return self.plan.grid()

    def base_folder(self) -> Path:
        from edgekit.elastic.base_model import base_folder

        return base_folder(self.plan, self.base_model)

    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.base_folder())

    def load(self, device: str = "cpu") -> Any:
        """The ElasticModel on the plan's permuted base weights, with the checkpoint's SMOL attached; loaded
        once per device and kept, since cutting several shapes reads the same weights."""
        if device not in self._loaded:
            from edgekit.elastic.base_model import load_elastic

            elastic = load_elastic(self.plan, self.base_model, device)
            if self.checkpoint is not None:
                from edgekit.elastic.checkpoint import load_smol

                elastic.smol = load_smol(self.checkpoint, device)
            self._loaded[device] = elastic
        return self._loaded[device]

    def extract(self, shape: Shape, out: Path, force: bool = False) -> SubnetInfo:
        """Write `shape` as a standard Hugging Face checkpoint: from a plan, only the kept rows and columns of
        the base weights are read; from a checkpoint, the shape's SMOL mix is merged into them."""
        from edgekit.elastic.extract import extract, extract_elastic

        self.plan.check_shape(shape)
        if self.checkpoint is None:
            from edgekit.elastic.plan import load_permutations

            return extract(self.plan, load_permutations(self.plan), self.base_folder(), shape, out, force)
        extra = {"elastic_checkpoint": {"name": self.checkpoint.name, "smol": self.checkpoint.smol_config.to_dict()}}
        return extract_elastic(self.load(), self.plan, self.base_folder(), shape, out, force, extra)

    def ranking(self, shapes: list[Shape], metric: str = "ppl", dev_text: Path | None = None) -> Ranking:
        """How good each shape is expected to be: perplexity from a predictor fitted now on `dev_text` (cached),
        else the source's own predictor, else the checkpoint's accuracy table when it covers the shapes, else
        parameter count (said as such)."""
        from edgekit.elastic.ranking import from_dev_text, from_params, from_predictor, from_table

        if dev_text is not None:
            return from_dev_text(self, shapes, dev_text)
        predictor = self.predictor(metric)
        if predictor is not None:
            return from_predictor(self.plan, predictor, shapes)
        table = self.accuracy
        if table:
            ranking = from_table(table, metric)
            if all(s.name in ranking.scores for s in shapes):
                return ranking
        return from_params(self.plan, shapes)
