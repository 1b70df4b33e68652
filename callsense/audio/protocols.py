"""Live protocols: plain websocket, Twilio Media Streams, FreeSWITCH mod_audio_fork and Asterisk
AudioSocket. Each parser turns messages into chunks, so the server and the tests share them.

Every inbound message is checked against a schema (pydantic: types, finite numbers, enums, sizes)
before anything is used; a message that fails raises `ProtocolError` with a code and a plain
message, and the parser stays usable for the next one. Limits (`ProtocolLimits`) bound what one
call may ask for: channels, frame size.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from callsense.audio.codecs import AudioChunk, AudioError, Chunker, decode_pcm, repair_non_finite

# Whisper's language codes (faster_whisper.tokenizer); a BCP-47 tag such as ru-RU is reduced to "ru".
LANGUAGES = frozenset(
    {
        "af",
        "am",
        "ar",
        "as",
        "az",
        "ba",
        "be",
        "bg",
        "bn",
        "bo",
        "br",
        "bs",
        "ca",
        "cs",
        "cy",
        "da",
        "de",
        "el",
        "en",
        "es",
        "et",
        "eu",
        "fa",
        "fi",
        "fo",
        "fr",
        "gl",
        "gu",
        "ha",
        "haw",
        "he",
        "hi",
        "hr",
        "ht",
        "hu",
        "hy",
        "id",
        "is",
        "it",
        "ja",
        "jw",
        "ka",
        "kk",
        "km",
        "kn",
        "ko",
        "la",
        "lb",
        "ln",
        "lo",
        "lt",
        "lv",
        "mg",
        "mi",
        "mk",
        "ml",
        "mn",
        "mr",
        "ms",
        "mt",
        "my",
        "ne",
        "nl",
        "nn",
        "no",
        "oc",
        "pa",
        "pl",
        "ps",
        "pt",
        "ro",
        "ru",
        "sa",
        "sd",
        "si",
        "sk",
        "sl",
        "sn",
        "so",
        "sq",
        "sr",
        "su",
        "sv",
        "sw",
        "ta",
        "te",
        "tg",
        "th",
        "tk",
        "tl",
        "tr",
        "tt",
        "uk",
        "ur",
        "uz",
        "vi",
        "yi",
        "yo",
        "yue",
        "zh",
    }
)
CALL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
ChannelRole = Literal["operator", "customer", "unknown"]
Encoding = Literal["s16le", "mulaw", "alaw", "f32le"]
SampleRate = Annotated[int, Field(strict=True, ge=4000, le=192000)]
Ident = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class ProtocolError(ValueError):
    """A message that cannot be used; the connection stays usable. `code` is in docs/protocol.md."""

    def __init__(self, message: str, code: str = "bad_frame") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ProtocolLimits:
    max_channels: int = 4
    max_frame_s: float = 5.0  # audio in one frame; a longer frame is refused (a client bug or an attack)


def error_json(code: str, message: str) -> str:
    return json.dumps({"type": "error", "code": code, "message": message})


def valid_call_id(value: str) -> str:
    """Call ids become data, never paths; they are checked here and made unique by the server."""
    if not CALL_ID.match(value) or value.strip(".") == "":
        raise ValueError("call id must be 1-64 characters of letters, digits and . _ : - (starting with a letter or digit)")
    return value


def language_code(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    code = value.replace("_", "-").split("-")[0].lower()
    if code not in LANGUAGES:
        raise ValueError(f"language {value!r} is not one Whisper knows; use a code such as ru or en")
    return code


CallId = Annotated[str, StringConstraints(max_length=64)]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class _Start(_Frame):
    language: str | None = Field(None, max_length=35)

    @field_validator("language")
    @classmethod
    def _language(cls, v: str | None) -> str | None:
        return language_code(v)


@dataclass
class StreamStart:
    call_id: str
    sample_rate: int
    encoding: str
    roles: list[str]
    operator_id: str | None = None  # what the client asked for; the server decides (token binding)
    language: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _check(model: type[_Frame], data: dict[str, Any], what: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or what
        raise ProtocolError(f"invalid {what}: {where}: {first['msg']}") from None


class IngestProtocol:
    """Base for websocket ingest: `feed(message)` returns chunks; `start` is set once known.
    `notices` collects problems that did not stop the audio (e.g. NaN samples made silent)."""

    name = "base"

    def __init__(self, limits: ProtocolLimits | None = None) -> None:
        self.limits = limits or ProtocolLimits()
        self.start: StreamStart | None = None
        self.ended = False
        self.notices: list[tuple[str, str]] = []
        self.outbox: list[str] = []
        self._chunker: Chunker | None = None

    def _begin(self, start: StreamStart) -> None:
        if self.start is not None:
            raise ProtocolError("the stream has already started; one start per connection", "duplicate_start")
        try:
            start.call_id = valid_call_id(start.call_id)
        except ValueError as exc:
            raise ProtocolError(str(exc), "bad_call_id") from None
        if not 1 <= len(start.roles) <= self.limits.max_channels:
            raise ProtocolError(
                f"a call has 1 to {self.limits.max_channels} channels, not {len(start.roles)}", "too_many_channels"
            )
        try:
            self._chunker = Chunker(start.sample_rate, len(start.roles))
        except AudioError as exc:
            raise ProtocolError(str(exc)) from exc
        self.start = start

    def _pcm(self, data: bytes, encoding: str | None = None) -> list[AudioChunk]:
        if self.start is None or self._chunker is None:
            raise ProtocolError("audio arrived before the start message", "not_started")
        enc, channels = encoding or self.start.encoding, len(self.start.roles)
        width = {"s16le": 2, "f32le": 4}.get(enc, 1)
        if len(data) > self.limits.max_frame_s * self.start.sample_rate * width * channels:
            raise ProtocolError(
                f"audio frame of {len(data)} bytes holds more than {self.limits.max_frame_s:g} s; send smaller frames",
                "frame_too_large",
            )
        try:
            pcm = decode_pcm(data, enc, channels)
        except AudioError as exc:
            raise ProtocolError(str(exc)) from exc
        repaired = repair_non_finite(pcm)
        if repaired:
            self.notices.append(("non_finite_samples", f"{repaired} NaN/inf samples in a frame were made silent"))
        chunk = self._chunker.push(pcm)
        return [chunk] if chunk else []

    def feed(self, message: str | bytes) -> list[AudioChunk]:
        raise NotImplementedError

    # What the server says back, in this protocol's words (None: nothing to say). `outbox` holds replies
    # the protocol itself owes the source (AudioHook's pong, closed); ingest sends them after each message.
    def accepted(self, call_id: str) -> str | None:
        return json.dumps({"type": "accepted", "call_id": call_id})

    def problem(self, code: str, message: str) -> str | None:
        """A message that could not be used."""
        return error_json(code, message)

    def notice(self, code: str, message: str) -> str | None:
        """Something that did not stop the audio."""
        return error_json(code, message)

    def refused(self, reason: str) -> str | None:
        return None  # the close frame carries the reason

    def ended_reply(self, call_id: str, clean: bool, failure: str | None) -> str | None:
        return json.dumps({"type": "ended", "call_id": call_id, "clean": clean, "failure": failure})

    def _stop(self) -> list[AudioChunk]:
        """End of stream: the resampler's tail is audio too."""
        self.ended = True
        if self._chunker is None or self.start is None:
            return []
        chunk = self._chunker.push(np.zeros((len(self.start.roles), 0), np.float32), last=True)
        return [chunk] if chunk else []

    @staticmethod
    def _json(message: str | bytes) -> dict[str, Any]:
        try:
            data = json.loads(message)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ProtocolError(f"text frame is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ProtocolError("text frame must be a JSON object")
        return data


# --- plain --------------------------------------------------------------------------------------


class PlainStartFrame(_Start):
    type: Literal["start"]
    call_id: CallId
    sample_rate: SampleRate
    encoding: Encoding = "s16le"
    channels: list[ChannelRole] = Field(["unknown"], min_length=1, max_length=64)
    operator_id: Ident | None = None


class PlainProtocol(IngestProtocol):
    """{"type":"start","call_id","sample_rate","encoding","channels":[roles]} then binary frames,
    then {"type":"stop"}."""

    name = "plain"

    def feed(self, message: str | bytes) -> list[AudioChunk]:
        if isinstance(message, bytes):
            return self._pcm(message)
        data = self._json(message)
        kind = data.get("type")
        if kind == "start":
            f = _check(PlainStartFrame, data, "start message")
            self._begin(StreamStart(f.call_id, f.sample_rate, f.encoding, list(f.channels), f.operator_id, f.language))
            return []
        if kind == "stop":
            return self._stop()
        raise ProtocolError(f"unknown message type {str(kind)[:40]!r}; expected start, stop or binary audio")


# --- Twilio Media Streams --------------------------------------------------------------------------


class TwilioMediaFormat(_Frame):
    encoding: Literal["audio/x-mulaw"] = "audio/x-mulaw"
    sampleRate: SampleRate = 8000
    channels: Annotated[int, Field(strict=True, ge=1, le=1)] = 1


class TwilioStartMeta(_Frame):
    callSid: CallId | None = None
    streamSid: CallId | None = None
    tracks: list[Literal["inbound", "outbound"]] = Field(["inbound"], min_length=1, max_length=2)
    customParameters: dict[
        Annotated[str, StringConstraints(max_length=64)], Annotated[str, StringConstraints(max_length=256)]
    ] = Field(default_factory=dict, max_length=32)
    mediaFormat: TwilioMediaFormat = Field(default_factory=TwilioMediaFormat)


class TwilioStartFrame(_Frame):
    event: Literal["start"]
    streamSid: CallId | None = None
    start: TwilioStartMeta


class TwilioMedia(_Frame):
    track: Literal["inbound", "outbound"] | None = None
    payload: Annotated[str, StringConstraints(max_length=1 << 20)]


class TwilioMediaFrame(_Frame):
    event: Literal["media"]
    media: TwilioMedia


class TwilioProtocol(IngestProtocol):
    """Twilio Media Streams: connected/start/media/stop (and mark, dtmf); base64 mu-law 8 kHz;
    tracks -> roles (outbound = operator, inbound = customer)."""

    name = "twilio"
    TRACK_ROLES = {"outbound": "operator", "inbound": "customer"}

    MAX_LEAD_S = 2.0  # one track this far ahead of another: the other is taken as silence, said once

    def __init__(self, limits: ProtocolLimits | None = None) -> None:
        super().__init__(limits)
        self._tracks: list[str] = []
        self._pending: dict[str, list[np.ndarray]] = {}
        self._have: dict[str, int] = {}  # samples buffered per track
        self._silent: set[str] = set()

    def feed(self, message: str | bytes) -> list[AudioChunk]:
        if isinstance(message, bytes):
            raise ProtocolError("Twilio Media Streams sends text frames only")
        data = self._json(message)
        event = data.get("event")
        if event == "start":
            return self._start(_check(TwilioStartFrame, data, "Twilio start"))
        if event == "media":
            return self._media(_check(TwilioMediaFrame, data, "Twilio media").media)
        if event == "stop":
            return self._stop()
        if event in ("connected", "mark", "dtmf"):
            return []
        raise ProtocolError(f"unknown Twilio event {str(event)[:40]!r}")

    def _start(self, f: TwilioStartFrame) -> list[AudioChunk]:
        meta, params = f.start, f.start.customParameters
        tracks: list[str] = ["outbound", "inbound"] if len(set(meta.tracks)) > 1 else [*meta.tracks]
        try:
            language = language_code(params.get("language"))
        except ValueError as exc:
            raise ProtocolError(f"invalid Twilio start: customParameters.language: {exc}") from None
        self._begin(
            StreamStart(
                call_id=meta.callSid or f.streamSid or meta.streamSid or "twilio",
                sample_rate=meta.mediaFormat.sampleRate,
                encoding="mulaw",
                roles=[self.TRACK_ROLES[t] for t in tracks],
                operator_id=params.get("operator_id"),
                language=language,
            )
        )
        self._tracks, self._pending, self._have = tracks, {t: [] for t in tracks}, dict.fromkeys(tracks, 0)
        return []

    def _media(self, media: TwilioMedia) -> list[AudioChunk]:
        if self.start is None or self._chunker is None:
            raise ProtocolError("media arrived before start", "not_started")
        try:
            payload = base64.b64decode(media.payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(f"media payload is not valid base64: {exc}") from None
        track = media.track or self._tracks[0]
        if track not in self._tracks:
            raise ProtocolError(f"media for track {track!r}, which the start did not announce")
        if len(payload) > self.limits.max_frame_s * self.start.sample_rate:
            raise ProtocolError(f"media frame holds more than {self.limits.max_frame_s:g} s", "frame_too_large")
        # Tracks arrive as separate frames: buffer each, emit the part every track has reached.
        samples = decode_pcm(payload, "mulaw", 1)[0]
        self._pending[track].append(samples)
        self._have[track] += samples.size
        self._fill_silent_tracks(self.start.sample_rate)
        ready = min(self._have.values())
        if ready == 0:
            return []
        block = np.zeros((len(self._tracks), ready), np.float32)
        for ch, t in enumerate(self._tracks):
            data = np.concatenate(self._pending[t])
            block[ch] = data[:ready]
            self._pending[t], self._have[t] = [data[ready:]], data.size - ready
        chunk = self._chunker.push(block)
        return [chunk] if chunk else []

    def _fill_silent_tracks(self, rate: int) -> None:
        """A start that announces two tracks, and media for one: once the other falls `MAX_LEAD_S` behind
        it is silence, kept level from then on (the call is processed, and says so, instead of waiting
        forever)."""
        lead = max(self._have.values())
        for t in self._tracks:
            if lead > self._have[t] and (t in self._silent or lead - self._have[t] > self.MAX_LEAD_S * rate):
                self._pending[t].append(np.zeros(lead - self._have[t], np.float32))
                self._have[t] = lead
                if t not in self._silent:
                    self._silent.add(t)
                    self.notices.append(
                        ("track_missing", f"the {t} track sends no audio: its channel ({self.TRACK_ROLES[t]}) is silence")
                    )


# --- FreeSWITCH mod_audio_fork ---------------------------------------------------------------------


class AudioForkStartFrame(_Start):
    uuid: CallId | None = None
    call_id: CallId | None = None
    sampleRate: SampleRate | None = None
    sample_rate: SampleRate | None = None
    channels: Annotated[int, Field(strict=True, ge=1, le=64)] = 1
    roles: list[ChannelRole] | None = Field(None, min_length=1, max_length=64)
    operator_id: Ident | None = None


class AudioForkProtocol(IngestProtocol):
    """FreeSWITCH mod_audio_fork: first text frame is JSON metadata, then binary L16 frames;
    stereo = caller (customer) left, callee (operator) right unless the metadata says otherwise."""

    name = "audio_fork"

    def feed(self, message: str | bytes) -> list[AudioChunk]:
        if isinstance(message, bytes):
            return self._pcm(message)
        data = self._json(message)
        if self.start is None:
            f = _check(AudioForkStartFrame, data, "mod_audio_fork metadata")
            roles = list(f.roles) if f.roles else (["customer", "operator"] if f.channels == 2 else ["unknown"] * f.channels)
            if len(roles) != f.channels:
                raise ProtocolError(f"metadata names {len(roles)} roles for {f.channels} channels")
            self._begin(
                StreamStart(
                    call_id=f.uuid or f.call_id or "audio_fork",
                    sample_rate=f.sampleRate or f.sample_rate or 8000,
                    encoding="s16le",
                    roles=roles,
                    operator_id=f.operator_id,
                    language=f.language,
                )
            )
            return []
        if data.get("type") in ("stop", "hangup"):
            return self._stop()
        return []  # mod_audio_fork's other text messages carry nothing for us


PROTOCOLS: dict[str, type[IngestProtocol]] = {
    "plain": PlainProtocol,
    "twilio": TwilioProtocol,
    "audio_fork": AudioForkProtocol,
}


# --- Asterisk AudioSocket (TCP) ---------------------------------------------------------------------


class AudioSocketProtocol(IngestProtocol):
    """Asterisk AudioSocket: frames of 1 type byte + 2-byte big-endian length + payload, fed as raw
    TCP bytes. 0x00 hangup, 0x01 uuid (16 bytes), 0x03 DTMF digit, 0x10 signed linear 8 kHz mono,
    0xff error. DTMF is noted; unknown kinds are reported and skipped, never end the call."""

    name = "audiosocket"
    HANGUP, UUID, DTMF, AUDIO, ERROR = 0x00, 0x01, 0x03, 0x10, 0xFF

    PRE_UUID_FRAMES = 50  # frames a peer may send before its uuid (Asterisk sends the uuid first)

    def __init__(self, limits: ProtocolLimits | None = None) -> None:
        super().__init__(limits)
        self._buf = bytearray()
        self._early = 0
        self.dtmf: list[str] = []

    def feed(self, message: str | bytes) -> list[AudioChunk]:
        if isinstance(message, str):
            raise ProtocolError("AudioSocket is a binary protocol")
        self._buf.extend(message)
        chunks: list[AudioChunk] = []
        errors: list[ProtocolError] = []
        buf, pos = self._buf, 0  # frames are read at an offset, the buffer cut once: linear in the bytes
        while len(buf) - pos >= 3 and not self.ended:
            kind, length = buf[pos], int.from_bytes(buf[pos + 1 : pos + 3], "big")
            if len(buf) - pos < 3 + length:
                break
            payload = bytes(buf[pos + 3 : pos + 3 + length])
            pos += 3 + length
            try:
                chunks.extend(self._frame(kind, payload))
            except ProtocolError as exc:  # one bad frame: report it, keep the rest of the stream
                errors.append(exc)
                self._early += self.start is None
            if self._early > self.PRE_UUID_FRAMES:
                errors = [
                    ProtocolError(f"{self._early} frames before the uuid frame: not an AudioSocket peer", "not_started")
                ]
                self._stop()
        del buf[:pos]
        for err in errors:
            self.notices.append((err.code, str(err)))
        return chunks

    def _frame(self, kind: int, payload: bytes) -> list[AudioChunk]:
        handlers: dict[int, Callable[[bytes], list[AudioChunk]]] = {
            self.UUID: self._uuid,
            self.AUDIO: self._pcm,
            self.DTMF: self._dtmf,
            self.HANGUP: lambda _: self._stop(),
            self.ERROR: lambda _: self._stop(),
        }
        handler = handlers.get(kind)
        if handler is None:
            raise ProtocolError(
                f"unknown AudioSocket frame type 0x{kind:02x} ({len(payload)} bytes) skipped", "unknown_frame"
            )
        return handler(payload)

    def _uuid(self, payload: bytes) -> list[AudioChunk]:
        if len(payload) != 16:
            raise ProtocolError(f"AudioSocket uuid frame must be 16 bytes, got {len(payload)}")
        self._begin(StreamStart(payload.hex(), 8000, "s16le", ["unknown"]))
        return []

    def _dtmf(self, payload: bytes) -> list[AudioChunk]:
        digit = payload[:1].decode("ascii", "replace")
        self.dtmf.append(digit)
        return []

    @staticmethod
    def frame(kind: int, payload: bytes = b"") -> bytes:
        return struct.pack(">BH", kind, len(payload)) + payload
