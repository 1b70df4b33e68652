import pytest

from callsense.config import ConfigError, load_settings


def test_default_config_loads_with_dev_tokens():
    s = load_settings()
    assert s.server.tokens["dev-supervisor"].role == "supervisor"
    assert s.models.whisper == "bundled"


def test_unknown_key_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("asr:\n  langauge: ru\n")
    with pytest.raises(ConfigError, match="langauge"):
        load_settings(bad)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")
