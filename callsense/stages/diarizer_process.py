"""Mono calls' streaming diarization in its own process, beside the calls instead of on their threads.

pyannote's segmentation and the CAM++ embedding run on torch, whose thread pool fights Whisper's
(CTranslate2) for the same cores when both live in one process (MODELS.md: the same diarization
took three times as long there). In a live server every mono call hands its audio to one
`DiarizerHost` child process (torch on one thread) and goes on with transcription; the call only
waits when a final needs its speaker, and then only for the audio already sent.

`RemoteDiarizer` has the `StreamingDiarizer` calls `MonoSpeakers` uses (`push`, `seek`, `flush`,
`speaker_at`, `centroids`): the child runs the very same `StreamingDiarizer`, so the labels are the
ones the call's own thread would have given. If the child dies (or cannot start: a script that
spawns it needs an `if __name__ == "__main__":` guard), waiting calls are released at once and each
goes on diarizing on its own thread from where the child stopped; the next call starts a new child.
"""

from __future__ import annotations

import collections
import itertools
import multiprocessing
import threading
import weakref
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
from pyannote.core import Annotation, Segment  # the data structures only: no torch in this process

from callsense.config import SAMPLE_RATE, DiarizationSettings, ModelSettings
from callsense.stages.speakers import SpeakerCentroid, speaker_in

WAIT_S = 10.0  # the longest a final waits for the diarizer to catch up before it takes what there is


class RemoteDiarizer:
    """One call's diarizer, running in the host's child process."""

    def __init__(self, host: DiarizerHost, key: int, generation: int) -> None:
        self.host, self.key, self.generation = host, key, generation
        self.centroids: list[SpeakerCentroid] = []
        self.local: Any = None  # a StreamingDiarizer on the call's thread, once the child is gone
        self.annotation = Annotation()  # the child's labelled turns, as its diarizer holds them
        self._sent = self._done = 0  # messages sent, and answered by the child
        self._samples = 0  # audio sent to the child (where this thread took over, once it did)
        self._cond = threading.Condition()
        # the child forgets a call nobody holds; a finalizer may run inside `send` (garbage collection
        # at any allocation), so it only queues the key, and the next send passes it on
        weakref.finalize(self, host.closed.append, (key, generation))

    def push(self, audio: np.ndarray) -> list[Any]:
        if self._on_own_thread():
            return list(self.local.push(audio))
        self._samples += audio.size
        self._send("push", np.ascontiguousarray(audio, np.float32))
        return []  # the turns arrive in the background; `speaker_at` waits for them

    def seek(self, sample: int) -> None:
        self._samples = sample
        if self._on_own_thread():
            self.local.seek(sample)
        else:
            self._send("seek", sample)

    def flush(self) -> list[Any]:
        if self._on_own_thread():
            return list(self.local.flush())
        self._send("flush", None)
        self.wait()
        return []

    def speaker_at(self, start: float, end: float) -> str | None:
        """As `StreamingDiarizer.speaker_at`, once every piece of audio sent so far is diarized."""
        self.wait()
        if self.local is not None and end > self._samples / SAMPLE_RATE - 0.01:
            return self.local.speaker_at(start, end)  # after the child stopped
        with self._cond:
            return speaker_in(self.annotation, start, end)

    def wait(self, timeout: float = WAIT_S) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._done >= self._sent or not self.connected, timeout)

    @property
    def connected(self) -> bool:
        """False once the child this call was opened in is gone (a new child does not know the call)."""
        return self.host.alive and self.host.generation == self.generation

    def _on_own_thread(self) -> bool:
        """True once the child is gone: a diarizer on this thread takes over from the audio it had."""
        if self.local is None and not self.connected:
            from callsense.stages.diarization import StreamingDiarizer

            self.local = StreamingDiarizer(self.host.models, self.host.settings)
            self.local.seek(self._samples)
            self.centroids = self.local.centroids
        return self.local is not None

    def _send(self, op: str, payload: Any) -> None:
        with self._cond:
            self._sent += 1
        if not self.host.send((op, self.key, payload), self.generation):
            with self._cond:
                self._cond.notify_all()

    def _answer(self, turns: list[tuple[float, float, str]], centroids: list[tuple[str, np.ndarray, int]]) -> None:
        with self._cond:
            self._done += 1
            for a, b, label in turns:
                self.annotation[Segment(a, b), label] = label
            self.centroids = [SpeakerCentroid(*c) for c in centroids]
            self._cond.notify_all()

    def _host_died(self) -> None:
        with self._cond:
            self._cond.notify_all()


