"""The Textual chat app (edgekit.chat.tui) through Pilot, and a snapshot of its main screen."""

from __future__ import annotations

import time
from pathlib import Path

from chat_helpers import SlowSession, make_engine

from edgekit.chat.engine import ChatEngine
from edgekit.chat.store.conversations import Message, Store
from edgekit.engines import Sampling


def test_clean_text_handles_bad_pastes() -> None:
    from edgekit.chat.tui.app import clean_text

    assert clean_text("ok\udcff\x00 done\tx\n") == "ok? done\tx\n"


def _app(engine, store, **kw):
    from edgekit.chat.tui.app import ChatApp

    return ChatApp(engine, Sampling(max_new_tokens=kw.pop("max_new", 8)), store=store, **kw)


async def _send(pilot, text: str) -> None:
    await pilot.click("#prompt")
    for ch in text:
        await pilot.press(ch if ch != " " else "space")
    await pilot.press("enter")


async def _wait_idle(app, pilot, timeout: float = 20.0) -> None:
    start = time.perf_counter()
    while app.busy and time.perf_counter() - start < timeout:
        await pilot.pause(0.05)
    await pilot.pause()


async def test_tui_streams_a_reply_and_updates_stats(torch_session, tokenizer, store: Store) -> None:
    from edgekit.chat.tui.widgets.messages import MessageBlock
    from edgekit.chat.tui.widgets.stats import StatsPanel

    app = _app(make_engine(torch_session, tokenizer), store)
    async with app.run_test(size=(120, 36)) as pilot:
        await _send(pilot, "hi there")
        await _wait_idle(app, pilot)
        blocks = list(app.query(MessageBlock))
        assert [b.has_class("user") for b in blocks] == [True, False]
        panel = app.query_one(StatsPanel)
        assert panel.last is not None and panel.last.new_tokens >= 1
        assert "first token" in str(panel.query_one("#figures").render())
        conv = store.list()[0]
        assert conv.title == "hi there" and [m.role for m in conv.messages] == ["user", "assistant"]
        assert conv.messages[1].content == app.reply_text.strip() and conv.messages[1].stats["new_tokens"] >= 1


async def test_tui_escape_stops_the_reply(torch_session, tokenizer, store: Store) -> None:
    app = _app(make_engine(SlowSession(torch_session, 0.05), tokenizer), store, max_new=200)
    async with app.run_test(size=(120, 36)) as pilot:
        await _send(pilot, "go")
        await pilot.pause(0.4)
        assert app.busy
        await pilot.press("escape")
        await _wait_idle(app, pilot, timeout=5)
        assert not app.busy
        stats = store.list()[0].messages[-1].stats
        assert stats["cancelled"] and stats["new_tokens"] < 200


async def test_tui_reopens_history_and_manages_conversations(torch_session, tokenizer, store: Store) -> None:
    from edgekit.chat.tui.widgets.messages import MessageBlock
    from edgekit.chat.tui.widgets.sidebar import Sidebar

    old = store.create("older chat")
    store.append(old, Message("user", "remember me"))
    store.append(old, Message("assistant", "I do"))
    time.sleep(0.01)
    newest = store.create("newest chat")
    app = _app(make_engine(torch_session, tokenizer), store)
    async with app.run_test(size=(120, 36)) as pilot:
        assert app.conv.id == newest.id and not list(app.query(MessageBlock))
        sidebar = app.query_one(Sidebar)
        sidebar.focus()
        sidebar.index = 1
        await pilot.press("enter")
        await pilot.pause()
        assert app.conv.id == old.id
        assert [b.has_class("user") for b in app.query(MessageBlock)] == [True, False]
        await pilot.press("ctrl+r")
        await pilot.pause()
        for _ in range(20):
            await pilot.press("backspace")
        for ch in "kept":
            await pilot.press(ch)
        await pilot.press("enter")
        await pilot.pause()
        assert store.load(old.id).title == "kept"
        await pilot.press("ctrl+x")
        await pilot.press("y")
        await pilot.pause()
        assert old.id not in [c.id for c in store.list()]
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert len(store.list()) == 2


async def test_tui_context_overflow_shows_a_notice(torch_session, tokenizer, store: Store) -> None:
    from edgekit.chat.tui.widgets.messages import Notice

    conv = store.create("long")
    for i in range(4):
        store.append(conv, Message("user", f"question number {i} " * 6))
        store.append(conv, Message("assistant", "an answer " * 6))
    app = _app(make_engine(torch_session, tokenizer, context_length=120), store, max_new=4)
    async with app.run_test(size=(120, 36)) as pilot:
        await _send(pilot, "and now")
        await _wait_idle(app, pilot)
        notices = [str(n.render()) for n in app.query(Notice)]
        assert any("left out" in n for n in notices)
        assert store.load(conv.id).messages[-1].role == "assistant"


