"""Everything edgekit/data ships loads strictly, through the same readers a user's files go through:
targets, LUTs, recipes, plans, checkpoints, calibration text and Dockerfile.jetson."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.data import shipped


def _names(folder: str, suffix: str = "") -> list[str]:
    return sorted(p.name for p in shipped(folder).iterdir() if p.name.endswith(suffix) and not p.name.startswith("."))


def test_the_data_package_holds_only_known_kinds():
    assert {p.name for p in shipped().iterdir() if not p.name.startswith(("_", "."))} == {
        "Dockerfile.jetson", "calibration", "checkpoints", "luts", "plans", "recipes", "targets",
    }  # fmt: skip


def test_every_target_loads_with_the_fields_deploy_reads():
    from edgekit.deployment.targets import get_target, load_targets

    targets = load_targets()
    assert len(targets) == len(_names("targets", ".yaml"))
    seen: set[str] = set()
    for t in targets:
        assert t.kind in ("jetson", "gpu", "cpu") and t.title and t.runtimes, t.name
        assert all({"runtime", "device"} <= set(r) for r in t.runtimes), t.name
        names = {t.name, *t.aliases}
        assert not names & seen, f"{t.name} shares a name or alias with another target"
        seen |= names
        assert get_target(t.name) == t
        if t.kind != "cpu":
            assert t.memory.get("bandwidth_gbs"), f"{t.name} has no bandwidth to estimate a LUT from"
        if t.kind == "jetson":
            assert t.software.get("l4t"), f"{t.name} names no L4T release"


@pytest.mark.parametrize("name", _names("luts", ".json"))
def test_every_lut_reads_and_predicts_the_shipped_plan(name: str):
    from edgekit.deployment.lut import MEASURED, read_lut
    from edgekit.deployment.targets import get_target
    from edgekit.elastic.plan import load_plan
    from edgekit.formats import tag

    path = shipped("luts", name)
    assert json.loads(path.read_text())["format"] == tag("edgekit-lut")
    lut = read_lut(path)
    assert path.name == f"{lut.key}.json"
    plan = load_plan(lut.model["name"])
    assert lut.model["digest"] == plan.model.digest and lut.geometry == plan.geometry
    for shape in plan.grid():
        p = lut.predict(shape)
        assert p.decode_ms > 0 and p.memory_mb > 0 and p.ttft_ms >= 0
    if lut.status == MEASURED:
        assert lut.measured and lut.provenance["machine"] and lut.validation
    else:
        get_target(lut.target)  # an estimate is for a descriptor that ships
        assert lut.provenance["estimated_from"] and lut.provenance["how_to_measure"]


@pytest.mark.parametrize("name", [n.removesuffix(".yaml") for n in _names("recipes", ".yaml")])
def test_every_recipe_loads_and_names_its_data_relative_to_a_data_folder(name: str, tmp_path: Path):
    from edgekit.elastic.plan import load_plan
    from edgekit.elastic.recipe import DATA_KEYS, load_recipe

    recipe = load_recipe(name, data_dir=tmp_path)
    load_plan(recipe.plan)
    for section, key in DATA_KEYS:
        written = getattr(getattr(recipe, section), key)
        if written:
            assert not Path(written).is_absolute() and ".." not in Path(written).parts, f"{section}.{key}"
            assert recipe.file(f"{section}.{key}") == str(tmp_path / written)


@pytest.mark.parametrize("name", _names("plans"))
def test_every_plan_loads_with_verified_permutations(name: str):
    from edgekit.elastic.plan import load_permutations, load_plan

    plan = load_plan(name)
    perms = load_permutations(plan)  # checks the file's hash and that every order is a permutation
    assert len(perms.ffn) == plan.geometry.num_layers
    assert plan.full in plan.grid() and all(plan.check_shape(s) for s in plan.grid())


@pytest.mark.parametrize("name", _names("checkpoints"))
def test_every_checkpoint_verifies_and_its_adapters_load(name: str):
    from edgekit.elastic.checkpoint import load_checkpoint, load_smol
    from edgekit.elastic.plan import load_plan
    from edgekit.elastic.recipe import DATA_KEYS, load_recipe

    ckpt = load_checkpoint(name)  # every file against the manifest's hashes
    smol = load_smol(ckpt)  # the safetensors fit the config
    assert smol.num_parameters() > 0
    recipe = load_recipe(str(ckpt.path / "recipe.yaml"))
    assert ckpt.plan.model.digest == load_plan(recipe.plan).model.digest  # the shipped plan it was trained on
    # what deploy ranks by: predictors fitted for exactly these weights, for every shape of the space; a domain
    # checkpoint's depths are all measured in its table
    from edgekit.elastic.source import Source

    source = Source.resolve(elastic=name)
    if ckpt.manifest.get("kind", "general") == "general":
        assert source.predictor("ppl") is not None
        assert source.predictor("chat_ppl") is not None and source.chat_reference() is not None
    else:
        assert {s.name for s in source.plan.space()} == set(ckpt.accuracy["shapes"])
        assert all(row["domain_ppl"] > 1 for row in ckpt.accuracy["shapes"].values())
    table = ckpt.accuracy  # measured on shapes along the frontier (the retrained checkpoint's is still to come)
    if table is not None:
        assert all(row["ppl"] > 1 for row in table["shapes"].values())
    recorded = ckpt.manifest["training"]["data"]
    for section, key in DATA_KEYS:
        written = getattr(getattr(recipe, section), key)
        if written:  # every file the recipe read is recorded by the name it wrote and its sha256
            assert recorded[f"{section}.{key}"]["name"] == written and len(recorded[f"{section}.{key}"]["sha256"]) == 64
    # nothing in it names a path of the machine that made it (stage 2's init: stage 1's run, in the repository)
    assert not recipe.train.init or not Path(recipe.train.init).is_absolute()


def test_the_dockerfile_declares_every_argument_a_build_sets():
    from edgekit.container.build import dockerfile_args, dockerfile_path

    declared = set(dockerfile_args(dockerfile_path().read_text()))
    assert {"BASE_IMAGE", "RUNTIME", "EDGEKIT_WHEEL", "EDGEKIT_DEPLOYMENT_SHA256", "JETSON_PIP_INDEX",
            "ONNXRUNTIME_GENAI_VERSION"} <= declared  # fmt: skip


def test_every_shipped_file_goes_into_the_wheel():
    """A file under edgekit/data that no package-data pattern names works in a clone and is missing from a
    wheel (a container image, a pip install): the calibration text once was."""
    import fnmatch

    from edgekit.artifacts import LOCK_PREFIX, PARTIAL_PREFIX

    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "edgekit.data"
    ]
    data = root / "edgekit" / "data"
    for path in data.rglob("*"):
        if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        if any(part.startswith((LOCK_PREFIX, PARTIAL_PREFIX)) for part in path.relative_to(data).parts):
            # a writer's lock, or what a killed one left: never shipped data
            continue
        rel = path.relative_to(data).as_posix()
        # setuptools' ** also matches no folder at all; fnmatch's * crosses slashes
        assert any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel, p.replace("**/", "")) for p in patterns), rel
