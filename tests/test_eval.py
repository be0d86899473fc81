from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import tiny
import torch
import torch.nn.functional as F
from tiny import PIQA_ROWS, write_piqa

from edgekit.errors import IntegrityError, UsageError
from edgekit.evaluation.data import MCItem, load_piqa, read_text
from edgekit.evaluation.multiple_choice import multiple_choice
from edgekit.evaluation.perplexity import perplexity

N_TOKENS = 300  # the text budget for perplexity tests: several windows, milliseconds per forward


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The tiny model's matrices are 64 wide: thread hand-offs cost more than the math, and on a busy
    # 2-core host a second thread waiting for a core turns milliseconds into seconds.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def loaded(tiny_llama_dir: Path):
    from edgekit.models.reference import load

    model, tokenizer, _ = load(str(tiny_llama_dir))
    return model, tokenizer


def _ids(tokenizer, text: str = tiny.CORPUS, n: int = N_TOKENS) -> torch.Tensor:
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"][:n])


# ---------------------------------------------------------------------------------------- perplexity


def test_perplexity_without_overlap_is_mean_cross_entropy_over_chunks(loaded):
    model, tokenizer = loaded
    ids = _ids(tokenizer)
    nll, count = 0.0, 0
    with torch.no_grad():
        for chunk in ids.split(64):  # 4 chunks of 64 and one of 44
            logits = model(chunk[None]).logits[0]
            nll += F.cross_entropy(logits[:-1], chunk[1:], reduction="sum").item()
            count += len(chunk) - 1
    result = perplexity(model, tokenizer, tiny.CORPUS, max_length=64, stride=64, max_tokens=N_TOKENS, progress=False)
    assert result.tokens == N_TOKENS and result.windows == 5
    assert result.tokens_scored == count == N_TOKENS - 5  # each window's first token has no context
    assert result.ppl == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert result.nll == pytest.approx(nll / count, rel=1e-5)
    assert result.max_length == 64 and result.stride == 64 and result.seconds > 0


def test_overlapping_windows_follow_the_hf_recipe_and_score_each_token_once(loaded):
    model, tokenizer = loaded
    ids = _ids(tokenizer)
    # The recipe's loop, written out independently: labels -100 on the overlap, the model's shifted loss.
    nll, count, prev_end = 0.0, 0, 0
    with torch.no_grad():
        for begin in range(0, len(ids), 16):
            end = min(begin + 64, len(ids))
            window = ids[begin:end]
            labels = window.clone()
            labels[: -(end - prev_end)] = -100
            logits = model(window[None]).logits[0]
            nll += F.cross_entropy(logits[:-1], labels[1:], ignore_index=-100, reduction="sum").item()
            count += int((labels[1:] != -100).sum())
            prev_end = end
            if end == len(ids):
                break
    result = perplexity(model, tokenizer, tiny.CORPUS, max_length=64, stride=16, max_tokens=N_TOKENS, progress=False)
    assert result.tokens_scored == count == N_TOKENS - 1
    assert result.windows == math.ceil((N_TOKENS - 64) / 16) + 1
    assert result.ppl == pytest.approx(math.exp(nll / count), rel=1e-5)
    no_overlap = perplexity(
        model, tokenizer, tiny.CORPUS, max_length=64, stride=64, max_tokens=N_TOKENS, progress=False
    )
    assert result.ppl != pytest.approx(no_overlap.ppl, rel=1e-4)


def test_batching_does_not_change_the_result(loaded):
    model, tokenizer = loaded
    kwargs = dict(max_length=48, stride=20, max_tokens=N_TOKENS, progress=False)
    one = perplexity(model, tokenizer, tiny.CORPUS, batch_size=1, **kwargs)
    for size in (3, 16):
        batched = perplexity(model, tokenizer, tiny.CORPUS, batch_size=size, **kwargs)
        assert batched.tokens_scored == one.tokens_scored == N_TOKENS - 1
        assert batched.windows == one.windows
        assert batched.ppl == pytest.approx(one.ppl, rel=1e-5)


