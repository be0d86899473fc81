"""Chat metrics: how much a shape (or a deployed artifact) still talks like the full instruct model.

The reference is the full model's own greedy replies to held-apart dev prompts (the prompt file's dev part,
never trained on). Three figures, each measured through whatever runs the model:

- **chat_ppl**: the perplexity of the full model's replies (end of turn included) given their prompts.
  The closest cheap measure of "answers like the full model"; needs the runtime's logits.
- **answer_rate**: the share of the model's own greedy replies that say something (a letter or digit), end
  properly (the turn ends within the token limit, or the limit cuts a reply that is not looping) and are not
  a word-for-word copy of their prompt (its system prompt or the question).
  A subnet that has lost the turn-taking answers with an immediate end of turn, or loops.
- **agreement**: on the prompts whose full-model reply is short (a factual answer), the share of that
  reply's key terms (words not in the prompt and not function words) found in the model's reply.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import UsageError
from edgekit.formats import tag

FORMAT = tag("edgekit-chat-reference")

REFERENCE_FILE = "chat-reference.json"  # stored with a plan's or checkpoint's chat predictor
SHORT_REPLY = 48  # a full-model reply at most this long (and ended) is a short answer agreement is measured on
MIN_DISTINCT = 0.5  # a reply cut at the limit with fewer distinct 4-grams than this share is looping
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
FUNCTION_WORDS = """a an the and or but if then so of to in on at by for with from as is are was were be been
    being am do does
    did done have has had having it its it's this that these those there here what which who whom whose when where
    why how i you he she we they me him her us them my your his our their mine yours not no yes can could will
    would shall should may might must also very just about into over under than too more most some any all each
    other such only own same both few many much well one two up down out off again further once because while
    during before after above below between through against s t don't isn't aren't answer question sure
    let's let me following given"""
STOPWORDS = frozenset(FUNCTION_WORDS.split())


@dataclass
class ChatReference:
    """The full model's greedy replies to dev prompts: what every shape's chat metrics compare against."""

    prompts: list[str]
    prompt_ids: list[list[int]]
    replies: list[list[int]]  # reply tokens, its end of turn last when it ended
    finished: list[bool]
    texts: list[str]
    record: dict[str, Any]  # prompts file, sha256, part, count, max_new_tokens, the model's digest

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def read(cls, path: Path) -> ChatReference:
        from edgekit.artifacts import read_format_json
        from edgekit.errors import IntegrityError

        data = read_format_json(path, "edgekit-chat-reference", f"chat reference {path}")
        try:
            return cls.from_dict(data)
        except TypeError as exc:
            raise IntegrityError(f"chat reference {path} does not describe reference replies ({exc})") from None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChatReference:
        return cls(**{k: v for k, v in data.items() if k != "format"})

    def head(self, n: int) -> ChatReference:
        """The first n prompts and their replies."""
        return ChatReference(self.prompts[:n], self.prompt_ids[:n], self.replies[:n], self.finished[:n],
                             self.texts[:n], {**self.record, "prompts": min(n, len(self.prompts))})  # fmt: skip

    @property
    def facts(self) -> list[tuple[int, set[str]]]:
        """(prompt index, key terms) of the short answers."""
        out = []
        for i, (reply, done) in enumerate(zip(self.replies, self.finished, strict=True)):
            if done and len(reply) <= SHORT_REPLY:
                terms = key_terms(self.texts[i], self.prompts[i])
                if terms:
                    out.append((i, terms))
        return out


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def key_terms(reply: str, prompt: str) -> set[str]:
    """The words of a reply that carry its answer: not in the prompt, not function words."""
    asked = set(words(prompt))
    return {w for w in words(reply) if w not in asked and w not in STOPWORDS and (len(w) > 2 or w.isdigit())}


def looping(tokens: list[int]) -> bool:
    grams = [tuple(tokens[i : i + 4]) for i in range(len(tokens) - 3)]
    return bool(grams) and len(set(grams)) / len(grams) < MIN_DISTINCT


def echoes(text: str, context: str) -> bool:
    """Whether a reply only repeats a stretch of its context word for word (the system prompt, the question)."""
    said = words(text)
    return bool(said) and f" {' '.join(said)} " in f" {' '.join(words(context))} "


