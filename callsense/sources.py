"""Audio sources: everything that brings call audio in, as timestamped 16 kHz float32 chunks per channel.

File decoding is libsndfile's (via soundfile: wav, flac, ogg, mp3), resampling is soxr's
streaming resampler, G.711 (mu-law/A-law) is decoded by table. The websocket and AudioSocket
protocol parsers are plain classes that turn messages into chunks, so the server and the tests
share them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

TARGET_RATE = 16000
ENCODINGS = ("s16le", "mulaw", "alaw", "f32le")


class AudioError(ValueError):
    """Audio that cannot be used; the message says what is wrong and what to do."""


@dataclass
class AudioChunk:
    audio: np.ndarray  # (channels, samples) float32 at 16 kHz
    start: float  # stream time of the first sample, seconds

    @property
    def duration(self) -> float:
        return self.audio.shape[1] / TARGET_RATE

    @property
    def end(self) -> float:
        return self.start + self.duration


# --- G.711 -----------------------------------------------------------------------------------


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.uint8)
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = ((mantissa.astype(np.int32) << 3) + 0x84) << exponent
    sample = np.where(u & 0x80, 0x84 - magnitude, magnitude - 0x84)
    return (sample / 32768.0).astype(np.float32)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.uint8) ^ 0x55
    exponent = (a >> 4) & 0x07
    mantissa = (a & 0x0F).astype(np.int32)
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    sample = np.where(a & 0x80, magnitude, -magnitude)
    return (sample / 32768.0).astype(np.float32)


_TABLES = {"mulaw": _ulaw_table(), "alaw": _alaw_table()}


def decode_pcm(data: bytes, encoding: str, channels: int = 1) -> np.ndarray:
    """Raw bytes -> (channels, samples) float32 in [-1, 1]. Interleaved channels."""
    if encoding not in ENCODINGS:
        raise AudioError(f"unknown encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    width = {"s16le": 2, "f32le": 4}.get(encoding, 1)
    frame = width * channels
    if len(data) % frame:
        raise AudioError(
            f"frame of {len(data)} bytes is not a whole number of {encoding} samples "
            f"for {channels} channel(s) ({frame} bytes each)"
        )
    if encoding == "s16le":
        pcm = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    elif encoding == "f32le":
        pcm = np.frombuffer(data, dtype="<f4").astype(np.float32)
    else:
        pcm = _TABLES[encoding][np.frombuffer(data, dtype=np.uint8)]
    return pcm.reshape(-1, channels).T


def encode_mulaw(audio: np.ndarray) -> bytes:
    """float32 mono -> mu-law bytes (for feeding test calls through the Twilio protocol)."""
    x = np.clip(audio, -1.0, 1.0) * 32767.0
    sign = np.where(x < 0, 0x80, 0x00)
    mag = np.minimum(np.abs(x).astype(np.int32) + 0x84, 0x7FFF)
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


# --- resampling ------------------------------------------------------------------------------


class Resampler:
    """Streaming resampler (soxr, HQ) for any input rate to 16 kHz, any number of channels."""

    def __init__(self, in_rate: int, channels: int) -> None:
        if not 4000 <= in_rate <= 192000:
            raise AudioError(f"sample rate {in_rate} Hz is outside 4000-192000 Hz; check the declared rate")
        self.in_rate, self.channels = in_rate, channels
        self._stream = None if in_rate == TARGET_RATE else soxr.ResampleStream(
            in_rate, TARGET_RATE, channels, dtype="float32", quality="HQ"
        )

    def __call__(self, audio: np.ndarray, last: bool = False) -> np.ndarray:
        """(channels, n) at the input rate -> (channels, m) at 16 kHz."""
        if self._stream is None:
            return np.ascontiguousarray(audio, dtype=np.float32)
        out = self._stream.resample_chunk(np.ascontiguousarray(audio.T, dtype=np.float32), last=last)
        return out.T.reshape(self.channels, -1)


class Chunker:
    """Turns decoded input blocks into AudioChunks with stream timestamps, resampling on the way."""

    def __init__(self, in_rate: int, channels: int) -> None:
        self.resampler = Resampler(in_rate, channels)
        self.channels = channels
        self.samples_out = 0

    def push(self, audio: np.ndarray, last: bool = False) -> AudioChunk | None:
        out = self.resampler(audio, last=last)
        if out.shape[1] == 0:
            return None
        chunk = AudioChunk(out, self.samples_out / TARGET_RATE)
        self.samples_out += out.shape[1]
        return chunk


# --- files -----------------------------------------------------------------------------------


@dataclass
class FileInfo:
    path: Path
    sample_rate: int
    channels: int
    duration: float


def probe(path: str | Path) -> FileInfo:
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise AudioError(f"{path}: cannot decode audio ({exc}); supported: wav, flac, ogg, mp3") from exc
    if info.frames <= 0:
        raise AudioError(f"{path}: the file holds no audio (0 samples)")
    return FileInfo(path, info.samplerate, info.channels, info.frames / info.samplerate)


class FileSource:
    """Decodes a file block by block; `realtime=True` paces the chunks as a live call would arrive."""

    def __init__(self, path: str | Path, chunk_ms: int = 100, realtime: bool = False, speed: float = 1.0) -> None:
        self.info = probe(path)
        self.chunk_ms, self.realtime, self.speed = chunk_ms, realtime, speed
        self.error: str | None = None  # set when decoding stopped early (truncated file)

    @property
    def channels(self) -> int:
        return self.info.channels

    def __iter__(self) -> Iterator[AudioChunk]:
        block = max(1, self.info.sample_rate * self.chunk_ms // 1000)
        chunker = Chunker(self.info.sample_rate, self.info.channels)
        t0 = time.monotonic()
        try:
            with sf.SoundFile(str(self.info.path)) as fh:
                while True:
                    data = fh.read(block, dtype="float32", always_2d=True)
                    last = len(data) < block
                    chunk = chunker.push(data.T, last=last)
                    if chunk is not None:
                        self._pace(t0, chunk.end)
                        yield chunk
                    if last:
                        break
        except sf.LibsndfileError as exc:
            # A truncated or damaged file: keep what was decoded, report the rest.
            self.error = f"{self.info.path.name}: decoding stopped at {chunker.samples_out / TARGET_RATE:.1f} s ({exc})"

    def _pace(self, t0: float, stream_t: float) -> None:
        if self.realtime:
            ahead = stream_t / self.speed - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)


def read_audio(path: str | Path) -> np.ndarray:
    """Whole file as (channels, samples) float32 at 16 kHz, through the same streaming decoder."""
    src = FileSource(path, chunk_ms=1000)
    chunks = [c.audio for c in src]
    if src.error:
        raise AudioError(src.error)
    return np.concatenate(chunks, axis=1) if chunks else np.zeros((src.channels, 0), np.float32)


async def aiter_file(path: str | Path, chunk_ms: int = 100, realtime: bool = True,
                     speed: float = 1.0) -> AsyncIterator[AudioChunk]:
    """Async version of FileSource for the server side and `callsense stream`."""
    src = FileSource(path, chunk_ms=chunk_ms, realtime=False)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for chunk in src:
        if realtime:
            ahead = chunk.end / speed - (loop.time() - t0)
            if ahead > 0:
                await asyncio.sleep(ahead)
        yield chunk
    if src.error:
        raise AudioError(src.error)


# --- live protocols --------------------------------------------------------------------------


@dataclass
class StreamStart:
    call_id: str
    sample_rate: int
    encoding: str
    roles: list[str]
    operator_id: str | None = None
    language: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ProtocolError(ValueError):
    """A malformed message from a live source; the connection may stay usable."""


class IngestProtocol:
    """Base for websocket ingest: `feed(message)` returns chunks; `start` is set once known."""

    name = "base"

    def __init__(self) -> None:
        self.start: StreamStart | None = None
        self.ended = False
        self._chunker: Chunker | None = None

    def _begin(self, start: StreamStart) -> None:
        if start.encoding not in ENCODINGS:
            raise ProtocolError(f"unknown encoding {start.encoding!r}; use one of {', '.join(ENCODINGS)}")
        try:
            self._chunker = Chunker(start.sample_rate, len(start.roles))
        except AudioError as exc:
            raise ProtocolError(str(exc)) from exc
        self.start = start

    def _pcm(self, data: bytes) -> list[AudioChunk]:
        if self.start is None or self._chunker is None:
            raise ProtocolError("audio arrived before the start message")
        try:
            pcm = decode_pcm(data, self.start.encoding, len(self.start.roles))
        except AudioError as exc:
            raise ProtocolError(str(exc)) from exc
        chunk = self._chunker.push(pcm)
        return [chunk] if chunk else []

    def feed(self, message: str | bytes) -> list[AudioChunk]:
        raise NotImplementedError

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
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"text frame is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ProtocolError("text frame must be a JSON object")
        return data


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
            try:
                roles = data.get("channels") or ["unknown"]
                self._begin(StreamStart(
                    call_id=str(data["call_id"]), sample_rate=int(data["sample_rate"]),
                    encoding=str(data.get("encoding", "s16le")), roles=[str(r) for r in roles],
                    operator_id=data.get("operator_id"), language=data.get("language"),
                ))
            except (KeyError, TypeError, ValueError) as exc:
                raise ProtocolError(f"start message needs call_id and sample_rate: {exc}") from exc
            return []
        if kind == "stop":
            return self._stop()
        raise ProtocolError(f"unknown message type {kind!r}; expected start, stop or binary audio")


class TwilioProtocol(IngestProtocol):
    """Twilio Media Streams: connected/start/media/stop; base64 mu-law 8 kHz; tracks -> roles."""

    name = "twilio"
    TRACK_ROLES = {"outbound": "operator", "inbound": "customer"}

    def __init__(self) -> None:
        super().__init__()
        self._tracks: list[str] = []

    def feed(self, message: str | bytes) -> list[AudioChunk]:
        if isinstance(message, bytes):
            raise ProtocolError("Twilio Media Streams sends text frames only")
        data = self._json(message)
        event = data.get("event")
        if event == "connected":
            return []
        if event == "start":
            meta = data.get("start") or {}
            tracks = meta.get("tracks") or ["inbound"]
            self._tracks = ["outbound", "inbound"] if len(tracks) > 1 else list(tracks)
            self._pending: dict[str, list[np.ndarray]] = {t: [] for t in self._tracks}
            fmt = meta.get("mediaFormat") or {}
            params = meta.get("customParameters") or {}
            self._begin(StreamStart(
                call_id=str(meta.get("callSid") or data.get("streamSid") or "twilio"),
                sample_rate=int(fmt.get("sampleRate", 8000)), encoding="mulaw",
                roles=[self.TRACK_ROLES.get(t, "unknown") for t in self._tracks],
                operator_id=params.get("operator_id"), language=params.get("language"),
            ))
            return []
        if event == "media":
            return self._media(data.get("media") or {})
        if event == "stop":
            return self._stop()
        if event in ("mark", "dtmf"):
            return []
        raise ProtocolError(f"unknown Twilio event {event!r}")

    def _media(self, media: dict[str, Any]) -> list[AudioChunk]:
        if self.start is None or self._chunker is None:
            raise ProtocolError("media arrived before start")
        try:
            payload = base64.b64decode(media["payload"], validate=True)
        except (KeyError, ValueError) as exc:
            raise ProtocolError(f"media payload is not valid base64: {exc}") from exc
        track = media.get("track", self._tracks[0])
        if track not in self._tracks:
            raise ProtocolError(f"media for unknown track {track!r}")
        # Tracks arrive as separate frames: buffer each, emit the part every track has reached.
        self._pending[track].append(decode_pcm(payload, "mulaw", 1)[0])
        ready = min(sum(a.size for a in self._pending[t]) for t in self._tracks)
        if ready == 0:
            return []
        block = np.zeros((len(self._tracks), ready), np.float32)
        for ch, t in enumerate(self._tracks):
            data = np.concatenate(self._pending[t])
            block[ch] = data[:ready]
            self._pending[t] = [data[ready:]]
        chunk = self._chunker.push(block)
        return [chunk] if chunk else []


class AudioForkProtocol(IngestProtocol):
    """FreeSWITCH mod_audio_fork: first text frame is JSON metadata, then binary L16 frames;
    stereo = caller (customer) left, callee (operator) right unless the metadata says otherwise."""

    name = "audio_fork"

    def feed(self, message: str | bytes) -> list[AudioChunk]:
        if isinstance(message, bytes):
            return self._pcm(message)
        data = self._json(message)
        if self.start is None:
            channels = int(data.get("channels", 1))
            roles = data.get("roles") or (["customer", "operator"] if channels == 2 else ["unknown"])
            self._begin(StreamStart(
                call_id=str(data.get("uuid") or data.get("call_id") or "audio_fork"),
                sample_rate=int(data.get("sampleRate", data.get("sample_rate", 8000))),
                encoding="s16le", roles=list(roles), operator_id=data.get("operator_id"),
                language=data.get("language"),
            ))
            return []
        if data.get("type") in ("stop", "hangup"):
            return self._stop()
        return []


PROTOCOLS: dict[str, type[IngestProtocol]] = {
    "plain": PlainProtocol, "twilio": TwilioProtocol, "audio_fork": AudioForkProtocol,
}


class AudioSocketParser:
    """Asterisk AudioSocket (TCP): frames of 1 type byte + 2-byte big-endian length + payload.
    0x01 uuid, 0x10 signed linear 8 kHz mono, 0x00 hangup, 0xff error."""

    HANGUP, UUID, AUDIO, ERROR = 0x00, 0x01, 0x10, 0xFF

    def __init__(self) -> None:
        self._buf = bytearray()
        self.uuid: str | None = None
        self.ended = False
        self._chunker = Chunker(8000, 1)

    def feed(self, data: bytes) -> list[AudioChunk]:
        self._buf.extend(data)
        chunks: list[AudioChunk] = []
        while len(self._buf) >= 3 and not self.ended:
            kind, length = self._buf[0], struct.unpack(">H", self._buf[1:3])[0]
            if len(self._buf) < 3 + length:
                break
            payload = bytes(self._buf[3 : 3 + length])
            del self._buf[: 3 + length]
            chunks.extend(self._frame(kind, payload))
        return chunks

    def _frame(self, kind: int, payload: bytes) -> list[AudioChunk]:
        if kind == self.UUID:
            if len(payload) != 16:
                raise ProtocolError(f"AudioSocket uuid frame must be 16 bytes, got {len(payload)}")
            self.uuid = payload.hex()
            return []
        if kind == self.AUDIO:
            chunk = self._chunker.push(decode_pcm(payload, "s16le", 1))
            return [chunk] if chunk else []
        if kind in (self.HANGUP, self.ERROR):
            self.ended = True
            tail = self._chunker.push(np.zeros((1, 0), np.float32), last=True)  # resampler's tail
            return [tail] if tail else []
        raise ProtocolError(f"unknown AudioSocket frame type 0x{kind:02x}")

    @staticmethod
    def frame(kind: int, payload: bytes = b"") -> bytes:
        return struct.pack(">BH", kind, len(payload)) + payload