def test_a_tokenizer_that_adds_bos_gets_it_prepended_once(loaded, tiny_llama_dir):
    from tokenizers import processors
    from transformers import AutoTokenizer

    model, plain = loaded
    bos_tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    bos = bos_tok.bos_token_id
    bos_tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos_tok.bos_token} $A", special_tokens=[(bos_tok.bos_token, bos)]
    )
    assert bos_tok("Paris")["input_ids"][0] == bos  # precondition: this tokenizer's config adds BOS
    text = tiny.CORPUS[:600]
    n_text = len(plain(text, add_special_tokens=False)["input_ids"])
    with_bos = perplexity(model, bos_tok, text, max_length=64, stride=32, progress=False)
    without = perplexity(model, plain, text, max_length=64, stride=32, progress=False)
    assert with_bos.tokens == n_text + 1 and with_bos.tokens_scored == n_text  # every text token, BOS as context
    assert without.tokens == n_text and without.tokens_scored == n_text - 1


def test_result_serialises(loaded):
    model, tokenizer = loaded
    data = perplexity(model, tokenizer, tiny.CORPUS, max_length=32, stride=32, max_tokens=64, progress=False).to_dict()
    assert set(data) >= {"ppl", "nll", "tokens_scored", "windows", "max_length", "stride", "seconds"}
    json.dumps(data)


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("", {}, "empty"),
        ("   \n", {}, "empty"),
        ("The capital of France is Paris.", {"max_length": 64, "stride": 32}, "fewer than one window of 64"),
        (tiny.CORPUS, {"max_length": 64, "stride": 32, "max_tokens": 40}, "max_tokens 40"),
        (tiny.CORPUS, {"max_length": 32, "stride": 33}, "stride must be between 1 and max_length"),
        (tiny.CORPUS, {"max_length": 32, "stride": 0}, "stride must be between 1 and max_length"),
        (tiny.CORPUS, {"max_length": 1024, "stride": 512}, "longer than the model's context of 512"),
    ],
)
def test_perplexity_refuses_bad_input(loaded, text, kwargs, message):
    model, tokenizer = loaded
    with pytest.raises(UsageError, match=message) as info:
        perplexity(model, tokenizer, text, progress=False, **kwargs)
    assert "\n" not in str(info.value)


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


# ----------------------------------------------------------------------------------- multiple choice

ITEMS = [
    MCItem("Question: What is the capital of France?\nAnswer:", ["Paris.", "a Jetson Orin board", "Python"], 0),
    MCItem("Question: Where do small language models run?\nAnswer:", ["on edge devices", "in the sea"], 1),
    MCItem("Question: What has unified memory?\nAnswer:", ["a desktop GPU", "A Jetson Orin board"], 1),
]


def _loglikelihood(model, tokenizer, context: str, choice: str) -> float:
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    whole = tokenizer(context + " " + choice, add_special_tokens=False)["input_ids"]
    assert whole[: len(ctx)] == ctx  # this tokenizer never merges across ":" and the space
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
    return sum(logprobs[t - 1, whole[t]].item() for t in range(len(ctx), len(whole)))


def test_multiple_choice_matches_independent_loglikelihoods(loaded):
    model, tokenizer = loaded
    expected = [[_loglikelihood(model, tokenizer, it.context, c) for c in it.choices] for it in ITEMS]
    preds = [max(range(len(s)), key=s.__getitem__) for s in expected]
    preds_norm = [
        max(range(len(s)), key=lambda k, s=s, it=it: s[k] / len(it.choices[k].encode()))
        for s, it in zip(expected, ITEMS, strict=True)
    ]
    result = multiple_choice(model, tokenizer, ITEMS, progress=False, batch_size=4)  # batches mix items
    for got, want in zip(result.loglikelihoods, expected, strict=True):
        assert got == pytest.approx(want, rel=1e-4)
    assert result.n == 3
    assert result.acc == pytest.approx(sum(p == it.label for p, it in zip(preds, ITEMS, strict=True)) / 3)
    assert result.acc_norm == pytest.approx(sum(p == it.label for p, it in zip(preds_norm, ITEMS, strict=True)) / 3)
    assert result.stderr == pytest.approx(math.sqrt(result.acc * (1 - result.acc) / 2))
    one_by_one = multiple_choice(model, tokenizer, ITEMS, progress=False, batch_size=1)
    assert one_by_one.acc == result.acc and one_by_one.acc_norm == result.acc_norm
    data = result.to_dict()
    assert set(data) >= {"acc", "acc_norm", "n", "stderr", "seconds"} and "loglikelihoods" not in data


