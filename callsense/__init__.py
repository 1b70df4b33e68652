"""callsense: live call analytics on a CPU.

    from callsense import CallPipeline, Models, load_settings, FileSource
    settings = load_settings()
    events = CallPipeline(settings, Models(settings), ["operator", "customer"]).run(FileSource("call.flac"))

Names are imported lazily, so `import callsense` stays cheap and loads no model.
"""

from __future__ import annotations

import warnings
from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# pyannote.audio warns on import that torchcodec (its file decoder) cannot load; callsense hands it audio
# it decoded itself (soundfile), so every worker's and diarizer child's start printed 6 lines for nothing
warnings.filterwarnings("ignore", message=r"\s*torchcodec is not installed")

_EXPORTS = {
    "CallPipeline": "callsense.pipeline",
    "Models": "callsense.registry",
    "load_settings": "callsense.config",
    "Settings": "callsense.config",
    "FileSource": "callsense.audio.files",
    "AudioChunk": "callsense.audio.codecs",
    "parse_event": "callsense.events",
    "json_schema": "callsense.events",
    "CallServer": "callsense.service.server",
    "stream_file": "callsense.service.client",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'callsense' has no attribute {name!r}")
