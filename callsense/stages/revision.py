"""Live finals revised: a speaker's turns decoded again together, in the background.

A live final is decoded alone, moments after its turn ends. Whisper base misreads short turns heard
alone («Нажмите» as «Нажми тебя», "is there anything else" as "it's very interesting") that it reads
right among the same speaker's other turns, as offline decoding over a whole channel does: the
encoder hears more of the voice. So a live speaker's turns are also collected into a `Pack` (`stages.packing`, the
recordings' packed window) and, when the pack is full, stale or the call ends, decoded once more
there; each turn whose words changed gets a revised final (`revision` 1, same `utterance_id`) that
replaces the live one in the call's record, the report and the consoles. Live signals (emotion,
hints) stay as they were given: they were acted on.

Revisions are background work: one at a time per process, on a thread at the lowest CPU priority
with its own copy of the model (`Models.background_whisper`), outside the decode gate. Live finals,
partials and every other stage get the cores first; under load revisions wait, and a speaker's pack
is skipped while their previous one is still pending. A call's last packs are revised after its
`call_ended` (the live stream is complete then), before its record and report are written.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, TimeoutError
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from callsense.stages.decode_gate import DecodeGate
from callsense.stages.packing import Pack
from callsense.stages.whisper import DecodeRequest, Hypothesis, WhisperDecoder, norm_word

log = logging.getLogger(__name__)

# an empty revision withdraws a live final of at most this many words: Whisper's phantom phrases on
# line noise are short ("That was awesome."); a whole sentence missing from the pack's decode is the
# pack's loss (it stopped early), not a phantom, and the live final stands
MAX_WITHDRAWN_WORDS = 4
NICE = 19  # the revision thread's CPU priority (the lowest)
# a turn's revised words: (start sample, samples, hypothesis, utterance count); the speaker's
# transcriber makes the final of it (the reviser holds no reference back to it: no cycle that would
# keep a finished call's stages until a full garbage collection)
Revised = tuple[int, int, Hypothesis, int]
Model = Callable[[], Any]  # the background model, loaded on first use by the thread that calls it


@dataclass
class RevisionCounts:
    """What became of the packs of live turns offered for revision in this process: `revised`
    (decoded again, whether or not words changed), `skipped` (the speaker's previous pack was still
    pending: under load) and `dropped` (not done by the call's record deadline, or failed). Skipped
    and dropped packs keep their live finals."""

    revised: int = 0
    skipped: int = 0
    dropped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, what: Literal["revised", "skipped", "dropped"]) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)

    def as_dict(self) -> dict[str, int]:
        return {"revised": self.revised, "skipped": self.skipped, "dropped": self.dropped}


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """One thread for the whole process, at the lowest CPU priority: revisions take at most one
    core, and only what live calls leave."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="callsense-revise", initializer=_lowest)
        return _pool


def _lowest() -> None:
    try:  # Linux: a thread's own priority; threads it starts (CTranslate2's worker) inherit it
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except (OSError, AttributeError):
        log.info("revisions run at normal CPU priority here")


class Reviser:
    """One live speaker's turns, decoded again in packs (see the module's docstring)."""

    def __init__(self, decoder: WhisperDecoder, pack_s: float, model: Model, counts: RevisionCounts) -> None:
        """`decoder`: the live one (its settings and beam); `model`: the background copy; `counts`:
        the process's tally (`Models.revisions`)."""
        self.decoder, self.model, self.counts = decoder, model, counts
        self.pack = Pack(pack_s)
        self._texts: dict[int, str] = {}  # the live text of each turn in the pack
        self._prompt = ""  # what the speaker said before the pack's first turn
        self._language: str | None = None
        self._running: Future[list[Revised]] | None = None
        self._ending: Future[list[Revised]] | None = None  # the last pack, queued at the end

    def add(self, count: int, start_sample: int, audio: np.ndarray, text: str, prompt: str, language: str | None) -> None:
        """A live final (or a turn that gave no words) of `audio`; `prompt` is the live prompt it
        was decoded with: the speaker's words before it."""
        if not self.pack.fits(audio):
            self._submit()
        if not self.pack.items:
            self._prompt = prompt
        self.pack.add(count, start_sample, audio)
        self._texts[count] = text
        self._language = language or self._language

    def tick(self, now_sample: int) -> list[Revised]:
        """Revised turns ready by now; a pack waiting too long is sent."""
        if self.pack.stale(now_sample):
            self._submit()
        return self._collect()

    def end(self) -> None:
        """The call ended: its last pack is queued too (its revisions come after the call's end)."""
        job = self._take()
        if job is not None:
            self._ending = _executor().submit(job)

    def rest(self, deadline: float | None) -> list[Revised]:
        """After `end`: the revisions still to come, waited for until `deadline` (monotonic; None:
        as long as they take). What is not done by then is dropped: the live finals stand."""
        futures = [f for f in (self._running, self._ending) if f is not None]
        self._running = self._ending = None
        return [final for fut in futures for final in _result(fut, deadline, self.counts)]

    # -- internals --

    def _submit(self) -> None:
        job = self._take()
        if job is None:
            return
        if self._running is not None and not self._running.done():
            self.counts.count("skipped")  # the speaker's previous pack is still pending: this one's live finals stand
            return
        self._running = _executor().submit(job)

    def _take(self) -> Callable[[], list[Revised]] | None:
        """The pack's revision as a job, emptying the pack; None when a revision cannot change it."""
        if len(self.pack.items) < 2:  # one turn alone would be decoded as its live final was
            self.pack.items, self._texts = [], {}
            return None
        audio, spans = self.pack.take()
        texts, self._texts = self._texts, {}
        request = DecodeRequest(audio, self._language, 0.0, self._prompt)
        live = self.decoder

        def job() -> list[Revised]:
            decoder = WhisperDecoder(self.model(), live.settings, DecodeGate(1), beam_size=live.beam_size)
            revised = self._revised(decoder.decode_batch([request])[0], spans, texts)
            self.counts.count("revised")
            return revised

        return job

    def _revised(self, hyp: Hypothesis, spans: list[tuple[int, int, int, float]], texts: dict[int, str]) -> list[Revised]:
        out = []
        for count, start_sample, size, part in Pack.parts(hyp, spans):
            live = texts.get(count, "")
            if _same(part.text, live) or (not part.text and len(live.split()) > MAX_WITHDRAWN_WORDS):
                continue  # unchanged, or lost by the pack: the live final stands
            # changed words, words the live final missed, or none where it heard a few (a phantom
            # phrase on line noise that the speaker's other turns show up): an empty revision
            out.append((start_sample, size, part, count))
        return out

    def _collect(self) -> list[Revised]:
        fut = self._running
        if fut is None or not fut.done():
            return []
        self._running = None
        return _result(fut, None, self.counts)


def _result(fut: Future[list[Revised]], deadline: float | None, counts: RevisionCounts) -> list[Revised]:
    """A revision's finals, waited for until `deadline` (None: as long as it takes); one not done by
    then, or failed, gives none: the live finals stand and the call goes on."""
    try:
        return fut.result(timeout=None if deadline is None else max(deadline - time.monotonic(), 0.0))
    except TimeoutError:
        fut.cancel()
    except Exception:
        log.exception("revising finals failed")
    counts.count("dropped")
    return []


def _same(a: str, b: str) -> bool:
    return [norm_word(w) for w in a.split()] == [norm_word(w) for w in b.split()]
