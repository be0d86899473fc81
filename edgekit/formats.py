"""Every file format edgekit writes, its current version, and the upgrades that read the older ones.

Each artifact names its format, e.g. `"format": "edgekit-plan/1"`. Code writes the current version only;
a reader passes what it loaded through `upgrade()`, which applies the steps below one version at a time,
so the rest of the code sees only the current form. Files from before a kind was tagged count as its
version 1. A format newer than this edgekit, or another kind's, is refused with the reason.

To change a format: bump its version in CURRENT and add the step from the old version here, with a test
that reads a file of the old version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from edgekit.errors import IntegrityError

CURRENT = {
    "edgekit-model": 2,  # a pulled model's cache manifest (edgekit-model.json)
    "edgekit-plan": 2,  # plan.json
    "edgekit-elastic": 1,  # an elastic checkpoint's manifest.json
    "edgekit-smol": 3,  # an elastic checkpoint's smol.json (SMOL's config and width grid)
    "edgekit-accuracy": 3,  # an elastic checkpoint's accuracy.json
    "edgekit-train-state": 2,  # a training checkpoint's state.json
    "edgekit-subnet": 1,  # edgekit-subnet.json beside an extracted Hugging Face checkpoint
    "edgekit-lut": 2,  # a latency LUT
    "edgekit-deployment": 2,  # a deployment's manifest.json
    "edgekit-tvm": 1,  # a TVM build's edgekit-tvm.json
    "edgekit-container-context": 1,  # a container build context's context.json
    "edgekit-conversation": 2,  # the header line of a saved chat conversation
    "edgekit-teacher-data": 1,  # the sidecar of teacher-generated chat data
    "edgekit-jtop-recording": 1,  # a recording of jetson-stats' jtop objects
    "edgekit-accuracy-predictor": 1,  # accuracy- and chat-predictor.json beside a plan or in a checkpoint
    "edgekit-chat-reference": 1,  # the full model's reference replies (chat-reference.json, and the cache)
    "edgekit-router": 1,  # an input-adaptive router's router.json (edgekit.routing)
}
# kinds whose first files carried no format field: such a file is their version 1
UNTAGGED_V1 = {"edgekit-model", "edgekit-smol", "edgekit-accuracy", "edgekit-train-state", "edgekit-conversation"}


def tag(kind: str) -> str:
    """The format string new files of this kind carry."""
    return f"{kind}/{CURRENT[kind]}"


def version_of(kind: str, data: dict[str, Any], what: str) -> int:
    found = data.get("format")
    if found is None and kind in UNTAGGED_V1:
        return 1
    name, _, number = str(found).rpartition("/")
    if name != kind or not number.isdigit():
        raise IntegrityError(f"{what} has format {found!r}; this edgekit reads {tag(kind)}")
    version = int(number)
    if version > CURRENT[kind]:
        raise IntegrityError(f"{what} has format {found}, newer than this edgekit reads ({tag(kind)}): upgrade edgekit")
    return version


def upgrade(kind: str, data: Any, what: str, **context: Any) -> dict[str, Any]:
    """`data` in the current form of `kind`; `context` is what a step needs besides the file (a recipe)."""
    if not isinstance(data, dict):
        raise IntegrityError(f"{what} is not a JSON object")
    version = version_of(kind, data, what)
    while version < CURRENT[kind]:
        data = STEPS[(kind, version)](dict(data), **context)
        version += 1
        data["format"] = f"{kind}/{version}"
    return data


# ------------------------------------------------------------------ the steps


def _tag_only(data: dict[str, Any], **_: Any) -> dict[str, Any]:
    """The first tagged version of a kind: the content did not change, only the format field is new."""
    return data


def _smol_1(data: dict[str, Any], **_: Any) -> dict[str, Any]:
    # SMOL's first checkpoints mixed the experts' A and B apart and did not say so; later ones write
    # `mixing` (and a shared expert), and the config's defaults are the current recipe's.
    config = dict(data.get("config") or {})
    config.setdefault("mixing", "factors")
    config.setdefault("shared", False)
    return {**data, "config": config}


def _deployment_1(data: dict[str, Any], **_: Any) -> dict[str, Any]:
    # v1 wrote the shape's name twice (as "name" too) and kept the weights' hash entry ({sha256, size}).
    shape = dict(data.get("shape") or {})
    shape.setdefault("shape", shape.get("name"))
    shape.pop("name", None)
    weights = shape.get("weights_sha256")
    if isinstance(weights, dict):
        shape["weights_sha256"] = weights.get("sha256", "")
    return {**data, "shape": shape}


def _train_state_1(data: dict[str, Any], recipe: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
    # v1 hashed the recipe leaving out keys added after the first runs while they were at their neutral
    # value (so those runs resumed). v2 hashes every key. A v1 state made with this same recipe gets the
    # recipe's v2 identity; one made with another recipe keeps a value that matches no recipe.
    if recipe is not None and data.get("recipe") == recipe_identity_v1(recipe):
        return {**data, "recipe": recipe_identity(recipe)}
    return {**data, "recipe": f"v1:{data.get('recipe')}"}


def _plan_1(data: dict[str, Any], **_: Any) -> dict[str, Any]:
    # v1 offered coupled widths from the smallest valid one; v2 offers FFN widths from a floor and every head
    # count apart. The layer sets and permutations do not change: the same plan, a larger space.
    from edgekit.shapes import DEFAULT_FFN_FLOOR

    width = {k: v for k, v in (data.get("width") or {}).items() if k != "min_width"}
    return {**data, "width": {**width, "ffn_floor": DEFAULT_FFN_FLOOR}}


def _renamer(geometry: dict[str, Any]) -> Callable[[str], str]:
    """Old coupled names (d30-w82) to canonical ones (d30-f83-h2) for a model of this geometry."""
    from edgekit.shapes import Geometry, parse_shape

    g = Geometry(**geometry)
    return lambda name: parse_shape(name, g).name


def _lut_1(data: dict[str, Any], **_: Any) -> dict[str, Any]:
    # shapes were named by one coupled width; they are named by FFN width and head count now
    name = _renamer(data["model"]["geometry"])
    data = json.loads(json.dumps(data))
    for m in data.get("measured") or []:
        m["shape"] = name(m["shape"])
    predictor = data.get("predictor") or {}
    predictor["fitted_on"] = [name(s) for s in predictor.get("fitted_on", [])]
    validation = data.get("validation")
    if validation:
        validation["fitted_on"] = [name(s) for s in validation.get("fitted_on", [])]
        validation["held_out"] = [name(s) for s in validation.get("held_out", [])]
        validation["per_shape"] = {name(k): v for k, v in (validation.get("per_shape") or {}).items()}
    return data


def _accuracy_2(data: dict[str, Any], geometry: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
    # the table's shapes were named by one coupled width (d30-w82); they are named d30-f83-h2 now
    if geometry is None:
        raise ValueError("upgrading an accuracy table needs its plan's geometry")
    name = _renamer(geometry)
    return {**data, "shapes": {name(k): v for k, v in (data.get("shapes") or {}).items()}}


def _smol_2(data: dict[str, Any], **_: Any) -> dict[str, Any]:
    # Until FFN and heads came apart, the gate read a one-hot over the plan's coupled widths.
    return {**data, "config": {**(data.get("config") or {}), "encoding": "width"}}


STEPS: dict[tuple[str, int], Callable[..., dict[str, Any]]] = {
    ("edgekit-model", 1): _tag_only,
    ("edgekit-smol", 1): _smol_1,
    ("edgekit-smol", 2): _smol_2,
    ("edgekit-accuracy", 1): _tag_only,
    ("edgekit-accuracy", 2): _accuracy_2,
    ("edgekit-plan", 1): _plan_1,
    ("edgekit-lut", 1): _lut_1,
    ("edgekit-train-state", 1): _train_state_1,
    ("edgekit-deployment", 1): _deployment_1,
    ("edgekit-conversation", 1): _tag_only,
}


# ------------------------------------------------------------------ a training recipe's identity

# what may change between a run and its resume: its length, its logging, its evaluation
RESUMABLE_CHANGES = {"train": ("steps", "checkpoint_every", "log_every"), "eval": None}
# keys added to recipes after training state v1, at the value that left them out of a v1 identity
_ADDED_AFTER_V1 = (("data", "chat", "chat_fraction"), ("train", "anchor"), ("smol", "shared_rank"))
# keys added since, left out of every identity while unset, so runs made before them still resume
_LEFT_OUT_UNSET = (("train", "init"),)
# keys added since at a new default, left out of every identity at the value that is what runs did before them
_LEFT_OUT_AT = (("data", "chat_loss", "all"),)


def _identity_dict(recipe: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(recipe))
    for section, keys in RESUMABLE_CHANGES.items():
        if keys is None:
            data.pop(section, None)
        else:
            for key in keys:
                data.get(section, {}).pop(key, None)
    data.pop("data_dir", None)  # where the files are is not what they are: their hashes are checked apart
    if not (data.get("trim") or {}).get("depth"):  # not a trim recipe: as before the section existed
        data.pop("trim", None)
    for section, key in _LEFT_OUT_UNSET:
        if not data.get(section, {}).get(key):
            data.get(section, {}).pop(key, None)
    for section, key, before in _LEFT_OUT_AT:
        if data.get(section, {}).get(key) == before:
            data[section].pop(key)
    return data


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def recipe_identity(recipe: dict[str, Any]) -> str:
    """What a training checkpoint must share with the recipe that resumes it."""
    return _digest(_identity_dict(recipe))


def recipe_identity_v1(recipe: dict[str, Any]) -> str:
    data = _identity_dict(recipe)
    for section, key, *companions in _ADDED_AFTER_V1:
        if not data.get(section, {}).get(key):
            for k in (key, *companions):
                data.get(section, {}).pop(k, None)
    return _digest(data)
