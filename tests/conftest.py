"""Shared fixtures: the real clips in tests/data (the suite needs nothing outside the repository),
real models loaded once per session."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message=r"\s*torchcodec")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"  # built by scripts/make_test_data.py
SAMPLES = ROOT / "callsense" / "samples"


@pytest.fixture(scope="session")
def data() -> Path:
    return DATA


@pytest.fixture
def settings(tmp_path):
    from callsense.config import load_settings

    s = load_settings()
    s.server.store = tmp_path / "store" / "calls.sqlite"
    return s


@pytest.fixture(scope="session")
def models():
    from callsense.config import load_settings
    from callsense.registry import Models

    return Models(load_settings())
