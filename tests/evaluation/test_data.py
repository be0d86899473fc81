"""Evaluation data (edgekit.evaluation.data): reading text files and PIQA-style multiple-choice files."""

from __future__ import annotations

import json

import pytest
from tiny import PIQA_ROWS, write_piqa

from edgekit.errors import IntegrityError, UsageError
from edgekit.evaluation.data import MCItem, load_piqa, read_text


def test_read_text(tmp_path):
    (tmp_path / "a.txt").write_text("hello world\n")
    assert read_text(tmp_path / "a.txt") == "hello world\n"
    with pytest.raises(UsageError, match="not found"):
        read_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n\n")
    with pytest.raises(UsageError, match="is empty"):
        read_text(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(UsageError, match="not UTF-8"):
        read_text(tmp_path / "bin.txt")


def test_load_piqa_reads_the_labels_file_beside_the_jsonl(tmp_path):
    path = write_piqa(tmp_path, PIQA_ROWS, [0, 1, 0])
    items = load_piqa(path)
    assert [it.label for it in items] == [0, 1, 0]
    assert items[0] == MCItem("Question: Open a jar\nAnswer:", ["Twist the lid.", "Hit it with a fish."], 0)
    assert len(load_piqa(path, limit=2)) == 2
    other = tmp_path / "other.lst"
    other.write_text("1\n1\n1\n")
    assert [it.label for it in load_piqa(path, labels=other)] == [1, 1, 1]


def test_load_piqa_accepts_labels_inside_the_lines_and_the_generic_layout(tmp_path):
    path = write_piqa(tmp_path / "inline", [{**r, "label": i % 2} for i, r in enumerate(PIQA_ROWS)], None)
    assert [it.label for it in load_piqa(path)] == [0, 1, 0]
    generic = tmp_path / "generic.jsonl"
    generic.write_text(
        json.dumps({"context": "The sky is", "choices": ["blue", "green", "loud"], "label": 0})
        + "\n\n"  # blank lines are skipped
        + json.dumps({"query": "Two plus two is", "choices": ["four", "five"], "label": 0})
        + "\n"
    )
    items = load_piqa(generic)
    assert items == [MCItem("The sky is", ["blue", "green", "loud"], 0), MCItem("Two plus two is", ["four", "five"], 0)]


@pytest.mark.parametrize(
    ("content", "labels", "error", "message"),
    [
        ('{"goal": "a", "sol1": "b", "sol2": "c"}\n{"goal": oops}\n', None, UsageError, r"dev\.jsonl:2 is not valid"),
        ("[1, 2]\n", None, UsageError, r"dev\.jsonl:1 is not a JSON object"),
        ('{"goal": "a", "sol1": "b", "sol2": "c"}\n' * 3, [0, 1], IntegrityError, "has 2 labels but .* has 3 items"),
        ('{"goal": "a", "sol1": "b", "sol2": "c"}\n', [2], IntegrityError, "label 2 is not the index"),
        ('{"goal": "a", "sol1": "b", "sol2": "c"}\n', None, UsageError, "no label"),
        ('{"goal": "a", "sol1": "b"}\n', [0], UsageError, "not both sol1 and sol2"),
        ('{"question": "a", "answers": ["b"]}\n', [0], UsageError, "neither goal/sol1/sol2"),
        ('{"context": "a", "choices": ["b"], "label": 0}\n', None, UsageError, "at least two strings"),
        ("\n\n", None, UsageError, "has no items"),
    ],
)
def test_load_piqa_refuses_bad_files(tmp_path, content, labels, error, message):
    path = tmp_path / "dev.jsonl"
    path.write_text(content)
    if labels is not None:
        (tmp_path / "dev-labels.lst").write_text("".join(f"{x}\n" for x in labels))
    with pytest.raises(error, match=message) as info:
        load_piqa(path)
    assert "\n" not in str(info.value)


def test_load_piqa_refuses_missing_files(tmp_path):
    with pytest.raises(UsageError, match="multiple-choice file not found"):
        load_piqa(tmp_path / "nope.jsonl")
    path = write_piqa(tmp_path, PIQA_ROWS, None)
    with pytest.raises(UsageError, match="labels file not found"):
        load_piqa(path, labels=tmp_path / "nope.lst")
    (tmp_path / "bad.lst").write_text("0\nyes\n1\n")
    with pytest.raises(UsageError, match=r"bad\.lst:2 is not an integer label"):
        load_piqa(path, labels=tmp_path / "bad.lst")
