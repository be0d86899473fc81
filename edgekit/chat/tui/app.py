"""`edgekit chat`: the Textual app. Conversations on the left, the chat in the middle, the subnet's
figures against its budget on the right. Generation runs in a worker thread that posts each piece
to the UI (non-blocking), so the UI never waits on the model and the model never waits on the UI.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from textual import events, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.geometry import Size
from textual.message import Message as TMessage
from textual.widgets import Footer, Header, Input, Static

from edgekit.chat.engine import ChatEngine, Stats
from edgekit.chat.store.conversations import Conversation, Message, Store
from edgekit.chat.tui.screens.dialogs import (
    ConfirmDialog,
    HelpScreen,
    Settings,
    SettingsDialog,
    ShapeDialog,
    TextDialog,
)
from edgekit.chat.tui.widgets.messages import MessageLog, StreamingBlock
from edgekit.chat.tui.widgets.sidebar import Sidebar
from edgekit.chat.tui.widgets.stats import StatsPanel
from edgekit.engines import Sampling
from edgekit.errors import EdgekitError

MIN_WIDTH, MIN_HEIGHT = 80, 20
# Redraws per second while a reply streams. Every redraw is Python work on the UI thread, which on
# a machine with few cores takes CPU from the runtime's own threads (measured in bench/chat_overhead).
SMALL_CPU = (os.cpu_count() or 1) <= 2
UI_HZ = 5 if SMALL_CPU else 20
GIL_SWITCH_S = 0.0002
STATS_HZ = 2 if SMALL_CPU else 4  # the panel's figures (memory is read from the OS each time)


def clean_text(text: str) -> str:
    """What a paste may bring that a tokenizer must not see: lone surrogates, NULs, other controls."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    return "".join(ch for ch in text if ch in "\n\t" or ord(ch) >= 32)


class Streamed(TMessage):
    def __init__(self, text: str, stats: Stats) -> None:
        super().__init__()
        self.text, self.stats = text, stats


class Finished(TMessage):
    def __init__(self, text: str, stats: Stats, error: str | None = None) -> None:
        super().__init__()
        self.text, self.stats, self.error = text, stats, error