def answered(text: str, tokens: list[int], finished: bool, context: str = "") -> bool:
    """A reply that says something and ends properly (its turn ends, or the limit cuts it while not looping),
    and is not a copy of its `context` (the rendered prompt: a shallow shape that lost the turn-taking recites
    its system prompt)."""
    return any(c.isalnum() for c in text) and (finished or not looping(tokens)) and not echoes(text, context)


def agreement(reply: str, terms: set[str]) -> float:
    said = set(words(reply))
    return len(terms & said) / len(terms)


# ------------------------------------------------------------------ generating through a session


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    from edgekit.chat.engine import render_ids

    return render_ids(tokenizer, [{"role": "user", "content": prompt}])


def greedy_reply(session: Any, ids: list[int], max_new_tokens: int) -> tuple[list[int], bool]:
    """(tokens, whether the turn ended): the session's greedy reply, the end-of-turn token kept."""
    from edgekit.engines.base import Sampling

    tokens: list[int] = []
    for token in session.stream(ids, Sampling(temperature=0.0, max_new_tokens=max_new_tokens)):
        tokens.append(token)
        if token in session.eos_ids:
            return tokens, True
    return tokens, False


def build_reference(
    session: Any,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int,
    record: dict[str, Any],
    on_prompt: Callable[[int], None] | None = None,
) -> ChatReference:
    ids = [prompt_ids(tokenizer, p) for p in prompts]
    replies, finished, texts = [], [], []
    for n, (reply, done) in enumerate(own_replies(session, ids, max_new_tokens)):
        replies.append(reply)
        finished.append(done)
        texts.append(tokenizer.decode(reply, skip_special_tokens=True).strip())
        if on_prompt:
            on_prompt(n + 1)
    return ChatReference(prompts, ids, replies, finished, texts, {**record, "max_new_tokens": max_new_tokens})


def dev_prompts(path: Path, limit: int) -> list[str]:
    """The held-apart dev prompts of a prompt file (its dev part; a file with no dev part is used whole)."""
    from edgekit.elastic.teacher_data import read_prompts, split_prompts

    prompts = read_prompts(path)
    dev = split_prompts(prompts, "dev")
    return (dev or list(dict.fromkeys(prompts)))[:limit]


def reference_for(
    model_folder: Path,
    digest: str,
    prompts_file: Path,
    limit: int,
    max_new_tokens: int,
    on_prompt: Callable[[int], None] | None = None,
) -> ChatReference:
    """The full base model's reference replies, made once per (model, prompts, settings) and kept in
    $EDGEKIT_HOME/chat-references: every shape, checkpoint and deployment of that model compares against it."""
    from edgekit.artifacts import sha256_file

    if not prompts_file.is_file():
        raise UsageError(f"chat prompts not found: {prompts_file}")
    sha = sha256_file(prompts_file)
    key = f"{digest}|{sha}|{limit}|{max_new_tokens}"
    record = {"file": prompts_file.name, "sha256": sha, "part": "dev"}
    return cached_reference(model_folder, digest, key, lambda: dev_prompts(prompts_file, limit), record,
                            max_new_tokens, on_prompt)  # fmt: skip


def cached_reference(
    model_folder: Path,
    digest: str,
    key: str,
    prompts: Callable[[], list[str]],
    record: dict[str, Any],
    max_new_tokens: int,
    on_prompt: Callable[[int], None] | None = None,
) -> ChatReference:
    """The base model's greedy replies to `prompts()`, cached in $EDGEKIT_HOME/chat-references under `key`."""
    from edgekit.artifacts import write_json_atomic
    from edgekit.engines.torch_engine import TorchSession
    from edgekit.paths import home

    cache = home() / "chat-references" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
    if cache.is_file():
        try:
            return ChatReference.from_dict(json.loads(cache.read_text()))
        except (TypeError, ValueError):
            pass  # an older or damaged cache entry: make it again
    chosen = prompts()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    model = AutoModelForCausalLM.from_pretrained(model_folder).eval()
    record = {**record, "prompts": len(chosen), "model": digest}
    ref = build_reference(TorchSession(model), tokenizer, chosen, max_new_tokens, record, on_prompt)
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cache, ref.to_dict())
    return ref


# ------------------------------------------------------------------ scoring


