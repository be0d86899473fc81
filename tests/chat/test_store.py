"""The conversation store (edgekit.chat.store.conversations): round trip, ordering, and damaged files."""

from __future__ import annotations

import time

from edgekit.chat.store.conversations import Message, Store


def test_store_round_trip_and_damage(store: Store) -> None:
    a = store.create("first", system="sys")
    store.append(a, Message("user", "hi ✓"))
    store.append(a, Message("assistant", "hello", stats={"new_tokens": 2}))
    time.sleep(0.01)
    b = store.create("second")
    store.rename(a, "renamed")
    loaded = store.load(a.id)
    assert loaded.title == "renamed" and loaded.system == "sys"
    assert [m.content for m in loaded.messages] == ["hi ✓", "hello"] and loaded.messages[1].stats == {"new_tokens": 2}
    assert [c.id for c in store.list()] == [a.id, b.id]  # a was changed last
    with open(store.root / f"{a.id}.jsonl", "a") as fh:
        fh.write('{"type": "message", "role": "user", "cont')  # a line cut short by a crash
    assert len(store.load(a.id).messages) == 2
    (store.root / "junk.jsonl").write_text("not json\n")
    store.delete(b)
    assert [c.id for c in store.list()] == [a.id]


def test_an_append_after_a_line_cut_by_a_crash_loses_nothing(store: Store) -> None:
    conv = store.create("crashed")
    for i in range(42):
        store.append(conv, Message("user" if i % 2 == 0 else "assistant", f"message {i}"))
    with open(store.root / f"{conv.id}.jsonl", "a") as fh:
        fh.write('{"type": "message", "role": "user", "cont')  # the process died mid-write
    reopened = store.load(conv.id)
    assert len(reopened.messages) == 42
    store.append(reopened, Message("user", "after the crash"))
    store.append(reopened, Message("assistant", "still here"))
    again = store.load(conv.id)
    assert len(again.messages) == 44 and [m.content for m in again.messages[-2:]] == ["after the crash", "still here"]
