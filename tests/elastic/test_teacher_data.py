"""Teacher-generated chat data and mixing it into training batches (tiny model)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from edgekit.elastic.data import Sequences
from edgekit.elastic.recipe import load_recipe
from edgekit.elastic.teacher_data import clean_heading, headings, prompts_from_text
from edgekit.elastic.train import prepare_run, train
from edgekit.formats import recipe_identity, recipe_identity_v1

RST = """\
:mod:`json` --- JSON encoder and decoder
========================================

Some text about json.

Basic Usage
-----------

.. code-block:: python

   # not a heading
   x = 1

## Markdown heading here

===
Top
===
"""


def test_headings_are_cleaned_section_titles_of_rst_and_markdown() -> None:
    assert headings(RST) == ["json (JSON encoder and decoder)", "Basic Usage", "Markdown heading here", "Top"]
    assert clean_heading("importlib.machinery -- Importers") == "importlib.machinery (Importers)"


def test_prompts_are_seeded_and_capped(tmp_path: Path) -> None:
    corpus = tmp_path / "docs.rst"
    corpus.write_text("".join(f"Title number {i}\n{'=' * 20}\n\ntext\n\n" for i in range(30)))
    first = prompts_from_text(corpus, 10, seed=1)
    assert len(first) == 10 and first == prompts_from_text(corpus, 10, seed=1)
    assert first != prompts_from_text(corpus, 10, seed=2)
    assert all("Title number" in p for p in first)


def test_teacher_data_command_writes_replies_and_their_provenance(cli, tiny_llama_dir: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "docs.rst"
    corpus.write_text(RST)
    out = tmp_path / "chat.jsonl"
    r = cli("elastic", "teacher-data", "--from-text", str(corpus), "--model", str(tiny_llama_dir), "--out", str(out),
            "--count", "3", "--max-new-tokens", "8", "--batch-size", "2", "--device", "cpu", "--json")  # fmt: skip
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert 1 <= len(rows) <= 3 and summary["rows"] == len(rows) and summary["prompts"] == 3
    assert all(row["prompt"] and row["response"] for row in rows)
    meta = json.loads((tmp_path / "chat.jsonl.meta.json").read_text())
    assert meta["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert meta["settings"]["max_new_tokens"] == 8 and meta["teacher"] == str(tiny_llama_dir)
    r = cli("elastic", "teacher-data", "--from-text", str(corpus), "--out", str(out))
    assert r.code == 2 and "exists" in r.err
    r = cli("elastic", "teacher-data", "--out", str(tmp_path / "x.jsonl"))
    assert r.code == 2 and "one prompt source" in r.err
    r = cli("elastic", "teacher-data", "--from-text", str(tmp_path / "nope.rst"), "--out", str(tmp_path / "x.jsonl"))
    assert r.code == 2 and "not found" in r.err and "Traceback" not in r.err


def test_mixed_batches_take_their_share_of_each_source_and_depend_only_on_the_step() -> None:
    main = Sequences(torch.arange(0, 400), 10, 4, 0, "main")  # 40 rows
    extra = Sequences(torch.arange(1000, 1070), 10, 1, 1, "chat")  # 7 rows
    mixed = main.mixed(extra, 0.5)
    seen_extra = set()
    for step in range(20):
        rows = mixed.rows(step)
        assert rows.tolist() == mixed.rows(step).tolist()
        batch = mixed.data[rows]
        from_extra = (batch[:, 0] >= 1000).sum().item()
        assert len(rows) == 4 and from_extra == 2
        seen_extra |= {int(r) for r in rows if r >= len(main)}
    assert seen_extra == set(range(40, 47))  # 40 draws walk every chat row
    assert main.mixed(extra, 0.01).take == 1 and main.mixed(extra, 0.99).take == 3  # both sources in every batch


def _recipe(plan: Path, data: Path, *extra: str):
    return load_recipe(None, [f"plan={plan}", f"data.train={data}", "data.seq_len=32", "train.batch_size=2",
                              "train.steps=2", "train.warmup=1", "train.grid=[d6-w100, d3-w34]", "smol.rank=2",
                              "smol.experts=3", *extra])  # fmt: skip


def test_a_recipe_without_chat_keeps_its_identity_and_one_with_chat_trains(
    tiny_plan: Path, calib_text: Path, tmp_path: Path
) -> None:
    plain = _recipe(tiny_plan, calib_text)
    data = plain.to_dict()
    for key in ("steps", "checkpoint_every", "log_every"):
        data["train"].pop(key)
    data.pop("eval")
    del data["data"]["chat"], data["data"]["chat_fraction"], data["train"]["anchor"], data["smol"]["shared_rank"]
    # training state v1 hashed the recipe without the chat mix, the anchor and the shared expert's own rank
    # at their neutral values: a v1 checkpoint of this recipe is recognised (and upgraded to its v2 identity)
    assert recipe_identity_v1(plain.to_dict()) == hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    identity = recipe_identity(plain.to_dict())
    assert recipe_identity(_recipe(tiny_plan, calib_text, "train.anchor=1.0").to_dict()) != identity
    wide = _recipe(tiny_plan, calib_text, "smol.shared=true", "smol.shared_rank=6").to_dict()
    assert recipe_identity(wide) != recipe_identity(_recipe(tiny_plan, calib_text, "smol.shared=true").to_dict())
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"prompt": f"q{i}", "response": "an answer " * 8}) + "\n" for i in range(20)))
    mixed = _recipe(tiny_plan, calib_text, f"data.chat={chat}", "data.chat_fraction=0.5")
    assert recipe_identity(mixed.to_dict()) != identity
    trainer = prepare_run(mixed, tmp_path / "run", resume=False)
    assert trainer.state.step == 0 and len(trainer.data) > len(trainer.data.main)
    assert train(trainer).step == 2
    with pytest.raises(Exception, match="go together"):
        _recipe(tiny_plan, calib_text, f"data.chat={chat}")
