"""The weights digest (edgekit.models.weights): it follows the tensors, not how the files lay them out."""

from __future__ import annotations

from pathlib import Path

from edgekit.models.weights import weights_digest


def test_digest_follows_weights_not_file_layout(tiny_gqa3_dir: Path, tmp_path: Path, edgekit_home: Path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_gqa3_dir / "model.safetensors"))
    reordered = tmp_path / "reordered"
    reordered.mkdir()
    names = sorted(state, reverse=True)
    half = len(names) // 2  # two shards, reverse order, other metadata
    save_file({k: state[k] for k in names[:half]}, str(reordered / "a.safetensors"), metadata={"x": "1"})
    save_file({k: state[k] for k in names[half:]}, str(reordered / "b.safetensors"))
    assert weights_digest(reordered) == weights_digest(tiny_gqa3_dir)
    state["model.norm.weight"][0] += 1e-3
    changed = tmp_path / "changed"
    changed.mkdir()
    save_file(state, str(changed / "model.safetensors"))
    assert weights_digest(changed) != weights_digest(tiny_gqa3_dir)
