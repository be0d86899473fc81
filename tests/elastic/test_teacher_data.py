"""Teacher-generated chat data and mixing it into training batches (tiny model)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from edgekit.elastic.data import Sequences, chat_ids, chat_ids_and_mask, token_stream, token_stream_and_mask
from edgekit.elastic.recipe import load_recipe
from edgekit.elastic.teacher_data import (
    api_names,
    api_prompts,
    clean_heading,
    headings,
    is_dev_prompt,
    prompts_from_text,
    read_prompts,
    split_prompts,
)
from edgekit.elastic.train import prepare_run, train
from edgekit.errors import UsageError
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
            "--headings", "3", "--max-new-tokens", "8", "--batch-size", "2", "--device", "cpu", "--json")  # fmt: skip
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
    prompts = tmp_path / "prompts.jsonl"
    asked = [f"question {i}?" for i in range(40)]
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in asked))
    both = tmp_path / "both.jsonl"
    r = cli("elastic", "teacher-data", "--prompts", str(prompts), "--from-text", str(corpus), "--headings", "2",
            "--samples", "2", "--model", str(tiny_llama_dir), "--out", str(both), "--max-new-tokens", "4",
            "--device", "cpu", "--json")  # fmt: skip
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    train_part = split_prompts(asked, "train")
    assert summary["prompts"] == len(train_part) + 2 and summary["split"]["part"] == "train"
    used = [json.loads(line)["prompt"] for line in both.read_text().splitlines()]
    assert not set(used) & set(split_prompts(asked, "dev"))  # the dev tenth is never a training prompt
    assert max(used.count(p) for p in used) == 2  # two sampled replies per prompt
    r = cli("elastic", "teacher-data", "--out", str(tmp_path / "x.jsonl"))
    assert r.code == 2 and "prompt source" in r.err
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
    plain = _recipe(tiny_plan, calib_text, "data.chat_loss=all")  # as every recipe trained before chat_loss
    data = plain.to_dict()
    del data["data"]["chat_loss"]  # left out of every identity at all, what runs before it did
    for key in ("steps", "checkpoint_every", "log_every"):
        data["train"].pop(key)
    data.pop("eval")
    del data["data"]["chat"], data["data"]["chat_fraction"], data["train"]["anchor"], data["smol"]["shared_rank"]
    del data["trim"], data["train"]["init"]  # added since, and left out of every identity while unset
    # training state v1 hashed the recipe without the chat mix, the anchor and the shared expert's own rank
    # at their neutral values: a v1 checkpoint of this recipe is recognised (and upgraded to its v2 identity)
    assert recipe_identity_v1(plain.to_dict()) == hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    identity = recipe_identity(plain.to_dict())
    assert recipe_identity(_recipe(tiny_plan, calib_text, "train.anchor=1.0").to_dict()) != identity
    assert recipe_identity(_recipe(tiny_plan, calib_text).to_dict()) != identity  # replies: another loss
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


def test_prompt_files_are_jsonl_or_lines_and_bad_lines_are_named(tmp_path: Path) -> None:
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "first?", "source": "a"}\n\n{"instruction": "second"}\n')
    assert read_prompts(jsonl) == ["first?", "second"]
    lines = tmp_path / "p.txt"
    lines.write_text("one\n\ntwo\n")
    assert read_prompts(lines) == ["one", "two"]
    jsonl.write_text('{"prompt": "ok"}\n{"prompt": \n')
    with pytest.raises(UsageError, match=r"p.jsonl:2 is not valid JSON"):
        read_prompts(jsonl)
    jsonl.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    with pytest.raises(UsageError, match=r"p.jsonl:2 has no prompt"):
        read_prompts(jsonl)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UsageError, match="holds no prompts"):
        read_prompts(tmp_path / "empty.jsonl")
    with pytest.raises(UsageError, match="not found"):
        read_prompts(tmp_path / "missing.jsonl")


def test_the_dev_split_is_a_stable_tenth_apart_from_training() -> None:
    prompts = [f"prompt number {i}" for i in range(2000)]
    train, dev = split_prompts(prompts, "train"), split_prompts(prompts, "dev")
    assert not set(train) & set(dev) and len(train) + len(dev) == 2000
    assert 150 <= len(dev) <= 250  # a tenth, by hash
    assert dev == [p for p in prompts if is_dev_prompt(p)] and split_prompts(prompts, "all") == prompts
    # the split is a property of the prompt, not of the file it is in
    assert split_prompts(list(reversed(prompts)), "dev") == list(reversed(dev))


def test_a_reply_cut_at_the_token_limit_is_trained_without_an_end_of_turn(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    ended, cut = chat_ids(tok, "q", "an answer"), chat_ids(tok, "q", "an answer", finished=False)
    assert len(cut) < len(ended) and ended[: len(cut)] == cut  # the same tokens, less the end of turn
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"prompt": "q", "response": "an answer", "finished": False}) + "\n")
    assert token_stream(str(data), tok, "jsonl").tolist() == cut


def test_an_interrupted_run_continues_from_its_journal_with_the_same_replies(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    from edgekit.elastic.teacher_data import TeacherSettings, generate_replies

    prompts = [f"question {i}?" for i in range(6)]
    settings = TeacherSettings(max_new_tokens=5, batch_size=2, seed=3)
    journal = tmp_path / "chat.jsonl.journal"
    whole = generate_replies(tiny_llama_dir, prompts, settings, journal=journal)
    lines = journal.read_text().splitlines()
    assert len(lines) == 4  # the run's key, then one line per batch
    # killed while writing the third batch: the torn line is dropped, the first two are kept
    journal.write_text("\n".join(lines[:3]) + "\n" + lines[3][:10])
    calls = []
    resumed = generate_replies(tiny_llama_dir, prompts, settings, on_batch=calls.append, journal=journal)
    assert resumed == whole and len(calls) == 3
    # a rerun with fewer prompts keeps the batches they share and makes only the one that changed
    before = len(journal.read_text().splitlines())
    generate_replies(tiny_llama_dir, prompts[:3], settings, journal=journal)
    added = [json.loads(line) for line in journal.read_text().splitlines()[before:]]
    assert [(e["batch"], e["prompts"]) for e in added] == [(2, prompts[2:3])]
    # another run's journal is not reused
    other = generate_replies(tiny_llama_dir, prompts, TeacherSettings(max_new_tokens=5, batch_size=2, seed=4),
                             journal=journal)  # fmt: skip
    assert other != whole


SPHINX = """\
:mod:`shutil` --- High-level file operations
=============================================