class DiarizerHost:
    """The child process and the thread that reads its answers; one per server process."""

    def __init__(self, models: ModelSettings, settings: DiarizationSettings) -> None:
        self.models, self.settings = models, settings
        self._keys = itertools.count()
        self._calls: weakref.WeakValueDictionary[int, RemoteDiarizer] = weakref.WeakValueDictionary()
        self._send_lock = threading.Lock()
        self.closed: collections.deque[tuple[int, int]] = collections.deque()  # calls gone, not yet told
        self._conn: Connection | None = None
        self._proc: Any = None
        self.generation = 0  # which child: calls opened in an earlier one are not sent to a new one
        self.failed: str | None = None  # why the last child could not start
        self.open_calls = 0  # calls the child holds, as of its last answer

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def open(self) -> RemoteDiarizer:
        """A diarizer for a new call (starting the child if there is none, or it died)."""
        with self._send_lock:
            if not self.alive:
                try:
                    self._start()
                except Exception as exc:  # no child here (e.g. inside a daemon process): calls diarize on their thread
                    self.failed = f"{type(exc).__name__}: {exc}"
            generation = self.generation
        key = next(self._keys)
        remote = RemoteDiarizer(self, key, generation)
        self._calls[key] = remote
        self.send(("open", key, None), generation)
        return remote

    def send(self, message: tuple[str, int, Any], generation: int) -> bool:
        with self._send_lock:
            if self._conn is None or generation != self.generation:
                return False
            try:
                while self.closed:
                    key, born = self.closed.popleft()
                    if born == self.generation:
                        self._conn.send(("close", key, None))
                self._conn.send(message)
                return True
            except (OSError, ValueError):  # the child is gone
                return False

    def close(self) -> None:
        with self._send_lock:
            conn, proc, self._conn, self._proc = self._conn, self._proc, None, None
        if conn is not None:
            conn.close()
        if proc is not None:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()

    def _start(self) -> None:
        if self._conn is not None:  # a child that died: its reader thread ends on this
            self._conn.close()
        ctx = multiprocessing.get_context("spawn")  # torch and CTranslate2 do not survive a fork
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(
            target=_serve,
            args=(theirs, self.models.model_dump(), self.settings.model_dump()),
            name="callsense-diarizer",
            daemon=True,
        )
        proc.start()
        theirs.close()
        self._conn, self._proc = ours, proc
        self.generation += 1
        threading.Thread(target=self._read, args=(ours,), name="diarizer-answers", daemon=True).start()

    def _read(self, conn: Connection) -> None:
        try:
            while True:
                key, turns, centroids, self.open_calls = conn.recv()
                self._deliver(key, turns, centroids)
        except (EOFError, OSError):
            for remote in list(self._calls.values()):  # nobody waits for a dead child
                remote._host_died()

    def _deliver(
        self, key: int, turns: list[tuple[float, float, str]], centroids: list[tuple[str, np.ndarray, int]]
    ) -> None:
        # its own frame: a reference held in the reading loop would keep an ended call alive (and in
        # the child) until the next answer came
        remote = self._calls.get(key)
        if remote is not None:
            remote._answer(turns, centroids)


def _serve(conn: Connection, models: dict[str, Any], settings: dict[str, Any]) -> None:
    """The child: one `StreamingDiarizer` per open call, fed in the order the messages came."""
    import torch

    from callsense.stages.diarization import CamPlusPlus, StreamingDiarizer, load_segmentation

    torch.set_num_threads(1)
    model_settings, diar_settings = ModelSettings(**models), DiarizationSettings(**settings)
    segmentation, embedding = load_segmentation(model_settings), CamPlusPlus.from_bundle()
    calls: dict[int, StreamingDiarizer] = {}
    while True:
        try:
            op, key, payload = conn.recv()
        except (EOFError, OSError):
            return
        if op == "open":
            calls[key] = StreamingDiarizer(model_settings, diar_settings, segmentation, embedding)
            continue
        if op == "close":
            calls.pop(key, None)
            continue
        diarizer = calls.get(key)
        if diarizer is None:
            continue
        if op == "push":
            turns = diarizer.push(payload)
        elif op == "flush":
            turns = diarizer.flush()
        else:
            diarizer.seek(int(payload))
            turns = []
        conn.send(
            (
                key,
                [(seg.start, seg.end, label) for seg, label in turns],
                [(c.label, c.vector, c.count) for c in diarizer.centroids],
                len(calls),
            )
        )
