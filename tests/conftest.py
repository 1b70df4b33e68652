"""Shared fixtures: the real clips in tests/data (the suite needs nothing outside the repository),
real models loaded once per session, one live server, and a wait for a condition (never a fixed sleep:
the suite runs on machines of any speed)."""

from __future__ import annotations

import asyncio
import os
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message=r"\s*torchcodec")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"  # built by scripts/make_test_data.py
from callsense.config import SAMPLES_DIR as SAMPLES  # noqa: E402


@pytest.fixture(scope="session")
def data() -> Path:
    return DATA


@pytest.fixture(scope="session")
def samples() -> Path:
    """The sample calls shipped in the package."""
    return SAMPLES


@pytest.fixture
def clip(tmp_path) -> Callable[..., Path]:
    """`clip(sample, seconds, name)`: the first `seconds` of a sample call as a file `name` under the test's folder
    (real speech; a test that needs a whole recording, not a whole call, pays for less decoding)."""
    import soundfile as sf

    def cut(sample: str, seconds: float, name: str | None = None) -> Path:
        audio, rate = sf.read(SAMPLES / sample, frames=int(seconds * sf.info(SAMPLES / sample).samplerate))
        out = tmp_path / (name or f"{Path(sample).stem}_{seconds:g}s.flac")
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(out, audio, rate)
        return out

    return cut


Check = Callable[[], object]


@pytest.fixture(scope="session")
def eventually() -> Callable[..., Awaitable[object]]:
    """`await eventually(check, what, timeout)`: polls `check` until it returns something true and returns
    that; at the deadline the test fails saying what it waited for and what `check` gave last."""

    async def wait(check: Check, what: str, timeout: float = 180.0, every: float = 0.1) -> object:
        deadline = time.monotonic() + timeout
        while not (got := check()):
            if time.monotonic() > deadline:
                pytest.fail(f"waited {timeout:.0f} s for {what}; last seen: {got!r}")
            await asyncio.sleep(every)
        return got

    return wait


@pytest.fixture
def settings(tmp_path):
    from callsense.config import load_settings

    s = load_settings()
    s.server.store = tmp_path / "store" / "calls.sqlite"
    return s


# A test that asks for these loads the real models: it is slow wherever it lives (`make check` leaves it out).
MODEL_FIXTURES = {"models", "server"}


# The longest modules first (seconds of one quiet run, `--durations=0`): in two processes (`make test`,
# pytest-xdist, a module at a time) the light ones then fill in at the end instead of one long module
# running alone there.
HEAVY_FIRST = (
    "test_cluster",
    "test_cli",
    "test_service",
    "test_pipeline",
    "test_diarization",
    "test_transcription",
    "test_web",
    "test_server",
    "test_audiohook",
    "test_canary",
    "test_fuzz",
    "test_decode_gate",
    "test_broker",
    "test_load_meter",
)


def _weight(item: pytest.Item) -> int:
    name = item.path.stem
    return HEAVY_FIRST.index(name) if name in HEAVY_FIRST else len(HEAVY_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    items.sort(key=_weight)  # stable: a module's own tests keep their order


TOKENS = {
    "sup": {"role": "supervisor"},
    "op1": {"role": "operator", "operator_id": "op-1"},
    "op2": {"role": "operator", "operator_id": "op-2"},
    "trunk": {"role": "ingest", "operators": ["op-1", "op-2"]},
}


@pytest.fixture
def server(settings, models):
    """A live server (not yet listening: `await server.start(host, 0)`) with a supervisor, two operators
    and an ingest trunk for them."""
    from callsense.service.server import CallServer

    settings.server.tokens = TOKENS
    return CallServer(settings, models)


@pytest.fixture(scope="session")
def models():
    from callsense.config import load_settings
    from callsense.registry import Models

    return Models(load_settings())
