"""Recordings: libsndfile decodes (via soundfile: wav, flac, ogg, mp3) block by block into chunks,
optionally paced as a live call would arrive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from callsense.audio.codecs import AudioChunk, AudioError, Chunker
from callsense.config import SAMPLE_RATE


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
            self.error = f"{self.info.path.name}: decoding stopped at {chunker.samples_out / SAMPLE_RATE:.1f} s ({exc})"

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


async def aiter_file(
    path: str | Path, chunk_ms: int = 100, realtime: bool = True, speed: float = 1.0
) -> AsyncIterator[AudioChunk]:
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
