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