class ChatApp(App[None]):
    TITLE = "edgekit chat"
    AUTO_FOCUS = "#prompt"  # the first focusable widget would be the conversation list
    CSS = """
    #main { height: 1fr; }
    #chat { width: 1fr; }
    #prompt { margin: 0 1; }
    #too-small { display: none; width: 100%; height: 100%; content-align: center middle; text-style: bold; }
    Screen.too-small #main { display: none; }
    Screen.too-small #too-small { display: block; }
    """
    BINDINGS = [
        Binding("escape", "stop", "Stop", priority=True),
        Binding("ctrl+n", "new_chat", "New"),
        Binding("ctrl+r", "rename", "Rename"),
        Binding("ctrl+x", "delete", "Delete", priority=True),  # Input would take it as "cut"
        Binding("ctrl+s", "system_prompt", "System"),
        Binding("ctrl+g", "settings", "Settings"),
        Binding("ctrl+l", "shape", "Shape"),
        Binding("ctrl+t", "toggle_dark", "Theme"),
        Binding("f1", "help", "Help"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),  # clean exit, history already saved
    ]

    def __init__(
        self, engine: ChatEngine, sampling: Sampling, system: str | None = None, store: Store | None = None
    ) -> None:
        super().__init__()
        self.engine = engine
        self.settings = Settings(sampling.temperature, sampling.top_p, sampling.max_new_tokens)
        self.default_system = system
        self.store = store or Store()
        self.conv: Conversation | None = None
        self.cancel = threading.Event()
        self.busy = False
        self.reply_block: StreamingBlock | None = None
        self.reply_text = ""
        self.last_stats: Stats | None = None
        self.overflow_shown = False
        self.replies = 0  # finished replies: what tests and benchmarks wait on
        self.stats_shown = 0.0
        info = engine.info
        self.sub_title = f"{info.model} {info.shape} · {info.runtime} {info.precision} {info.device}"

    # ----------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            yield Sidebar(id="sidebar")
            with Vertical(id="chat"):
                yield MessageLog(id="log")
                yield Input(placeholder="Message (Enter to send, F1 for help)", id="prompt")
            yield StatsPanel(self.engine.info, id="stats")
        yield Static(f"terminal too small: edgekit chat needs at least {MIN_WIDTH}x{MIN_HEIGHT}", id="too-small")
        yield Footer()

    def on_mount(self) -> None:
        saved = self.store.list()
        self.open(saved[0] if saved else self.store.create(system=self.default_system, deployment=self._label()))
        self.query_one("#prompt", Input).focus()
        self._check_size()

    def on_resize(self, event: events.Resize) -> None:
        self._check_size(event.size)

    def _check_size(self, size: Size | None = None) -> None:
        size = size or self.size
        small = size.width < MIN_WIDTH or size.height < MIN_HEIGHT
        self.screen.set_class(small, "too-small")

    def _label(self) -> str:
        i = self.engine.info
        return f"{i.model} {i.shape} {i.runtime}"

    @property
    def current(self) -> Conversation:
        """The open conversation (on_mount opens one; should anything come first, it gets a new one)."""
        if self.conv is None:
            self.open(self.store.create(system=self.default_system, deployment=self._label()))
        return self.conv  # type: ignore[return-value]  (open() set it)

    def open(self, conv: Conversation) -> None:
        self.conv = conv
        log = self.query_one(MessageLog)
        log.clear()
        if conv.system:
            log.add("system", f"*system:* {conv.system}")
        for m in conv.messages:
            log.add(m.role, m.content)
        self.refresh_sidebar()

    def refresh_sidebar(self) -> None:
        self.query_one(Sidebar).show(self.store.list(), self.conv.id if self.conv else None)

    def on_sidebar_opened(self, event: Sidebar.Opened) -> None:
        if self.busy:
            self.notify("wait for the reply to finish, or press Esc", severity="warning")
            return
        self.open(self.store.load(event.conv.id))
        self.query_one("#prompt", Input).focus()

    # ----------------------------------------------------------------- chatting

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "prompt":
            return
        text = clean_text(event.value).strip()
        if not text:
            self.notify("type a message first", severity="warning")
            return
        if self.busy:
            self.notify("a reply is still coming: Esc stops it", severity="warning")
            return
        conv = self.current
        event.input.value = ""
        if not conv.messages and conv.title == "New chat":
            self.store.rename(conv, text[:40])
            self.refresh_sidebar()
        self.store.append(conv, Message("user", text))
        log = self.query_one(MessageLog)
        log.add("user", text)
        self.reply_block = log.add_streaming()
        self.reply_text = ""
        self.overflow_shown = False
        self.busy = True
        self.cancel.clear()
        sampling = Sampling(self.settings.temperature, self.settings.top_p, self.settings.max_tokens)
        self.generate(conv.chat_messages(), sampling)

    @work(thread=True, exclusive=True, group="generate")
    def generate(self, messages: list[dict[str, str]], sampling: Sampling) -> None:
        # The UI is refreshed at most UI_HZ times a second, not per token: on a small CPU every
        # Markdown re-render takes cycles from the runtime's own threads.
        text, pending, stats, last = "", "", Stats(), 0.0
        # Each token the worker leaves Python (the runtime computes) and must take the GIL back; by
        # default the UI thread may keep it up to 5 ms, a third of a small model's token. Ask it to
        # hand the GIL over sooner while a reply is being made.
        switch = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_S)
        try:
            for piece in self.engine.reply(messages, sampling, self.cancel):
                text += piece.text
                pending += piece.text
                stats = piece.stats
                now = time.perf_counter()
                if now - last >= 1 / UI_HZ:
                    self.post_message(Streamed(pending, stats))
                    pending, last = "", now
        except EdgekitError as exc:
            self.post_message(Finished(text, stats, str(exc)))
            return
        finally:
            sys.setswitchinterval(switch)
        self.post_message(Finished(text, stats))

    def on_streamed(self, event: Streamed) -> None:
        if event.text and self.reply_block is not None:
            self.reply_text += event.text
            self.reply_block.update(self.reply_text)
            self.query_one(MessageLog).scroll_end(animate=False)
        if event.stats.dropped_turns and not self.overflow_shown:
            self.overflow_shown = True
            n = event.stats.dropped_turns
            msg = f"{n} oldest message{'s' if n > 1 else ''} left out: the conversation outgrew the context window"
            self.query_one(MessageLog).notice(msg)
            self.notify(msg, severity="warning")
        self.last_stats = event.stats
        now = time.perf_counter()
        if now - self.stats_shown >= 1 / STATS_HZ:
            self.stats_shown = now
            self.query_one(StatsPanel).show(event.stats)

    async def on_finished(self, event: Finished) -> None:
        if event.error:
            self.busy = False
            self.replies += 1
            self.notify(event.error, severity="error")
            if self.reply_block is not None:
                await self.reply_block.remove()
            return
        self.reply_text = event.text
        if self.reply_block is not None:  # the finished reply is rendered as Markdown once
            await self.query_one(MessageLog).finish_streaming(self.reply_block, event.text.strip())
        self.busy = False
        self.replies += 1
        text = event.text.strip()
        self.store.append(self.current, Message("assistant", text, stats=event.stats.to_dict()))
        if event.stats.cancelled:
            self.query_one(MessageLog).notice("stopped")
        if event.stats.looped:
            self.query_one(MessageLog).notice("stopped: the reply began repeating itself (--no-stop-loops lets it run)")
        if self.engine.routed_ms:  # an adaptive deployment: the shape that answered, and the running mean
            info = self.engine.info
            self.sub_title = f"{info.model} {info.shape} · {info.runtime} {info.precision} {info.device}"
            self.query_one(StatsPanel).set_info(info)
        self.query_one(StatsPanel).show(event.stats)
        self.reply_block = None

    def action_stop(self) -> None:
        if self.busy:
            self.cancel.set()
        elif len(self.screen_stack) > 1:  # Esc also closes a dialog (the app binding has priority)
            self.screen.dismiss(None)

    # ----------------------------------------------------------------- conversations and settings

    def action_new_chat(self) -> None:
        if self.busy:
            return
        self.open(self.store.create(system=self.default_system, deployment=self._label()))
        self.query_one(StatsPanel).show(None)

    def action_rename(self) -> None:
        conv = self.current

        def done(title: str | None) -> None:
            if title is not None and title.strip():
                self.store.rename(conv, clean_text(title))
                self.refresh_sidebar()

        self.push_screen(TextDialog("Rename conversation", conv.title), done)

    def action_delete(self) -> None:
        if self.busy or self.conv is None or len(self.screen_stack) > 1:
            return
        conv = self.conv

        def done(yes: bool | None) -> None:
            if yes:
                self.store.delete(conv)
                saved = self.store.list()
                self.open(
                    saved[0] if saved else self.store.create(system=self.default_system, deployment=self._label())
                )

        self.push_screen(ConfirmDialog(f"Delete '{conv.title}'?"), done)

    def action_system_prompt(self) -> None:
        conv = self.current

        def done(text: str | None) -> None:
            if text is not None:
                self.store.set_system(conv, clean_text(text))
                self.open(conv)

        self.push_screen(TextDialog("System prompt (empty: the template's default)", conv.system or ""), done)

    def action_settings(self) -> None:
        def done(s: Settings | None) -> None:
            if s is not None:
                self.settings = s
                self.notify(f"temperature {s.temperature}, top-p {s.top_p}, max tokens {s.max_tokens}")

        self.push_screen(SettingsDialog(self.settings), done)

    def action_shape(self) -> None:
        if not self.engine.can_reshape:
            self.notify("changing shape live needs the torch runtime on an elastic checkpoint", severity="warning")
            return
        if self.busy:
            self.notify("wait for the reply to finish, or press Esc", severity="warning")
            return

        def done(shape: str | None) -> None:
            if shape and shape != self.engine.info.shape:
                self.busy = True
                self.reshape(shape)

        self.push_screen(ShapeDialog(self.engine.shapes, self.engine.info.shape, self.engine.accuracy), done)

    @work(thread=True, exclusive=True, group="generate")
    def reshape(self, shape: str) -> None:
        try:
            seconds = self.engine.reshape(shape)
        except EdgekitError as exc:
            self.call_from_thread(self.notify, str(exc), severity="error")
        else:
            self.call_from_thread(self._reshaped, shape, seconds)
        finally:
            self.busy = False

    def _reshaped(self, shape: str, seconds: float) -> None:
        info = self.engine.info
        self.sub_title = f"{info.model} {info.shape} · {info.runtime} {info.precision} {info.device}"
        panel = self.query_one(StatsPanel)
        panel.set_info(info)
        panel.show(None)
        self.query_one(MessageLog).notice(f"now running {shape} (reshaped in {seconds:.2f} s)")

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_toggle_dark(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"
