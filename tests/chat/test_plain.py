"""The plain chat REPL (edgekit.chat.plain): turns, slash commands, one-shot JSON."""

from __future__ import annotations

import io
import json

from chat_helpers import make_engine

from edgekit.chat.store.conversations import Store
from edgekit.engines import Sampling


def test_plain_repl_and_one_shot(torch_session, tokenizer, store: Store) -> None:
    from edgekit.chat.plain import run_plain

    engine = make_engine(torch_session, tokenizer)
    stdin = io.StringIO("Hello\n\n/system Be terse.\nAnd again\n/quit\n")
    out, err = io.StringIO(), io.StringIO()
    assert run_plain(engine, Sampling(max_new_tokens=6), store=store, stdin=stdin, stdout=out, stderr=err) == 0
    assert "empty message ignored" in err.getvalue() and "system prompt: Be terse." in err.getvalue()
    assert err.getvalue().count("ms/token") == 2 and "d4-w100 torch fp32 cpu" in err.getvalue()
    conv = store.list()[0]
    assert [m.role for m in conv.messages] == ["user", "assistant", "user", "assistant"] and conv.system == "Be terse."
    out = io.StringIO()
    run_plain(engine, Sampling(max_new_tokens=5), prompt="One turn", json_out=True, store=store, stdout=out)
    data = json.loads(out.getvalue())
    assert data["shape"] == "d4-w100" and data["stats"]["new_tokens"] >= 1 and isinstance(data["reply"], str)


def test_a_line_that_is_not_utf8_is_refused_and_the_session_goes_on(torch_session, tokenizer, store: Store) -> None:
    """Bytes that are not UTF-8 reach Python as lone surrogates (surrogateescape): the line is refused in one line,
    nothing of it is stored, and the next line is answered."""
    from edgekit.chat.plain import run_plain

    engine = make_engine(torch_session, tokenizer)
    stdin = io.StringIO("caf\udce9\nHello\n")
    out, err = io.StringIO(), io.StringIO()
    assert run_plain(engine, Sampling(max_new_tokens=4), store=store, stdin=stdin, stdout=out, stderr=err) == 0
    assert "not UTF-8 text (byte 0xe9 at character 3) (ignored)" in err.getvalue()
    assert err.getvalue().count("ms/token") == 1
    assert [m.content for m in store.list()[0].messages][0] == "Hello"


def test_a_prompt_argument_that_is_not_utf8_is_one_line(cli) -> None:
    for argv in (["generate", "caf\udce9", "--model", "nowhere"], ["chat", "--model", "x", "--prompt", "\udcff"]):
        r = cli(*argv)
        assert r.code == 2 and "is not UTF-8 text" in r.err and len(r.err.strip().splitlines()) == 1


def test_a_message_too_long_for_the_context_is_refused_and_leaves_no_conversation(
    torch_session, tokenizer, store: Store
) -> None:
    from edgekit.chat.plain import run_plain
    from edgekit.errors import UsageError

    engine = make_engine(torch_session, tokenizer)
    long = "word " * (engine.info.context_length * 2)
    with __import__("pytest").raises(UsageError, match="more than the context window"):
        run_plain(engine, Sampling(max_new_tokens=4), prompt=long, store=store, stdout=io.StringIO())
    assert store.list() == []  # the failed one-shot turn wrote nothing
    stdin = io.StringIO(f"{long}\nHello\n")
    out, err = io.StringIO(), io.StringIO()
    assert run_plain(engine, Sampling(max_new_tokens=4), store=store, stdin=stdin, stdout=out, stderr=err) == 0
    assert "(not sent)" in err.getvalue() and err.getvalue().count("ms/token") == 1
    (conv,) = store.list()
    assert [m.content for m in conv.messages][0] == "Hello"
