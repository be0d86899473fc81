"""The deployment folder and its manifest:

    DEPLOYMENT/model/           the compiled subnet, in its runtime's own format (self-contained)
    DEPLOYMENT/README.md        what it is and how to chat with it
    DEPLOYMENT/manifest.json    what was chosen and why, predicted and measured figures, every file's sha256

The manifest is a dataclass that writes and reads itself; a load checks every file against its hash.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit import __version__
from edgekit.artifacts import read_format_json, utc_now, verify_files
from edgekit.deployment.budget import Budget
from edgekit.deployment.choose import Candidate
from edgekit.deployment.measure import RuntimeFigures
from edgekit.elastic.extract import SubnetInfo
from edgekit.errors import IntegrityError, UsageError
from edgekit.formats import tag

FORMAT = tag("edgekit-deployment")
MANIFEST = "manifest.json"
MODEL_DIR = "model"


@dataclass
class ShapeRecord(SubnetInfo):
    """The deployed shape: the extracted subnet's dimensions, and the hash of the weights that were compiled."""

    weights_sha256: str = ""

    @property
    def name(self) -> str:
        return self.shape


@dataclass
class RuntimeRecord:
    name: str
    precision: str
    device: str
    versions: dict[str, str] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)  # what the engine's compile reported


@dataclass
class TargetRecord:
    name: str
    title: str
    kind: str
    is_this_machine: bool


@dataclass
class LutRecord:
    key: str
    status: str  # measured | estimated
    created: str


@dataclass
class BudgetRecord:
    text: str  # as the user wrote it
    resolved: Budget  # relative terms turned into ms/token for this target
    prompt_len: int
    gen_len: int
    # when an estimated LUT made "60%" mean nothing here: the full model measured on this machine first
    full_model_measured: dict[str, float] | None = None


@dataclass
class Predicted:
    decode_ms: float
    ttft_ms: float
    memory_mb: float


@dataclass
class AccuracyRecord:
    source: str  # predictor | dev-text | accuracy-table | params
    metric: str
    value: float
    note: str
    full_value: float | None = None  # the full model's, on the same ranking
    ratio: float | None = None  # how many times worse than the full model (edgekit.deployment.choose)
    floor: float | None = None  # the quality floor it was held to
    degraded: bool = False  # below the floor, shipped because --allow-degraded said so
    # where the floor was held on another metric than the ranking's, its ratio ({"chat_ppl": 2.1} for a domain
    # checkpoint ranked by domain_ppl); `degraded` then says whether that ratio is above the floor
    floor_on: dict[str, float] | None = None
    # the deployed artifact measured through its own runtime and precision, beside the same figures of the
    # fp32 weights it was built from (deploy's quality check on the checkpoint's chat reference)
    artifact: dict[str, Any] | None = None


