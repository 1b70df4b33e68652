"""The operator's terminal console (rich): transcript coloured by speaker and emotion, the
customer's state and trend, hint cards by severity, call timer and lag. Fits 80x24.

`ConsoleView` only consumes events, so the demo (in-process) and `callsense console`
(websocket client) render the same way.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from rich.console import Console, Group
from rich.layout import Layout
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from callsense.events import (
    CallEnded,
    ChecklistUpdate,
    Emotion,
    Error,
    Event,
    Hint,
    HintFeedback,
    Metrics,
    Risk,
    SupervisorNote,
    TranscriptFinal,
    TranscriptPartial,
    WorkerChanged,
    parse_event,
)

ROLE_STYLE = {"operator": "cyan", "customer": "magenta", "supervisor": "yellow", "unknown": "white"}
EMOTION_STYLE = {
    "anger": "bold red",
    "fear": "red",
    "sadness": "blue",
    "joy": "green",
    "surprise": "yellow",
    "neutral": "dim",
    "uncertain": "dim italic",
}
SEVERITY_STYLE = {"critical": "bold white on red", "warning": "bold black on yellow", "info": "bold white on blue"}
CUE_STYLE = "bold white on magenta"  # the customer state's cue: not an escalation, shown apart from them


# what each reason means to an operator or supervisor, in plain words (internal ids stay in the events)
REASON_WORDS = {
    "supervisor_request": "asks for a manager",
    "complaint_threat": "threatens a complaint",
    "close_account": "closing the account",
    "repeat_caller": "calling again about this",
    "customer_frustrated": "customer frustrated",
    "repeated_request": "repeating a request",
    "raised_voice": "raised voice",
    "operator_tone": "your tone",
    "operator_interrupting": "talking over the customer",
    "long_silence": "long silence",
    "no_promises": "a promise to check",
    "operator_pace": "your pace",
    "operator_monologue": "a long monologue",
    "talk_ratio": "your share of the talk",
}


def risk_words(level: float, latched: Risk | None) -> tuple[str, str]:
    """Risk as Low / Medium / High with its reason: High while a critical escalation waits, Medium once the
    customer is likely frustrated (the cue's 35%), else Low."""
    if latched is not None:
        return f"High: {REASON_WORDS.get(latched.reason or '', latched.reason or 'escalation')}", "bold white on red"
    if level >= 0.35:
        return "Medium: customer frustrated", "bold magenta"
    return "Low", "green"


def hint_badge(h: Hint) -> tuple[str, str]:
    """The card's label: the customer state's cue reads as what it is, escalations by severity."""
    if h.reason == "customer_frustrated":
        return " CUSTOMER FRUSTRATED ", CUE_STYLE
    return f" {h.severity.upper()} ", SEVERITY_STYLE[h.severity]


# the card to act on now, as on the dashboard: a critical one stays until answered, others go stale after
# STALE_S of the call; a hold card ends when someone speaks again
STALE_S = 45.0
RANK = {"critical": 0, "warning": 1, "info": 2}
SCRIPT_MARK = {
    "done": ("\u2713", "green"),
    "due": ("!", "bold yellow"),
    "missed": ("\u2717", "red"),
    "failed": ("\u2717", "red"),
    "pending": ("\u25cb", "dim"),
}


def mood_words(frustration: float) -> tuple[str, str]:
    """The customer state in plain words (the cue fires from `hints.customer_state.cue_probability`)."""
    if frustration >= 0.35:
        return f"frustrated ({frustration:.0%})", "bold magenta"
    if frustration >= 0.15:
        return f"uneasy ({frustration:.0%})", "yellow"
    return "calm", "green"


@dataclass
class ConsoleView:
    lines: deque[list[Any]] = field(default_factory=lambda: deque(maxlen=200))  # [final, emotion or None]
    partials: dict[str, TranscriptPartial] = field(default_factory=dict)
    hints: deque[Hint] = field(default_factory=lambda: deque(maxlen=50))
    answered: set[str] = field(default_factory=set)  # hints the operator accepted or dismissed
    state: dict[str, Emotion] = field(default_factory=dict)  # role -> last emotion event
    call_id: str = "-"
    t: float = 0.0
    delay: float = 0.0  # the server's measured delay of the latest event (audio arrival -> sent)
    received: float = field(default_factory=time.monotonic)  # when the latest event reached us
    shedding: bool = False
    ended: bool = False
    notice: str = ""
    last_seq: int = 0
    risk: float = 0.0
    frustration: float | None = None  # the customer state: probability the customer is frustrated now
    latched: Risk | None = None  # a critical escalation waiting for acknowledgement
    script: ChecklistUpdate | None = None  # the script checklist as the server judges it now
    note: SupervisorNote | None = None  # the supervisor's latest note to the operator

    @property
    def lag(self) -> float:
        """Never less than what the operator experiences: while a live call sends nothing for longer
        than metrics normally take (1 s of audio), the silence itself is lag."""
        waiting = 0.0 if self.ended else time.monotonic() - self.received - 1.0
        return max(self.delay, waiting)

    def apply(self, ev: Event) -> None:
        self.last_seq = max(self.last_seq, ev.seq)
        self.call_id, self.t = ev.call_id, max(self.t, ev.t)
        self.received = time.monotonic()
        if ev.delay_s is not None:
            self.delay = ev.delay_s
        if isinstance(ev, TranscriptPartial):
            self.partials[ev.speaker] = ev
        elif isinstance(ev, TranscriptFinal):
            self._final(ev)
        elif isinstance(ev, Emotion):
            self.state[ev.role] = ev
            for line in reversed(self.lines):
                if line[0].utterance_id == ev.utterance_id:
                    line[1] = ev
                    break
        elif isinstance(ev, Hint):
            self.hints.appendleft(ev)
        elif isinstance(ev, HintFeedback):
            self.answered.add(ev.hint_id)
        elif isinstance(ev, Metrics):
            self.shedding = ev.shedding
        elif isinstance(ev, Risk):
            self.risk, self.latched, self.frustration = ev.level, ev if ev.latched else None, ev.frustration
        elif isinstance(ev, ChecklistUpdate):
            self.script = ev
        elif isinstance(ev, SupervisorNote):
            self.note = ev
        elif isinstance(ev, CallEnded):
            self.ended = True
        elif isinstance(ev, Error):
            self.notice = f"error: {ev.message}"
        elif isinstance(ev, WorkerChanged):
            self.notice = (
                f"the call moved to worker {ev.worker} at {ev.resumed_from:.0f} s "
                "(the previous one stopped); nothing was lost"
            )

    def _final(self, ev: TranscriptFinal) -> None:
        if ev.revision:  # the turn decoded again with the speaker's others: its line is corrected
            self._revise(ev)
            return
        self.partials.pop(ev.speaker, None)
        # channels finish utterances at different moments: keep the transcript in speaking order
        pos = len(self.lines)
        while pos > 0 and self.lines[pos - 1][0].start > ev.start:
            pos -= 1
        self.lines.insert(pos, [ev, None])

    def _revise(self, ev: TranscriptFinal) -> None:
        for i, line in enumerate(self.lines):
            if line[0].utterance_id == ev.utterance_id:
                if ev.text:
                    line[0] = ev
                else:  # withdrawn: heard only on its own
                    del self.lines[i]
                return
        if ev.text:
            self._final(ev.model_copy(update={"revision": 0}))

    def open_hints(self) -> list[Hint]:
        """Hints still to act on, the most urgent first (the first is the card to act on now)."""

        def hold_over(h: Hint) -> bool:
            return h.reason == "long_silence" and any(line[0].start >= h.t for line in self.lines)

        def live(h: Hint) -> bool:
            fresh = h.severity == "critical" or self.t - h.t <= STALE_S
            return h.hint_id not in self.answered and fresh and not hold_over(h)

        return sorted((h for h in self.hints if live(h)), key=lambda h: (RANK[h.severity], -h.t))

    # -- rendering --

    def render(self, height: int = 24) -> Layout:
        layout = Layout()
        shown = len(self.open_hints()[:2])
        hint_rows = (2 + 4 * shown if shown else 3) + (1 if self.note and shown else 0)
        layout.split_column(
            Layout(self._header(), size=4 if self.script else 3),
            Layout(self._transcript(height - 3 - hint_rows)),
            Layout(self._hints(), size=hint_rows),
        )
        return layout

    def _header(self) -> Panel:
        m, s = divmod(int(self.t), 60)
        lag_style = "green" if self.lag < 1.5 else "yellow" if self.lag < 3 else "red"
        head = Text.assemble(
            ("\u25cf " if not self.ended else "\u25a0 ", "red" if not self.ended else "dim"),
            (f"{m:02d}:{s:02d}", "bold"),
            "  lag ",
            (f"{self.lag:.1f}s", lag_style),
        )
        if self.shedding:
            head.append("  (busy: partials paused)", "yellow")
        words, style = risk_words(self.risk, self.latched)
        head.append("  risk ")
        head.append(words, style)
        if self.frustration is not None:
            words, style = mood_words(self.frustration)
            head.append("  customer: ")
            head.append(words, style)
        if self.script:
            head = Text.assemble(head, "\n", self._script())
        return Panel(head, title=f"callsense \u2022 {self.call_id}", title_align="left", padding=(0, 1))

    def _script(self) -> Text:
        """One line: each item's mark and the start of its title; a due item whole, to say now."""
        assert self.script is not None
        line = Text("script ", "dim")
        for item in self.script.items:
            mark, style = SCRIPT_MARK[item.status]
            line.append(f"{mark} ", style)
            if item.status == "due":
                line.append(f"{item.title} (say it now)  ", "bold yellow")
            else:
                short = item.title if len(item.title) <= 16 else item.title[:15].rstrip() + "\u2026"
                line.append(f"{short}  ", style)
        return line

    def _transcript(self, rows: int) -> Panel:
        body = Text()
        items = list(self.lines)[-max(rows - 2, 1) :]
        for fin, emo in items:
            body.append(f"{fin.role[:4]:<4} ", ROLE_STYLE.get(fin.role, "white"))
            style = EMOTION_STYLE.get(emo.label, "") if emo else ""
            body.append(fin.text, style=style if emo and emo.label in ("anger", "fear", "sadness") else "")
            if emo and emo.label not in ("uncertain", "neutral"):  # only what a reader should notice
                body.append(f" [{emo.label}]", EMOTION_STYLE.get(emo.label, "dim"))
            body.append("\n")
        for p in self.partials.values():
            body.append(f"{p.role[:4]:<4} ", ROLE_STYLE.get(p.role, "white"))
            body.append(p.text + " \u2026\n", "dim italic")
        if self.notice:
            body.append(self.notice + "\n", "red")
        return Panel(body, title="transcript", title_align="left", padding=(0, 1))

    def _hints(self) -> Panel:
        open_hints = self.open_hints()
        cards: list[Any] = [self._note()] if self.note else []
        if not open_hints and not cards:
            return Panel(Text("nothing to act on", style="dim"), title="hints", title_align="left")
        for h in open_hints[:2]:
            grid = Table.grid(padding=(0, 1))
            grid.add_row(Text(*hint_badge(h)), Text(h.title, "bold"))
            for phrase in h.phrases[:1]:
                grid.add_row(Text("say:", "dim"), Text(f"\u201c{phrase}\u201d", "italic"))
            cards.append(grid)
        return Panel(Group(*cards), title="hints", title_align="left", padding=(0, 1))

    def _note(self) -> Text:
        assert self.note is not None
        said = "is joining the call" if self.note.joining else f"\u201c{self.note.text}\u201d"
        return Text.assemble(("supervisor ", "bold blue"), (said, "bold"))


@dataclass
class WallView:
    """A supervisor sees many calls: a list of them (latched escalations first, then by risk) above the
    one selected call (`follow`, or else the most urgent); an operator with one call sees just it."""

    follow: str | None = None
    calls: dict[str, ConsoleView] = field(default_factory=dict)
    notice: str = ""

    def apply(self, ev: Event) -> None:
        self.calls.setdefault(ev.call_id, ConsoleView()).apply(ev)

    @property
    def selected(self) -> ConsoleView:
        if self.follow in self.calls:
            return self.calls[self.follow]
        ranked = sorted(self.calls.values(), key=lambda v: (v.ended, v.latched is None, -v.risk))
        return ranked[0] if ranked else ConsoleView()

    @property
    def ended(self) -> bool:
        return self.selected.ended

    def render(self, height: int = 24) -> Layout:
        view = self.selected
        view.notice = self.notice or view.notice
        if len(self.calls) < 2:
            return view.render(height)
        rows = min(len(self.calls), 6)
        table = Table(box=None, padding=(0, 1), expand=True)
        for col in ("call", "risk", "state"):
            table.add_column(col)
        ranked = sorted(self.calls.values(), key=lambda v: (v.ended, v.latched is None, -v.risk))
        for v in ranked[:rows]:
            state = "ended" if v.ended else "live"
            table.add_row(("\u25b6 " if v is view else "  ") + v.call_id, Text(*risk_words(v.risk, v.latched)), state)
        layout = Layout()
        layout.split_column(
            Layout(Panel(table, title="calls", title_align="left"), size=rows + 3), Layout(view.render(height - rows - 3))
        )
        return layout


async def run_console(url: str, token: str, call_id: str | None = None, once: bool = False) -> int:
    """Connect to a server's console endpoint and render live; reconnects and resumes by sequence."""
    import websockets

    view = WallView(follow=call_id)
    console = Console()
    last: dict[str, int] = {}
    with Live(view.render(console.size.height), console=console, refresh_per_second=8, screen=False) as live:
        while True:
            query = f"{url.rstrip('/')}/console?token={token}" + (f"&call={call_id}" if call_id else "")
            try:
                async with websockets.connect(query, max_size=2**22) as ws:
                    await ws.send(json.dumps({"type": "resume", "after": last}))
                    async for message in ws:
                        data = json.loads(message)
                        if data.get("type") in (None, "notice"):
                            view.notice = data.get("message", "")
                            continue
                        try:
                            ev = parse_event(data)
                        except ValidationError:  # a message this console does not know (a newer server)
                            view.notice = str(data.get("message") or f"(a {data.get('type')!r} message)")[:200]
                            continue
                        last[ev.call_id] = max(last.get(ev.call_id, 0), ev.seq)
                        view.apply(ev)
                        live.update(view.render(console.size.height))
                        if once and view.ended:
                            return 0
            except websockets.exceptions.InvalidStatus as exc:
                console.print(f"[red]The server refused the console: {exc}[/red]")
                return 2
            except (OSError, websockets.exceptions.ConnectionClosed) as exc:
                reason = getattr(exc, "reason", "") or str(exc)
                if "token" in reason or "auth" in reason:
                    console.print(f"[red]Refused: {reason}[/red]")
                    return 2
                view.notice = f"disconnected ({reason or 'connection lost'}); reconnecting\u2026"
                live.update(view.render(console.size.height))
                await asyncio.sleep(1.0)