class UniformLM:
    """Every token equally likely: a choice's log-likelihood is exactly -(its token count) * log(vocab)."""

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*input_ids.shape, self.vocab)


def test_acc_norm_divides_by_utf8_bytes_not_characters(loaded):
    _, tokenizer = loaded
    choices = ["éé", "zq"]  # " éé": 5 tokens, 4 bytes, 2 chars; " zq": 3 tokens, 2 bytes
    n_tokens = [len(tokenizer(" " + c, add_special_tokens=False)["input_ids"]) for c in choices]
    assert n_tokens == [5, 3]  # preconditions that make bytes and characters disagree
    assert 5 / 4 < 3 / 2 < 5 / 2
    result = multiple_choice(UniformLM(len(tokenizer)), tokenizer, [MCItem("Answer:", choices, 0)], progress=False)
    assert result.loglikelihoods[0] == pytest.approx([-5 * math.log(len(tokenizer)), -3 * math.log(len(tokenizer))])
    assert result.acc == 0.0  # fewer tokens wins unnormalised
    assert result.acc_norm == 1.0  # per byte "éé" wins; per character it would lose
    assert result.stderr == 0.0  # one item: no spread to estimate


def test_multiple_choice_refuses_no_items(loaded):
    model, tokenizer = loaded
    with pytest.raises(UsageError, match="no multiple-choice items"):
        multiple_choice(model, tokenizer, [], progress=False)


# ------------------------------------------------------------------------------------------- loading


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


# ----------------------------------------------------------------------------------------------- CLI


def _app():
    import typer

    from edgekit.cli.evaluation import eval_cmd

    app = typer.Typer()
    app.command()(eval_cmd)
    return app


def test_eval_command_prints_json(tmp_path, tiny_llama_dir):
    from typer.testing import CliRunner

    text = tmp_path / "corpus.txt"
    text.write_text(tiny.CORPUS)
    mc = write_piqa(tmp_path, PIQA_ROWS, [0, 1, 0])
    args = ["--model", str(tiny_llama_dir), "--text", str(text), "--mc", str(mc), "--max-length", "32"]
    args += ["--stride", "16", "--text-tokens", "100", "--limit", "2", "--json"]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == tiny_llama_dir.name
    ppl = data["perplexity"]
    assert ppl["data"] == str(text) and ppl["max_length"] == 32 and ppl["stride"] == 16
    assert ppl["tokens"] == 100 and ppl["tokens_scored"] == 99 and ppl["ppl"] > 1
    choice = data["multiple_choice"]
    assert choice["n"] == 2 and 0 <= choice["acc"] <= 1 and 0 <= choice["acc_norm"] <= 1 and "stderr" in choice

    table = CliRunner().invoke(_app(), args[:-1])
    assert table.exit_code == 0, table.output
    assert "max_length 32 moving by stride 16" in table.stdout and "acc_norm" in table.stdout


def test_eval_command_needs_a_task_and_checks_data_before_loading(tmp_path):
    from typer.testing import CliRunner

    result = CliRunner().invoke(_app(), ["--model", str(tmp_path / "no-model")])
    assert isinstance(result.exception, UsageError) and "--text" in str(result.exception)
    # The data is read first: a missing file is reported, not the missing model.
    result = CliRunner().invoke(_app(), ["--model", str(tmp_path / "no-model"), "--text", str(tmp_path / "x.txt")])
    assert isinstance(result.exception, UsageError) and "text file not found" in str(result.exception)
