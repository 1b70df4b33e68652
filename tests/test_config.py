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


def test_settings_from_the_environment_and_secrets_from_files(tmp_path, monkeypatch):
    """What differs between deployments comes from CALLSENSE_SECTION__KEY variables (YAML values); a
    mapping replaces the file's (no development token survives), a secret comes from a file."""
    secret = tmp_path / "cluster-secret"
    secret.write_text("s3cr3t: not yaml\n")
    monkeypatch.setenv("CALLSENSE_SERVER__PORT", "9001")
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("ops-lead: {role: supervisor}\n")
    monkeypatch.setenv("CALLSENSE_SERVER__TOKENS_FILE", str(tokens))
    monkeypatch.setenv("CALLSENSE_CLUSTER__SECRET_FILE", str(secret))
    monkeypatch.setenv("CALLSENSE_REPORT__REDACT_PII", "true")
    s = load_settings()
    assert s.server.port == 9001 and list(s.server.tokens) == ["ops-lead"]
    assert s.cluster.secret == "s3cr3t: not yaml" and s.report.redact_pii is True
    assert load_settings(overrides={"server": {"port": 9002}}).server.port == 9002, "the command line wins"
    monkeypatch.delenv("CALLSENSE_SERVER__TOKENS_FILE")
    monkeypatch.setenv("CALLSENSE_SERVER__TOKENS", "{a1: {role: operator, operator_id: op-7}}")
    assert load_settings().server.tokens["a1"].operator_id == "op-7"
    monkeypatch.setenv("CALLSENSE_SERVER__PROT", "1")
    with pytest.raises(ConfigError, match="server.prot: unknown setting - did you mean 'port'"):
        load_settings()


def test_the_default_store_is_never_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("CALLSENSE_HOME", str(tmp_path))
    assert load_settings().server.store == tmp_path / "data" / "calls.sqlite"
    monkeypatch.delenv("CALLSENSE_HOME")
    assert load_settings().server.store.is_absolute()


def test_a_call_profile_names_only_what_it_changes(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("profiles:\n  recording: {beam_size: 2}\n")
    profiles = load_settings(cfg).profiles
    assert profiles.recording.beam_size == 2 and profiles.recording.pack and not profiles.recording.partials
    assert profiles.live == load_settings().profiles.live  # the other profile keeps its defaults
    cfg.write_text("profiles:\n  batch: {beam_size: 2}\n")
    with pytest.raises(ConfigError, match="profiles.batch"):
        load_settings(cfg)


def test_a_setting_that_became_a_profile_setting_says_where_it_went(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("asr:\n  offline_beam_size: 3\ndiarization:\n  own_process: false\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert "asr.offline_beam_size: moved to profiles.recording.beam_size" in str(err.value)
    assert "diarization.own_process: moved to profiles.live.diarizer_process" in str(err.value)


def test_a_checklist_pattern_that_is_not_a_regex_fails_with_the_config(tmp_path):
    """Found when the settings load (serve, analyze), not when the first call needs the checklist."""
    audit = tmp_path / "audit"
    audit.mkdir()
    (audit / "en.yaml").write_text('items:\n  - {id: greet, title: Greeting, pattern: "(hello"}\n', encoding="utf-8")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"report:\n  audit_dir: {audit}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"en.yaml: greet.pattern: not a regular expression"):
        load_settings(cfg)
