"""Genesys Cloud AudioHook (protocol version 2): a websocket session per forked call.

The client (Genesys) opens with `open` (the conversation, the media formats it offers); the server
answers `opened` with the one it chose once the call is accepted. Audio then arrives as binary
frames of interleaved samples (PCMU or L16 at 8 kHz; `external` is the customer, `internal` the
agent). `ping` gets `pong`; `paused`/`resumed` and `discarded` say where audio was withheld or lost;
`close` gets `closed` and ends the call with everything heard. Every message carries a sequence
number: the client's must rise by one, and each server message names the last client one seen.

A probe (the conversation id all zeros, sent when an integration is saved) is answered and never
becomes a call. A message that breaks the protocol gets `disconnect` (reason `error`), as the
specification asks, and the session waits for the client's `close`; the audio heard so far is kept.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, StringConstraints

from callsense.audio.codecs import AudioChunk
from callsense.audio.protocols import LANGUAGES, IngestProtocol, ProtocolError, StreamStart, _check, _Frame, language_code
from callsense.events import AUDIO_DISCARDED

NULL_UUID = "00000000-0000-0000-0000-000000000000"
UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
Uuid = Annotated[str, StringConstraints(pattern=UUID)]
Duration = Annotated[str, StringConstraints(pattern=r"^PT\d{1,9}(\.\d{1,9})?S$")]
Channel = Literal["external", "internal"]
ROLES = {"external": "customer", "internal": "operator"}
ENCODINGS = {"PCMU": "mulaw", "L16": "s16le"}
MAX_TEXT = 65535  # the specification's bound on a text message


class Media(_Frame):
    type: Literal["audio"]
    format: Literal["PCMU", "L16"]
    channels: list[Channel] = Field(min_length=1, max_length=2)
    rate: Literal[8000]


class OpenParameters(_Frame):
    organizationId: Uuid
    conversationId: Uuid
    media: list[Media] = Field(min_length=1, max_length=16)
    language: str | None = Field(None, max_length=35)
    supportedLanguages: bool = False
    customConfig: dict[Annotated[str, StringConstraints(max_length=64)], Any] = Field(default_factory=dict, max_length=32)
    # participant (the caller's number and name) is personal data: it is not read, so never stored


class ClientMessage(_Frame):
    version: Literal["2"]
    type: Annotated[str, StringConstraints(max_length=32)]
    seq: Annotated[int, Field(strict=True, ge=1)]
    serverseq: Annotated[int, Field(strict=True, ge=0)]
    id: Uuid
    position: Duration
    parameters: dict[str, Any] = Field(default_factory=dict)


class Gap(_Frame):
    """`discarded` and `resumed`: audio from `start` (stream position) that never came, `discarded` long."""

    start: Duration
    discarded: Duration


class Update(_Frame):
    language: str = Field(max_length=35)


class ClientError(_Frame):
    code: int = 500
    message: str = ""


def seconds(duration: str) -> float:
    """ISO 8601 duration as AudioHook writes it (PT1.25S) -> seconds."""
    return float(duration[2:-1])


def duration(s: float) -> str:
    return f"PT{max(s, 0.0):.3f}S".replace(".000S", "S")


class AudioHookProtocol(IngestProtocol):
    """One AudioHook session. `outbox` holds the protocol's own replies (pong, closed, disconnect, the
    probe's opened); `accepted` gives the `opened` of a real call once the server took it."""

    name = "audiohook"
    MAX_GAP_S = 60.0  # discarded audio becomes this much silence at most (the call's timeline stays true)

    def __init__(self, limits: Any = None, session_id: str | None = None, organization_id: str | None = None) -> None:
        super().__init__(limits)
        self.session_id, self.organization_id = session_id, organization_id
        self.seq = self.clientseq = 0
        self.state = "preparing"  # opening, active, paused, failed (disconnect sent), closed
        self.probe = False
        self.media: Media | None = None
        self._want_languages = False

    # -- replies --

    def _message(self, kind: str, parameters: dict[str, Any]) -> str:
        self.seq += 1
        body = {"version": "2", "type": kind, "seq": self.seq, "clientseq": self.clientseq}
        return json.dumps({**body, "id": self.session_id or NULL_UUID, "parameters": parameters})

    def _opened(self) -> str:
        assert self.media is not None
        params: dict[str, Any] = {"media": [self.media.model_dump()], "startPaused": False}
        if self._want_languages:
            params["supportedLanguages"] = sorted(LANGUAGES)
        self.state = "active"
        return self._message("opened", params)

    def accepted(self, call_id: str) -> str | None:
        return self._opened()

    def problem(self, code: str, message: str) -> str | None:
        """A message that broke the protocol: disconnect once, then wait for the client's close."""
        if self.state in ("failed", "closed"):
            return None
        self.state = "failed"
        reason = "unauthorized" if code == "unauthorized" else "error"
        return self._message("disconnect", {"reason": reason, "info": message[:500]})

    def notice(self, code: str, message: str) -> str | None:
        return None  # AudioHook has no message for a warning: it is kept in the call's events

    def refused(self, reason: str) -> str | None:
        return self.problem("refused", reason)

    def ended_reply(self, call_id: str, clean: bool, failure: str | None) -> str | None:
        return None  # `closed` was the answer to `close`

    # -- input --

    def feed(self, message: str | bytes) -> list[AudioChunk]:
        if isinstance(message, bytes):
            return self._audio(message)
        if len(message) > MAX_TEXT:
            raise ProtocolError(f"text message of {len(message)} characters; AudioHook allows {MAX_TEXT}")
        msg = _check(ClientMessage, self._json(message), "AudioHook message")
        if msg.seq != self.clientseq + 1:
            raise ProtocolError(f"seq {msg.seq} after {self.clientseq}: client sequence numbers must rise by one")
        self.clientseq = msg.seq
        if msg.serverseq > self.seq:
            raise ProtocolError(f"serverseq {msg.serverseq} is past the last server message ({self.seq})")
        if self.session_id is None:
            self.session_id = msg.id
        elif msg.id.lower() != self.session_id.lower():
            raise ProtocolError("the message's session id is not this session's (Audiohook-Session-Id)")
        handler = getattr(self, f"_on_{msg.type}", None)
        if handler is None:
            raise ProtocolError(f"{msg.type[:32]!r} is not an AudioHook client message")
        chunks: list[AudioChunk] = handler(msg.parameters)
        return chunks

    def _audio(self, data: bytes) -> list[AudioChunk]:
        if self.probe or self.state in ("failed", "closed"):
            return []  # a probe's audio and audio after a disconnect are not part of any call
        if self.state not in ("active", "paused"):
            raise ProtocolError("audio arrived before the session was opened", "not_started")
        self.state = "active"  # audio after `paused` means the pause is over
        return self._pcm(data)

    def _on_open(self, parameters: dict[str, Any]) -> list[AudioChunk]:
        if self.state != "preparing":
            raise ProtocolError("a second open in one session", "duplicate_start")
        p = _check(OpenParameters, parameters, "open parameters")
        if self.organization_id and p.organizationId.lower() != self.organization_id.lower():
            raise ProtocolError("organizationId is not the one in the Audiohook-Organization-Id header", "unauthorized")
        self.media = _choose(p.media)
        self._want_languages = p.supportedLanguages
        if p.conversationId == NULL_UUID:  # a connection probe: answer, never a call
            self.probe = True
            self.outbox.append(self._opened())
            return []
        self.state = "opening"
        operator = p.customConfig.get("operator_id")
        self._begin(
            StreamStart(
                call_id=p.conversationId,
                sample_rate=self.media.rate,
                encoding=ENCODINGS[self.media.format],
                roles=[ROLES[c] for c in self.media.channels],
                operator_id=operator if isinstance(operator, str) and 0 < len(operator) <= 64 else None,
                language=self._language(p.language),
            )
        )
        return []

    def _language(self, value: str | None) -> str | None:
        try:
            return language_code(value)
        except ValueError as exc:
            self.notices.append(("unknown_language", f"{exc}; the language is detected from the audio"))
            return None

    def _on_ping(self, parameters: dict[str, Any]) -> list[AudioChunk]:
        self.outbox.append(self._message("pong", {}))
        return []

    def _on_close(self, parameters: dict[str, Any]) -> list[AudioChunk]:
        chunks = self._stop()
        self.state = "closed"
        self.outbox.append(self._message("closed", {}))
        return chunks

    def _on_paused(self, parameters: dict[str, Any]) -> list[AudioChunk]:
        if self.state == "active":
            self.state = "paused"
        return []

    def _on_resumed(self, parameters: dict[str, Any]) -> list[AudioChunk]:
        if self.state == "paused":
            self.state = "active"
        return self._gap(_check(Gap, parameters, "resumed parameters")) if "discarded" in parameters else []

    def _on_discarded(self, parameters: dict[str, Any]) -> list[AudioChunk]:
        return self._gap(_check(Gap, parameters, "discarded parameters"))

    def _gap(self, gap: Gap) -> list[AudioChunk]:
        """Audio the client dropped: silence of the same length keeps later speech at its true time,
        and the call says what was lost (it is never a clean call)."""
        lost = seconds(gap.discarded)
        if self.start is None or self._chunker is None or lost <= 0 or self.state in ("failed", "closed"):
            return []
        filled = min(lost, self.MAX_GAP_S)
        self.notices.append(
            (
                AUDIO_DISCARDED,
                f"the source discarded {lost:.2f} s of audio at {seconds(gap.start):.2f} s: "
                f"{filled:.2f} s of silence stands in for it",
            )
        )
        rate, channels = self.start.sample_rate, len(self.start.roles)
        pieces = (self._chunker.push(np.zeros((channels, n), np.float32)) for n in _split(int(filled * rate), rate))
        return [c for c in pieces if c is not None]  # a second at a time, as audio arrives

    def _on_update(self, parameters: dict[str, Any]) -> list[AudioChunk]:
        language = _check(Update, parameters, "update parameters").language
        self.notices.append(
            ("language_update", f"the source says the language is now {language[:35]!r}; this call keeps its language")
        )
        return []

    def _on_error(self, parameters: dict[str, Any]) -> list[AudioChunk]:
        err = _check(ClientError, parameters, "error parameters")
        self.notices.append(("source_error", f"the AudioHook client reported {err.code}: {err.message[:200]}"))
        return []


def _split(total: int, size: int) -> list[int]:
    return [min(size, total - i) for i in range(0, total, size)]


def _choose(offered: list[Media]) -> Media:
    """Both parties on separate channels when offered (roles without diarization), else the first offer."""
    both = [m for m in offered if set(m.channels) == {"external", "internal"} and len(m.channels) == 2]
    return (both or offered)[0]
