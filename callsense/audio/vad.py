"""Streaming voice activity detection with the Silero VAD v6 model that faster-whisper ships.

`SileroVAD` keeps the recurrent state between calls, so audio can be fed in chunks of any
size as it arrives; `Endpointer` turns frame probabilities into utterance boundaries.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np

from callsense.config import SAMPLE_RATE

FRAME = 512  # samples at 16 kHz (32 ms), what the model expects
CONTEXT = 64


class SileroVAD:
    def __init__(self) -> None:
        import onnxruntime

        from callsense.models import vad_path

        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        self._session = onnxruntime.InferenceSession(str(vad_path()), providers=["CPUExecutionProvider"], sess_options=opts)
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def state(self) -> dict[str, str]:
        """The model's recurrent state and unread samples (a few KB): another worker taking the call
        over goes on with exactly the same frames and probabilities."""
        parts = {"h": self._h, "c": self._c, "context": self._context, "pending": self._pending}
        return {k: base64.b64encode(np.ascontiguousarray(v, np.float32).tobytes()).decode() for k, v in parts.items()}

    def restore(self, state: dict[str, str]) -> None:
        def arr(key: str) -> np.ndarray:
            return np.frombuffer(base64.b64decode(state[key]), np.float32).copy()

        self._h, self._c = arr("h").reshape(1, 1, 128), arr("c").reshape(1, 1, 128)
        self._context, self._pending = arr("context"), arr("pending")

    @property
    def pending(self) -> int:
        """Samples received but not yet in a complete frame."""
        return self._pending.size

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability for each complete 32 ms frame in `audio` (plus leftovers from before)."""
        audio = np.concatenate([self._pending, audio.astype(np.float32, copy=False)])
        n = len(audio) // FRAME
        self._pending = audio[n * FRAME :]
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        frames = audio[: n * FRAME].reshape(n, FRAME)
        contexts = np.vstack([self._context[None, :], frames[:-1, -CONTEXT:]])
        batch = np.concatenate([contexts, frames], axis=1)
        out, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
        self._context = frames[-1, -CONTEXT:].copy()
        return np.asarray(out, dtype=np.float32).reshape(-1)


@dataclass
class Boundary:
    kind: str  # "start" or "end"
    sample: int  # absolute sample index at 16 kHz


class Endpointer:
    """Hysteresis over frame probabilities: speech starts above `threshold`, ends after
    `min_silence_s` below `threshold - 0.15`; boundaries are padded by `pad_s`."""

    def __init__(self, threshold: float = 0.5, min_silence_s: float = 0.5, pad_s: float = 0.2) -> None:
        self.on = threshold
        self.off = max(0.05, threshold - 0.15)
        self.min_silence = int(min_silence_s * SAMPLE_RATE / FRAME)
        self.pad = int(pad_s * SAMPLE_RATE)
        self.frame_index = 0
        self.in_speech = False
        self._silent_frames = 0

    def seek(self, frame: int) -> None:
        """Continue at frame `frame` (a call resumed by another worker), outside speech."""
        self.frame_index, self.in_speech, self._silent_frames = frame, False, 0

    def update(self, probs: np.ndarray) -> list[Boundary]:
        out: list[Boundary] = []
        for p in probs:
            i = self.frame_index
            self.frame_index += 1
            if not self.in_speech:
                if p >= self.on:
                    self.in_speech = True
                    self._silent_frames = 0
                    out.append(Boundary("start", max(0, i * FRAME - self.pad)))
                continue
            if p < self.off:
                self._silent_frames += 1
                if self._silent_frames >= self.min_silence:
                    self.in_speech = False
                    end_frame = i - self._silent_frames + 1
                    out.append(Boundary("end", end_frame * FRAME + self.pad))
            else:
                self._silent_frames = 0
        return out

    @property
    def silent_frames(self) -> int:
        """Frames of silence in a row inside the current utterance (0 while speech goes on)."""
        return self._silent_frames if self.in_speech else 0