async def test_tui_stops_a_reply_that_loops_and_says_so(torch_session, tokenizer, store: Store) -> None:
    """The tiny random model repeats one token from the start: the reply ends after 24, not at 120."""
    from edgekit.chat.tui.widgets.messages import Notice

    app = _app(make_engine(torch_session, tokenizer), store, max_new=120)
    async with app.run_test(size=(120, 36)) as pilot:
        await _send(pilot, "hi there")
        await _wait_idle(app, pilot)
        assert any("repeating itself" in str(n.render()) for n in app.query(Notice))
        stats = store.list()[0].messages[-1].stats
        assert stats["looped"] and stats["new_tokens"] < 120


async def test_tui_refuses_empty_and_too_small(torch_session, tokenizer, store: Store) -> None:
    app = _app(make_engine(torch_session, tokenizer), store)
    async with app.run_test(size=(60, 15)) as pilot:
        assert app.screen.has_class("too-small")
        await pilot.resize_terminal(120, 36)
        await pilot.pause()
        assert not app.screen.has_class("too-small")
        await _send(pilot, "   ")
        await pilot.pause()
        assert not app.busy and not store.list()[0].messages


def test_main_screen_snapshot(snap_compare, torch_session, tokenizer, store: Store, monkeypatch) -> None:
    """The main screen as a user first sees it (figures that vary run to run are pinned)."""
    import edgekit.chat.tui.widgets.stats as stats_mod

    monkeypatch.setattr(stats_mod, "process_memory_mb", lambda: 123.0)
    conv = store.create("A saved chat")
    store.append(conv, Message("user", "What is an **elastic** checkpoint?"))
    reply = "One set of weights from which a subnet of any shape is cut:\n\n- depth\n- width"
    store.append(conv, Message("assistant", reply))
    app = _app(make_engine(torch_session, tokenizer), store)

    async def settle(pilot) -> None:  # a loaded runner draws late: the snapshot waits for what is scheduled
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 32), run_before=settle)


async def test_tui_shape_selector_reshapes_live(tiny_plan: Path, store: Store) -> None:
    from edgekit.chat.tui.widgets.messages import Notice
    from edgekit.elastic.source import Source

    source = Source.resolve(plan=str(tiny_plan))
    engine = ChatEngine.from_source(source, "d6-w100")
    app = _app(engine, store)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("ctrl+l")
        await pilot.pause()
        await pilot.press("down")
        await pilot.press("enter")
        await _wait_idle(app, pilot)
        assert engine.info.shape == engine.shapes[1] != "d6-w100"
        assert any("now running" in str(n.render()) for n in app.query(Notice))
        assert engine.shapes[1] in app.sub_title
        await _send(pilot, "hello")
        await _wait_idle(app, pilot)
        assert store.list()[0].messages[-1].role == "assistant"


async def test_tui_dialogs_settings_system_prompt_help_theme(torch_session, tokenizer, store: Store) -> None:
    from textual.widgets import Input

    from edgekit.chat.tui.screens.dialogs import HelpScreen, SettingsDialog

    app = _app(make_engine(torch_session, tokenizer), store)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("ctrl+g")
        await pilot.pause()
        assert isinstance(app.screen, SettingsDialog)
        app.screen.query_one("#temperature", Input).value = "-1"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, SettingsDialog)  # refused, with the rule shown
        app.screen.query_one("#temperature", Input).value = "0.7"
        app.screen.query_one("#max_tokens", Input).value = "5"
        await pilot.press("enter")
        await pilot.pause()
        assert app.settings.temperature == 0.7 and app.settings.max_tokens == 5
        await pilot.press("ctrl+s")
        await pilot.pause()
        for ch in "Be brief":
            await pilot.press("space" if ch == " " else ch)
        await pilot.press("enter")
        await pilot.pause()
        assert store.load(app.conv.id).system == "Be brief"
        await _send(pilot, "hi")
        await _wait_idle(app, pilot)
        assert store.load(app.conv.id).messages[-1].stats["new_tokens"] <= 5
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)
        before = app.theme
        await pilot.press("ctrl+t")
        assert app.theme != before