@dataclass
class DeploymentManifest:
    model: dict[str, Any]  # the base model's identity (name, ref, digest, architecture)
    plan: dict[str, str]  # name, permutations_sha256
    elastic: dict[str, str] | None  # the checkpoint's name and SMOL hash; None for a stage-1 plan
    shape: ShapeRecord
    runtime: RuntimeRecord
    target: TargetRecord
    lut: LutRecord
    budget: BudgetRecord
    predicted: Predicted
    accuracy: AccuracyRecord
    candidates: list[Candidate] = field(default_factory=list)
    measured: RuntimeFigures | None = None  # on this machine, when the target is this machine
    measured_on: dict[str, Any] | None = None  # the machine record, power mode included
    stepped_down_from: list[dict[str, Any]] = field(default_factory=list)
    stepped_up: list[dict[str, Any]] = field(default_factory=list)  # tries above the first choice, kept or not
    search: dict[str, Any] = field(default_factory=dict)  # shapes searched, the space, frontier size, seconds
    timings: dict[str, float] = field(default_factory=dict)
    # an adaptive deployment (deploy --adaptive): its menu, router and calibration (edgekit.deployment.adaptive)
    adaptive: dict[str, Any] | None = None
    # a draft shipped beside the model (deploy --draft): its shape, k, folder and measured figures
    speculation: dict[str, Any] | None = None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: str = field(default_factory=utc_now)
    edgekit_version: str = __version__
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {"format": data.pop("format"), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any], what: str = "deployment") -> DeploymentManifest:
        try:
            fields = {**data}
            fields["shape"] = ShapeRecord(**data["shape"])
            fields["runtime"] = RuntimeRecord(**data["runtime"])
            fields["target"] = TargetRecord(**data["target"])
            fields["lut"] = LutRecord(**data["lut"])
            fields["budget"] = BudgetRecord(**{**data["budget"], "resolved": Budget(**data["budget"]["resolved"])})
            fields["predicted"] = Predicted(**data["predicted"])
            fields["accuracy"] = AccuracyRecord(**data["accuracy"])
            fields["candidates"] = [Candidate.from_dict(c) for c in data.get("candidates", [])]
            if data.get("measured") is not None:
                fields["measured"] = RuntimeFigures.from_dict(data["measured"])
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in fields.items() if k in known})
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"{what} has a manifest that does not describe a deployment ({exc})") from None

    @property
    def figure(self) -> str:
        """Its latency in a few words: measured here, else predicted (saying from which kind of LUT)."""
        if self.speculation is not None:
            m = self.speculation["measured"]
            return (f"measured {m['speculative_ms']:.2f} ms/token with draft {self.speculation['draft']} "
                    f"(k={self.speculation['k']}; {m['alone_ms']:.2f} alone)")  # fmt: skip
        if self.measured is not None:
            return f"measured {self.measured.decode_ms:.2f} ms/token"
        return f"predicted {self.predicted.decode_ms:.2f} ms/token ({self.lut.status})"

    def readme(self, out: Path) -> str:
        rt = self.runtime
        return (
            f"# {self.model['name']} {self.shape.name} for {self.target.title}\n\n"
            f"{rt.name} {rt.precision} on {rt.device}, budget `{self.budget.text}`, {self.figure}.\n\n"
            f'Chat with it: `edgekit chat {out}` (one turn: `edgekit chat {out} --prompt "Hello"`)\n'
        )


def load_deployment(path: Path) -> DeploymentManifest:
    """The manifest of a deployment folder, after checking every file against its hash."""
    path = Path(path)
    what = f"deployment {path}"
    if not path.is_dir():
        raise UsageError(f"no deployment at {path}: run `edgekit deploy --target ... --out {path}`")
    data = read_format_json(path / MANIFEST, "edgekit-deployment", what, "; redeploy it with `edgekit deploy`")
    manifest = DeploymentManifest.from_dict(data, what)
    verify_files(path, manifest.files, what)
    return manifest


def open_deployment(path: Path) -> tuple[DeploymentManifest, Any, Any]:
    """(manifest, session, tokenizer) for a verified deployment."""
    from transformers import AutoTokenizer

    from edgekit.engines import get_engine

    manifest = load_deployment(path)
    rt = manifest.runtime
    if manifest.adaptive:
        from edgekit.deployment.adaptive import open_routed

        session = open_routed(Path(path), manifest, rt.device)
    elif manifest.speculation:
        from edgekit.deployment.speculation import open_draft
        from edgekit.speculative import SpeculativeSession

        engine, spec = get_engine(rt.name), manifest.speculation
        verifier = engine.open(Path(path) / MODEL_DIR, rt.device)
        draft = open_draft(engine, Path(path) / spec["folder"], verifier, rt.device)
        session = SpeculativeSession(verifier, draft, int(spec["k"]), spec["draft"])
    else:
        session = get_engine(rt.name).open(Path(path) / MODEL_DIR, rt.device)
    tokenizer = AutoTokenizer.from_pretrained(Path(path) / MODEL_DIR)
    return manifest, session, tokenizer


def subnet_record(hf_dir: Path) -> ShapeRecord:
    """The ShapeRecord of an extracted subnet, from the manifest extraction wrote beside it."""
    from edgekit.elastic.extract import read_subnet

    subnet = read_subnet(hf_dir, verify=False)  # just written by this run
    return ShapeRecord(**subnet["subnet"], weights_sha256=subnet["files"]["model.safetensors"]["sha256"])
