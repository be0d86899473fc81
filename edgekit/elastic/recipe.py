"""Training recipes: YAML files with a fixed schema, overridable from the command line as key=value.

Every ingredient of the one-for-all run has a switch here, so the ablations run from the same code:
`train.distill=false`, `train.balance=false`, `train.sandwich=false`,
`smol.gated=false smol.shared=false` (one plain LoRA).
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from edgekit.elastic.smol import SmolConfig
from edgekit.errors import UsageError, first_line
from edgekit.evaluation.settings import EvalSettings


def _shipped() -> Path:
    from edgekit.data import shipped

    return shipped("recipes")


@dataclass
class DataConfig:
    train: str = ""  # text file, JSONL of instruction/response pairs, or a hub dataset name
    format: str = "auto"  # auto | text | jsonl
    seq_len: int = 256
    max_tokens: int | None = None  # read at most this many training tokens
    # a second source mixed into every batch: instruction/response JSONL, e.g. the base model's own replies
    # (`edgekit elastic teacher-data`), so that subnets keep the instruct model's chat manners
    chat: str = ""
    chat_fraction: float = 0.0  # share of each batch's sequences drawn from `chat`
    # what of instruction/response data (`chat`, or a JSONL `train`) the loss learns: `replies` (the assistant's
    # words and end of turn) or `all` tokens, the system and user turns too (as edgekit trained before)
    chat_loss: str = "replies"


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 4
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 50
    seed: int = 0
    shapes_per_step: int = 4
    sandwich: bool = True  # always include the largest and the smallest shape
    distill: bool = True  # subnets learn from the full model's logits (else from the data)
    teacher: str = "inplace"  # inplace: the full model as it trains | frozen: the original model, cached top-k
    teacher_topk: int = 64
    # the full shape also learns the original model's cached top-k logits, at this weight beside its data
    # loss: an anchor that keeps the largest shape (and so every shape it teaches) near the pretrained
    # model while it specialises on the data
    anchor: float = 0.0
    temperature: float = 1.0
    balance: bool = True  # loss-magnitude balancing: L_i * sg(L_full) / sg(L_i)
    # shapes to sample from (default: the plan's grid); [space]: every shape of the plan's space (depth x FFN x
    # heads), so the shapes deploy searches are the shapes training sees
    grid: list[str] | None = None
    # shapes with less than this share of the full model's non-embedding parameters are not trained: far
    # below what any latency budget picks, their losses would only pull the shared adapters their way
    min_params: float = 0.0
    # an elastic checkpoint with one plain LoRA (smol.gated=false) whose adapters the run starts from (its chat
    # manners included), its smol config replacing the recipe's; "" starts from fresh adapters on the base model
    init: str = ""
    checkpoint_every: int = 100
    log_every: int = 10
    grad_clip: float = 1.0
    device: str = "auto"  # auto | cpu | cuda
    bf16: str | bool = "auto"  # autocast where a GPU supports it
    grad_checkpointing: str | bool = "auto"

    def __post_init__(self) -> None:
        # YAML reads `true`/`false` as booleans; these switches also take "auto"
        for name in ("bf16", "grad_checkpointing"):
            value = getattr(self, name)
            if isinstance(value, bool):
                setattr(self, name, "true" if value else "false")


@dataclass
class TrimConfig:
    """TrimLLM (`edgekit elastic trim`): while fine-tuning on the domain, one layer is dropped every `interval`
    steps (the one whose removal leaves the lowest domain perplexity on the calibration split) until `depth`."""

    depth: int = 0  # the depth to reach (0: not a trim recipe)
    interval: int = 20  # training steps between drops (TrimLLM: one epoch)
    # the calibration split: this many tokens from the end of data.train, held out of training (never taken
    # from evaluation data); each drop's candidates are scored on it
    calibration_tokens: int = 4096
    # a candidate within this relative distance of the best score is a tie; ties go to the largest activation
    # norm (TrimLLM's `activation` tie-breaker), then to the earlier layer
    tie_tolerance: float = 0.001
    # TrimLLM's sparse update: the adapters of this share of the layers stay frozen, those a first scan (before
    # any training) found least important
    sparse_update: float = 0.0
    # what a drop removes: a whole layer (every runtime loads the result), or one attention or MLP block
    # ("module": two blocks per drop, so depth dN keeps 2N blocks; only the torch runtime skips them)
    granularity: str = "layer"


@dataclass
class Recipe:
    plan: str = "smollm2-135m"
    model: str | None = None  # default: the model the plan was made for
    smol: SmolConfig = field(default_factory=SmolConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalSettings = field(default_factory=EvalSettings)
    trim: TrimConfig = field(default_factory=TrimConfig)
    # "data.train" -> the absolute path it names, found when the recipe was loaded; the recipe itself keeps
    # what was written, so a run and its checkpoint record portable names
    files: dict[str, str] = field(default_factory=dict, repr=False, metadata={"internal": True})

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("files")
        return data

    def file(self, key: str) -> str:
        """Where the data file that `key` (e.g. "data.train") names is: resolved at load, else as written."""
        section, name = key.split(".")
        return self.files.get(key) or getattr(getattr(self, section), name)

    def check_files(self, keys: tuple[str, ...] | None = None) -> None:
        """Every data file the recipe names (or those of `keys`) exists: a missing one is refused before hours of
        training, saying where it was looked for and how to point elsewhere."""
        for section, name in DATA_KEYS:
            key = f"{section}.{name}"
            written = getattr(getattr(self, section), name)
            if not written or (keys is not None and key not in keys):
                continue
            found = self.file(key)
            if not Path(found).exists() and not _looks_like_hub_name(found):
                raise UsageError(
                    f"recipe: {key} {written} not found (looked at {found}): give the folder that holds it with "
                    f"--data-dir DIR (or $EDGEKIT_DATASETS), or override it ({key}=PATH)"
                )

    def eval_settings(self) -> EvalSettings:
        """The eval section with its files where they are."""
        found = {name: self.file(f"eval.{name}") or None for _, name in DATA_KEYS if _ == "eval"}
        return dataclasses.replace(self.eval, **found)

    def check(self) -> None:
        t = self.train
        problems = [
            (t.steps >= 1, "train.steps must be at least 1"),
            (t.batch_size >= 1, "train.batch_size must be at least 1"),
            (t.lr > 0, "train.lr must be positive"),
            (
                t.shapes_per_step >= (2 if t.sandwich else 1),
                "train.shapes_per_step must be at least 2 with the sandwich",
            ),
            (t.teacher in ("inplace", "frozen"), "train.teacher must be inplace or frozen"),
            (t.temperature > 0, "train.temperature must be positive"),
            (t.anchor >= 0, "train.anchor must be at least 0"),
            (not t.grid or "space" not in t.grid or len(t.grid) == 1, "train.grid: [space] stands alone"),
            (0.0 <= t.min_params < 1.0, "train.min_params must be in [0, 1)"),
            (self.data.seq_len >= 8, "data.seq_len must be at least 8"),
            (self.data.format in ("auto", "text", "jsonl"), "data.format must be auto, text or jsonl"),
            (bool(self.data.train), "data.train is required (a text file, a JSONL file or a dataset name)"),
            (0.0 <= self.data.chat_fraction < 1.0, "data.chat_fraction must be in [0, 1)"),
            (self.data.chat_loss in ("replies", "all"), "data.chat_loss must be replies or all"),
            (bool(self.data.chat) == (self.data.chat_fraction > 0), "data.chat and data.chat_fraction go together"),
            (t.device in ("auto", "cpu", "cuda"), "train.device must be auto, cpu or cuda"),
            (t.grad_checkpointing in ("auto", "true", "false"), "train.grad_checkpointing must be auto, true or false"),
            (t.bf16 in ("auto", "false"), "train.bf16 must be auto or false"),
            (self.trim.depth >= 0, "trim.depth must be a depth of at least 1 (or 0: not a trim recipe)"),
            (self.trim.interval >= 1, "trim.interval must be at least 1 step"),
            (self.trim.calibration_tokens >= self.data.seq_len, "trim.calibration_tokens must hold one data.seq_len"),
            (self.trim.tie_tolerance >= 0, "trim.tie_tolerance must be at least 0"),
            (0.0 <= self.trim.sparse_update < 1.0, "trim.sparse_update must be in [0, 1)"),
            (self.trim.granularity in ("layer", "module"), "trim.granularity must be layer or module"),
        ]
        for ok, message in problems:
            if not ok:
                raise UsageError(f"recipe: {message}")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise UsageError(f"recipe: {where or 'the recipe'} must be a mapping")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UsageError(
            f"recipe: unknown key {where + '.' if where else ''}{unknown[0]} (known: {', '.join(sorted(names))})"
        )
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{where}.{key}" if where else key)
        else:
            kwargs[key] = _typed(value, hint, f"{where}.{key}" if where else key)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"recipe: {where or 'top level'}: {exc}") from None


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _typed(value: Any, hint: Any, name: str) -> Any:
    """The value as the field's type wants it (an int where a float goes), or a UsageError naming the key."""
    options = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if get_origin(option) is list and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    kinds = [_KINDS.get(o, "a list of strings" if get_origin(o) is list else "null") for o in options]
    raise UsageError(f"recipe: {name} must be {' or '.join(kinds)}, got {value!r}")