.. module:: shutil

.. function:: copyfile(src, dst)

   Copy a file.

.. function:: _private(x)

.. class:: Error

.. exception:: SameFileError

.. method:: Popen.wait(timeout=None)

.. currentmodule:: os.path

.. function:: join(path, *paths)

.. function:: copyfile(src, dst)
"""


def test_api_questions_name_what_a_sphinx_corpus_documents(tmp_path: Path) -> None:
    assert api_names(SPHINX) == [("module", "shutil"), ("function", "shutil.copyfile"), ("class", "shutil.Error"),
                                 ("exception", "shutil.SameFileError"), ("method", "Popen.wait"),
                                 ("function", "os.path.join"), ("function", "os.path.copyfile")]  # fmt: skip
    corpus = tmp_path / "docs.rst"
    corpus.write_text(SPHINX)
    asked = api_prompts(corpus, 100, seed=1)
    assert len(asked) == 7 and asked == api_prompts(corpus, 100, seed=1) and asked != api_prompts(corpus, 100, seed=2)
    raised = {"When does Python raise shutil.SameFileError?", "How do I handle shutil.SameFileError in Python?"}
    assert len(raised & set(asked)) == 1
    assert len(api_prompts(corpus, 3)) == 3 and not any("_private" in q for q in asked)
    (tmp_path / "plain.txt").write_text("no directives here\n")
    with pytest.raises(UsageError, match="documents no functions"):
        api_prompts(tmp_path / "plain.txt", 5)


def test_the_replies_mask_covers_the_reply_and_its_end_of_turn_only(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    for finished in (True, False):
        ids, mask = chat_ids_and_mask(tok, "what is a list?", "an ordered sequence", finished)
        head = tok.apply_chat_template([{"role": "user", "content": "what is a list?"}], tokenize=True,
                                       add_generation_prompt=True, return_dict=True)["input_ids"]  # fmt: skip
        assert ids == chat_ids(tok, "what is a list?", "an ordered sequence", finished) and len(mask) == len(ids)
        assert mask == [0] * len(head) + [1] * (len(ids) - len(head))
        assert "ordered sequence" in tok.decode([t for t, m in zip(ids, mask, strict=True) if m])
        assert "what is a list" not in tok.decode([t for t, m in zip(ids, mask, strict=True) if m])
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "response": "an answer"}) + "\n" for i in range(3)))
    stream, mask = token_stream_and_mask(str(data), tok, "jsonl")
    assert stream.shape == mask.shape and 0 < int(mask.sum()) < mask.numel()
    assert token_stream_and_mask(str(tmp_path / "chat.jsonl"), tok, "text")[1] is None  # plain text: all targets


def test_masked_batches_mark_the_targets_of_each_source() -> None:
    main = Sequences(torch.arange(0, 400), 10, 4, 0, "main")  # plain text: every target counts
    chat_mask = torch.arange(70) % 10 >= 6  # the last 4 tokens of each chat row are reply
    extra = Sequences(torch.arange(1000, 1070), 10, 1, 1, "chat", chat_mask)
    mixed = main.mixed(extra, 0.5)
    rows = mixed.rows(3)
    mask = mixed.target_mask(rows)
    assert mask.shape == (4, 9)
    for row, m in zip(rows.tolist(), mask, strict=True):
        assert m.tolist() == ([True] * 9 if row < len(main) else [False] * 5 + [True] * 4)
    assert main.target_mask(main.rows(0)) is None


def test_the_replies_loss_ignores_the_prompt_tokens() -> None:
    from edgekit.elastic.train import masked_mean, soft_ce, soft_ce_topk

    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 11, requires_grad=True), torch.randn(2, 5, 11)
    weight = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.float)
    loss = soft_ce(student, teacher, 2.0, weight)
    kept = weight.bool()
    assert loss.item() == pytest.approx(soft_ce(student[kept][None], teacher[kept][None], 2.0).item(), rel=1e-6)
    loss.backward()
    assert student.grad[0, :2].abs().max().item() == 0 and student.grad[0, 2:].abs().max().item() > 0
    top = torch.topk(teacher, 4, dim=-1)
    assert soft_ce_topk(student, top.values, top.indices, 1.0, weight).item() == pytest.approx(
        soft_ce_topk(student[kept][None], top.values[kept][None], top.indices[kept][None], 1.0).item(), rel=1e-6
    )
    assert masked_mean(torch.arange(4.0), None).item() == 1.5
    assert masked_mean(torch.arange(4.0), torch.tensor([0.0, 0.0, 0.0, 1.0])).item() == 3.0
