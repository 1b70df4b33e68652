"""Audio in memory: chunks, G.711 tables and the streaming resampler to the internal rate.

G.711 (mu-law/A-law) is decoded by table; resampling is soxr's streaming resampler, so a live
stream and a file go through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

from callsense.config import SAMPLE_RATE

ENCODINGS = ("s16le", "mulaw", "alaw", "f32le")


class AudioError(ValueError):
    """Audio that cannot be used; the message says what is wrong and what to do."""


@dataclass
class AudioChunk:
    audio: np.ndarray  # (channels, samples) float32 at 16 kHz
    start: float  # stream time of the first sample, seconds

    @property
    def duration(self) -> float:
        return self.audio.shape[1] / SAMPLE_RATE

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


def repair_non_finite(pcm: np.ndarray) -> int:
    """Float audio may carry NaN or inf (a broken encoder); a single one poisons a whole utterance in
    the VAD and Whisper. They become silence, the rest is clipped to [-1, 1]; returns how many."""
    bad = ~np.isfinite(pcm)
    count = int(bad.sum())
    if count:
        pcm[bad] = 0.0
    np.clip(pcm, -1.0, 1.0, out=pcm)
    return count


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
        self._stream = (
            None
            if in_rate == SAMPLE_RATE
            else soxr.ResampleStream(in_rate, SAMPLE_RATE, channels, dtype="float32", quality="HQ")
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
        chunk = AudioChunk(out, self.samples_out / SAMPLE_RATE)
        self.samples_out += out.shape[1]
        return chunk