def _coerce(text: str) -> Any:
    return yaml.safe_load(text) if text != "" else ""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        if "=" not in item:
            raise UsageError(f"override '{item}' is not key=value (e.g. train.steps=200)")
        key, value = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UsageError(f"override '{item}': {part} is not a section")
        node[parts[-1]] = _coerce(value)
    return data


def recipe_path(ref: str) -> Path:
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    shipped = _shipped() / f"{ref}.yaml"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in _shipped().glob("*.yaml"))) or "none"
    raise UsageError(f"no recipe at '{ref}': give a YAML file or a shipped recipe ({names})")


# the recipe's keys that name files; a relative one is read from the data folder
DATA_KEYS = (("data", "train"), ("data", "chat"), ("eval", "text"), ("eval", "domain_text"), ("eval", "mc"),
             ("eval", "mc_labels"), ("eval", "chat_prompts"))  # fmt: skip


def load_recipe(ref: str | None, overrides: list[str] | None = None, data_dir: Path | None = None) -> Recipe:
    """The recipe `ref` (a YAML file or a shipped name) with `overrides` applied, checked, and its data paths
    made absolute: a relative path written in the recipe is read from `data_dir`, else $EDGEKIT_DATASETS,
    else the recipe file's folder; one given as an override is relative to the working directory, as the
    shell that typed it sees it."""
    from edgekit.paths import datasets_dir

    data: dict[str, Any] = {}
    base = Path.cwd()
    if ref:
        path = recipe_path(ref)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UsageError(f"recipe {path} is not valid YAML: {first_line(exc)}") from None
        except UnicodeDecodeError as exc:
            raise UsageError(f"recipe {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                             f"{exc.start})") from None  # fmt: skip
        base = path.parent
    folder = data_dir or datasets_dir() or base
    written = {(section, key): (data.get(section) or {}).get(key) for section, key in DATA_KEYS}
    data = apply_overrides(data, overrides or [])
    recipe = _build(Recipe, data, "")
    recipe.check()
    for section, key in DATA_KEYS:
        value = getattr(getattr(recipe, section), key)
        if value:
            root = folder if value == written[(section, key)] else Path.cwd()
            recipe.files[f"{section}.{key}"] = resolve_data_path(value, root)
    return recipe


def resolve_data_path(value: str, root: Path) -> str:
    """An absolute path for a data file named relative to `root`; a hub dataset name (org/name, no such
    file) is left for the loader to fetch."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    candidate = root / path
    if candidate.exists() or not _looks_like_hub_name(value):
        return str(candidate)
    return value


def _looks_like_hub_name(value: str) -> bool:
    return "/" in value and not value.startswith((".", "/", "~")) and not Path(value).suffix