def reply_nll(logits_fn: Callable[[list[int]], Any], ref: ChatReference) -> tuple[float, int]:
    """Summed negative log-likelihood of the reference replies (and their token count) under `logits_fn`,
    which maps a token list to its logits at every position ([len, vocab])."""
    import torch

    total, count = 0.0, 0
    for p, reply in zip(ref.prompt_ids, ref.replies, strict=True):
        if not reply:
            continue
        ids = p + reply
        logits = torch.as_tensor(logits_fn(ids)).float()[len(p) - 1 : len(ids) - 1]
        target = torch.tensor(reply)
        total += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
        count += len(reply)
    return total, count


def prompt_losses(logits_fn: Callable[[list[int]], Any], ref: ChatReference) -> list[float | None]:
    """Each reference reply's mean per-token NLL (the log of that prompt's chat_ppl); None for an empty reply."""
    import torch

    out: list[float | None] = []
    for p, reply in zip(ref.prompt_ids, ref.replies, strict=True):
        if not reply:
            out.append(None)
            continue
        ids = p + reply
        logits = torch.as_tensor(logits_fn(ids)).float()[len(p) - 1 : len(ids) - 1]
        out.append(float(torch.nn.functional.cross_entropy(logits, torch.tensor(reply))))
    return out


def chat_ppl(logits_fn: Callable[[list[int]], Any], ref: ChatReference) -> float:
    total, count = reply_nll(logits_fn, ref)
    return math.exp(total / max(count, 1))


BATCH = 16  # torch sessions answer the reference prompts this many at a time


def batched_replies(model: Any, prompts: list[list[int]], eos_ids: set[int], max_new_tokens: int,
                    batch: int = BATCH) -> list[tuple[list[int], bool]]:  # fmt: skip
    """Greedy replies of a transformers model to many prompts, `batch` at a time with left padding: what
    greedy_reply gives one at a time (the padding is masked), several times faster on a CPU."""
    import torch

    pad = min(eos_ids) if eos_ids else 0
    out: list[tuple[list[int], bool]] = []
    for start in range(0, len(prompts), batch):
        group = prompts[start : start + batch]
        width = max(len(p) for p in group)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in group])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in group])
        with torch.inference_mode():
            made = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                                  do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=sorted(eos_ids),
                                  pad_token_id=pad, top_p=None, top_k=None, temperature=None)  # fmt: skip
        for row in made[:, width:].tolist():
            reply: list[int] = []
            for token in row:
                reply.append(token)
                if token in eos_ids:
                    break
            out.append((reply, bool(reply) and reply[-1] in eos_ids))
    return out


def own_replies(session: Any, prompts: list[list[int]], limit: int) -> list[tuple[list[int], bool]]:
    """The session's greedy replies: batched for a transformers model in torch, else one by one through the
    runtime's own generation."""
    model = getattr(session, "model", None)
    if getattr(session, "runtime", None) == "torch" and hasattr(model, "generate"):
        return batched_replies(model, prompts, set(session.eos_ids), limit)
    return [greedy_reply(session, p, limit) for p in prompts]


def generation_scores(session: Any, tokenizer: Any, ref: ChatReference) -> dict[str, Any]:
    """answer_rate and agreement of the session's own greedy replies to the reference prompts."""
    limit = int(ref.record.get("max_new_tokens", 96))
    facts = dict(ref.facts)
    answers, agree = 0, []
    for i, (tokens, done) in enumerate(own_replies(session, ref.prompt_ids, limit)):
        text = tokenizer.decode([t for t in tokens if t not in session.eos_ids], skip_special_tokens=True)
        context = tokenizer.decode(ref.prompt_ids[i], skip_special_tokens=True)
        answers += answered(text, tokens, done, context)
        if i in facts:
            agree.append(agreement(text, facts[i]))
    return {"answer_rate": answers / max(len(ref.prompt_ids), 1),
            "agreement": sum(agree) / len(agree) if agree else None}  # fmt: skip


def chat_scores(
    session: Any, tokenizer: Any, ref: ChatReference, logits_fn: Callable[[list[int]], Any] | None
) -> dict[str, Any]:
    """All three chat metrics (chat_ppl only when the runtime gives logits)."""
    row: dict[str, Any] = {"chat_ppl": chat_ppl(logits_fn, ref) if logits_fn is not None else None}
    row.update(generation_scores(session, tokenizer, ref))
    return row


def describe(ref: ChatReference) -> str:
    r = ref.record
    return (f"{r.get('file')} ({r.get('part')} part), {len(ref.prompts)} prompts, the full model's greedy replies "
            f"of up to {r.get('max_new_tokens')} tokens; agreement on {len(ref.facts)} short answers")  # fmt: skip
