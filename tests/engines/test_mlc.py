"""The MLC-LLM runtime: config checks, the exact command lines, and clear refusals where MLC is absent.

MLC-LLM has no wheels here, so generation through its engine is not run in this suite; what runs is
every decision edgekit makes before handing over to `mlc_llm`, and (when mlc_llm is importable, as in
the jetson-containers MLC image) MLC's own config class on our subnet.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from edgekit.engines import get_engine
from edgekit.engines.mlc import LIB, commands, conv_template, device_target
from edgekit.engines.mlc_config import check_llama_config
from edgekit.errors import EdgekitError, MissingDependencyError, UsageError

HAVE_MLC = importlib.util.find_spec("mlc_llm") is not None


@pytest.fixture(scope="module")
def subnet(tiny_plan: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgekit.elastic.base_model import base_folder
    from edgekit.elastic.extract import extract
    from edgekit.elastic.plan import load_permutations, load_plan

    plan = load_plan(tiny_plan)
    out = tmp_path_factory.mktemp("mlc") / "d4-w67"
    extract(plan, load_permutations(plan), base_folder(plan), plan.shape("d4-w67"), out)
    return out


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def test_a_cut_subnet_is_a_config_mlc_llama_reads_as_is(subnet: Path) -> None:
    config = _config(subnet)
    q_rows = config["num_attention_heads"] * config["head_dim"]
    # narrowed: fewer heads than hidden_size // head_dim, so head_dim must be written out
    assert q_rows != config["hidden_size"]
    compat = check_llama_config(config, q_rows=q_rows)
    assert compat.ok, compat.problems


def test_configs_mlc_would_reject_or_misread_are_named(subnet: Path) -> None:
    config = _config(subnet)
    q_rows = config["num_attention_heads"] * config["head_dim"]
    no_head_dim = {k: v for k, v in config.items() if k != "head_dim"}
    compat = check_llama_config(no_head_dim, q_rows=q_rows)
    assert not compat.ok and "head_dim not written" in compat.reason()
    bad_gqa = {**config, "num_attention_heads": config["num_key_value_heads"] + 1}
    assert "whole multiple" in check_llama_config(bad_gqa).reason()
    per_layer = {**config, "intermediate_size": [64, 48, 64, 64]}
    assert "differs between layers" in check_llama_config(per_layer).reason()
    no_context = {k: v for k, v in config.items() if k != "max_position_embeddings"}
    assert "context window" in check_llama_config(no_context).reason()
    shards = config["num_attention_heads"] + 1  # never divides the head count
    assert "cannot be split over" in check_llama_config(config, tensor_parallel_shards=shards).reason()
    assert not check_llama_config({**config, "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}).ok


def test_commands_are_mlc_llm_s_three_steps(subnet: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    convert, gen, comp = commands(subnet, out, "q4f16_1", "cuda")
    assert convert[1:4] == ["-m", "mlc_llm", "convert_weight"] and convert[4] == str(subnet)
    assert convert[convert.index("--quantization") + 1] == "q4f16_1" and convert[-2:] == ["-o", str(out)]
    assert gen[3] == "gen_config" and gen[gen.index("--conv-template") + 1] == conv_template(subnet)
    assert gen[gen.index("--context-window-size") + 1] == str(_config(subnet)["max_position_embeddings"])
    assert comp[3] == "compile" and comp[4] == str(out / "mlc-chat-config.json")
    assert comp[comp.index("--device") + 1] == "cuda" and comp[comp.index("-o") + 1] == str(out / LIB)
    head_dim = _config(subnet)["head_dim"]
    # FlashInfer has kernels for head dims 64/128/256 only; the tiny model's are smaller
    assert ("flashinfer=0" in " ".join(comp)) == (head_dim not in (64, 128, 256))


def test_cross_compiling_for_orin_names_its_gpu_and_cpu() -> None:
    args = device_target("cuda", {"arch": "sm_87", "host": "aarch64"})
    assert json.loads(args[1]) == {"kind": "cuda", "arch": "sm_87"}
    assert json.loads(args[3]) == {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}
    assert device_target("cuda", {}) == ["--device", "cuda"]


def test_chat_format_picks_mlc_s_conversation_template(tmp_path: Path) -> None:
    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}<|im_start|>{{ m.role }}\n{% endfor %}")
    assert conv_template(tmp_path) == "chatml"
    (tmp_path / "chat_template.jinja").unlink()
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "<|start_header_id|>"}))
    assert conv_template(tmp_path) == "llama-3"
    (tmp_path / "tokenizer_config.json").write_text("{}")
    assert conv_template(tmp_path) == "LM"


def test_mlc_refuses_cpus_unknown_quantizations_and_bad_shapes(subnet: Path, tmp_path: Path) -> None:
    engine = get_engine("mlc")
    assert engine.precisions("cpu") == [] and engine.precisions("cuda")[0] == "q4f16_1"
    with pytest.raises(UsageError, match="GPUs"):
        engine.validate(subnet, "q4f16_1", "cpu")
    with pytest.raises(UsageError, match="quantizations"):
        engine.validate(subnet, "int4", "cuda")
    broken = tmp_path / "broken"
    broken.mkdir()
    config = _config(subnet)
    config["num_attention_heads"] = config["num_key_value_heads"] + 1
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match="MLC-LLM cannot compile this shape: .*whole multiple"):
        engine.validate(broken, "q4f16_1", "cuda")


@pytest.mark.skipif(HAVE_MLC, reason="mlc_llm is installed here")
def test_without_mlc_llm_it_says_where_to_get_it(subnet: Path, tmp_path: Path, monkeypatch) -> None:
    engine = get_engine("mlc")
    with pytest.raises(MissingDependencyError, match="jetson-containers MLC image"):
        engine.check()
    out = tmp_path / "model"
    out.mkdir()
    with pytest.raises(MissingDependencyError):
        engine.compile(subnet, out, "q4f16_1", "cuda")
    with pytest.raises(MissingDependencyError):
        engine.open(out, "cuda")


def test_a_folder_without_the_model_library_is_refused(tmp_path: Path, monkeypatch) -> None:
    engine = get_engine("mlc")
    monkeypatch.setattr(engine, "check", lambda: None)
    with pytest.raises(EdgekitError, match=LIB):
        engine.open(tmp_path, "cuda")


@pytest.mark.skipif(not HAVE_MLC, reason="mlc_llm not installed (jetson-containers MLC image or MLC's wheels)")
def test_mlc_s_own_llama_config_accepts_the_subnet(subnet: Path) -> None:
    from mlc_llm.model.llama.llama_model import LlamaConfig

    config = _config(subnet)
    mlc = LlamaConfig.from_dict(config)
    assert mlc.head_dim == config["head_dim"] and mlc.num_attention_heads == config["num_attention_heads"]
    assert mlc.intermediate_size == config["intermediate_size"] and "mlc_llm" in sys.modules
