"""Typed settings loaded from configs/*.yaml (pydantic validates; unknown keys are errors)."""

from __future__ import annotations

import os
import re
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# The one internal sample rate: every input is resampled to it, every stage reads it.
SAMPLE_RATE = 16000
# Default settings, playbooks and checklists ship inside the package, so `pip install` anywhere has them.
CONFIG_DIR = Path(str(files("callsense") / "configs"))
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
SAMPLES_DIR = Path(str(files("callsense") / "samples"))  # the sample calls, shipped in the package too


def data_dir() -> Path:
    """Where a server keeps its calls by default: $CALLSENSE_HOME/data, else ~/.local/share/callsense."""
    home = os.environ.get("CALLSENSE_HOME")
    if home:
        return Path(home) / "data"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "callsense"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSettings(_Strict):
    # "bundled" means the weights shipped in the installed packages (docs/models.md);
    # otherwise a local folder or a Hugging Face name (needs network on first use).
    whisper: str = "bundled"
    whisper_compute_type: str = "int8"
    # threads per Whisper decode: on the 2-core machine one thread decodes a window as fast as two (beam
    # search steps are too small to split) and leaves the other core to a second decode; live final p95
    # 1.87 -> 1.33-1.40 s, K = 6 calls max lag 2.78 -> 1.46 s (docs/changelog.md › Live latency)
    whisper_threads: int = 1
    # parallel Whisper decodes (one per call channel at most); 1 serialises all calls of a server
    whisper_workers: int = 2
    segmentation: str = "bundled"
    embedding: str = "bundled"
    text_embedder: str = "bundled"


class AsrSettings(_Strict):
    language: str | None = Field(None, description="ru, en, da, ... or null to detect per speaker")
    languages: list[str] = ["ru", "en", "da"]
    # finals decoded with this much of the speaker's previous finals as Whisper's prompt (whisper_streaming's
    # 200 characters): with beam 5 whole-call WER 0.159 -> 0.132 constructed, 0.170 -> 0.143 real calls;
    # 0 = off (docs/changelog.md › Speech recognition)
    prompt_chars: int = 200
    partial_interval_s: float = 1.5  # how often a partial is decoded while someone speaks
    partial_window_s: float = 10.0  # partials run Whisper's encoder on this window, not 30 s (about 6x cheaper)
    # finals that fit this window with 1 s to spare are encoded in it, longer ones in 30 s; 0 = always 30 s
    final_window_s: float = 15.0
    speculate_after_s: float = 0.4  # start the final's decode after this much silence (0 = off)
    min_silence_s: float = 0.8  # shorter pauses split sentences and cost Whisper context (WER), see docs/benchmarks.md
    max_utterance_s: float = 15.0
    # recordings (transcribe, analyze, audit): a speaker's turns packed into Whisper windows of up to
    # this many seconds, each window decoded once (live calls decode each turn as it ends)
    pack_s: float = 28.0
    # live finals of every call in a process are decoded as one batch: the oldest waits at most this
    # long for company (docs/benchmarks.md); 0: a final never waits, it only joins finals already queued
    batch_wait_ms: int = 50
    max_batch: int = 8
    vad_threshold: float = 0.4  # telephone-band speech scores lower in Silero than wideband
    # speech kept before and after what the VAD hears, as faster-whisper pads (400 ms): Silero hears a
    # telephone turn late and lets go early; 0.2 s lost first and last words on real calls (docs/benchmarks.md)
    speech_pad_s: float = 0.4
    no_speech_threshold: float = 0.6
    compression_ratio_threshold: float = 2.4  # above it a segment is checked for a repetition loop, not dropped
    log_prob_threshold: float = -1.0
    shed_lag_s: float = 1.0


class DiarizationSettings(_Strict):
    num_speakers: int | None = None
    max_speakers: int = 3
    clustering_threshold: float = 0.7
    stream_threshold: float = 0.7  # cosine distance beyond which a voice may open a new speaker (as offline)
    stream_latency_s: float = 1.5
    window_s: float = 5.0
    step_s: float = 0.5
    echo_dominance_db: float = 10.0
    # a server loads the mono-call diarizer before calls come (its first mono call would wait ~10 s);
    # false where only stereo calls come (telephony trunks): no child process, less memory and start-up
    preload: bool = True


class EmotionSettings(_Strict):
    uncertain_below: float = 0.45
    irony_hold_s: float = 10.0  # a wait this long before a turn is a negative event for irony
    smoothing: float = 0.5
    baseline_turns: int = 3


class CustomerStateSettings(_Strict):
    """The customer-state model (stages/customer_state.py). The text weights, decay and bias are a logistic
    regression on real support chats with human frustration labels (scripts/calibrate_customer_state.py);
    the voice weight is set by hand (no labelled angry speech to fit it on)."""

    # scripts/calibrate_customer_state.py --decay 0.9 on MAIA-DQE dev (65 chats, 696 customer turns); the
    # decay is the one whose held-out cue reaches most frustrated chats at 10% of calm ones (docs/benchmarks.md).
    # The complaint classifier's weight is negative: given how negative a turn reads, its `frustration` class
    # marks a plain report of a problem ("it didn't work") that calm customers make as often
    decay: float = Field(0.9, ge=0.0, lt=1.0, description="share of the earlier evidence a new turn keeps")
    bias: float = -3.26
    w_negative: float = 1.61
    w_positive: float = -1.24
    w_complaint: float = -0.17
    w_voice: float = 1.0  # by hand: voice arousal above the customer's baseline counts like half a negative turn
    w_escalation: float = 2.0  # by hand: a critical request or threat counts like a clearly negative turn
    cue_probability: float = Field(0.30, gt=0.0, lt=1.0, description="the cue to the operator from this probability")
    # ... and only once frustration shows in more than one turn: `cue_turns` of the customer's last
    # `cue_window` turns read negative (>= `cue_negative`); one sharp sentence in a calm chat is no cue
    cue_turns: int = Field(2, ge=1)
    cue_window: int = Field(4, ge=1)
    cue_negative: float = Field(0.5, ge=0.0, le=1.0)
    rearm_probability: float = Field(0.15, gt=0.0, lt=1.0, description="a new cue only after the state fell below this")


class DeliverySettings(_Strict):
    """Quiet cues about the operator's own delivery (stages/delivery.py); never an input to a score."""

    enabled: bool = True
    cooldown_s: float = Field(60.0, ge=0.0, description="at most one delivery cue this often")
    pace_factor: float = Field(1.4, gt=1.0, description="a turn this many times the operator's usual words/s")
    pace_min_turn_s: float = 3.0  # shorter turns say little about pace
    pace_baseline_turns: int = Field(3, ge=1, description="turns of the operator's own pace before any pace cue")
    monologue_s: float = Field(45.0, gt=0.0, description="the operator talking this long without the customer")
    talk_ratio: float = Field(0.7, gt=0.0, le=1.0, description="the operator's share of the talk that gives a cue")
    talk_ratio_after_s: float = 120.0  # ... judged only once the call is this long


class HintSettings(_Strict):
    cooldown_s: float = 20.0
    # the script checklist (report.audit_dir) ticked live on the operator's console as they speak
    live_checklist: bool = True
    delivery: DeliverySettings = DeliverySettings()
    silence_hold_s: float = 10.0
    # a critical escalation from the intent classifier alone (no pattern matched) needs this probability
    critical_probability: float = Field(0.7, gt=0.0, le=1.0)
    interruptions_warn: int = 3
    # A turn's level is judged on at least this much voice: one stressed word ("Bye!") reads louder
    # than sentences, whose unstressed syllables pull their mean level down.
    raised_voice_min_s: float = 1.0
    repeat_similarity: float = 0.9
    repeat_overlap: float = 0.5  # share of content words the two turns have in common
    repeat_after_s: float = 45.0  # a request counts as repeated when asked again this much later
    recover_turns: int = 3  # calm customer turns in a row that release a latched critical escalation
    customer_state: CustomerStateSettings = CustomerStateSettings()
    intents_dir: Path = CONFIG_DIR / "intents"
    playbooks_dir: Path = CONFIG_DIR / "playbooks"


class TokenGrant(_Strict):
    """What a token may do. Operators see (and stream) only their own calls; an `ingest` token is
    bound to a trunk or operator: its calls belong to `operator_id`, or to one of `operators` the
    client names. A call's operator never comes from the client's JSON alone."""

    role: Literal["supervisor", "operator", "ingest"]
    operator_id: str | None = None
    operators: list[str] = []


class AudioHookKey(_Strict):
    """One Genesys AudioHook integration's credentials: its API key (the key of `audiohook.keys`) and
    client secret. Calls it opens belong to `operator_id`, or to one of `operators` that the session's
    customConfig names (as an ingest token's)."""

    secret: str | None = Field(None, repr=False)  # the client secret as Genesys shows it (base64)
    secret_file: Path | None = None  # ... or the file that holds it (a mounted secret)
    organization_id: str | None = None  # only this Genesys organization may use the key
    operator_id: str | None = None
    operators: list[str] = []

    def client_secret(self) -> bytes:
        """The HMAC key; ValueError with what to fix when it is missing or not base64."""
        import base64
        import binascii

        text = self.secret_file.read_text().strip() if self.secret_file else self.secret
        if not text:
            raise ValueError("an AudioHook key needs its client secret: set secret or secret_file")
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"the AudioHook client secret is not base64 ({exc}); paste it as Genesys shows it") from exc


class AudioHookSettings(_Strict):
    """Genesys AudioHook on /audiohook: requests are signed (HTTP message signatures, HMAC-SHA256)."""

    keys: dict[str, AudioHookKey] = {}
    max_signature_age_s: float = 30.0  # a signed request older than this (or a nonce seen before) is refused


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = 8765
    log_format: Literal["text", "json"] = "text"  # json: one object per line, for a log collector
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    tokens: dict[str, TokenGrant] = {}
    max_message_bytes: int = 1 << 20  # a larger websocket message closes the connection (1009)
    max_console_message_bytes: int = 4096  # feedback and resume messages from consoles
    max_calls: int = 8  # live calls at once; more are refused (close 1013) instead of slowing every call
    max_channels: int = 4  # per call
    max_frame_s: float = 5.0  # audio in one frame
    # audio waiting per call before ingest stops reading the source: seconds of every channel together
    call_queue_s: float = 40.0
    console_queue: int = 500
    replay_events: int = 5000  # per call, for consoles that resume
    resume_window_s: float = 300.0  # an ended call stays resumable this long, then lives only on disk
    idle_timeout_s: float = 15.0  # no message from a source this long ends its call
    ping_interval_s: float = 20.0  # websocket pings (kept NAT and proxies open); a missing pong never closes
    shutdown_timeout_s: float = 30.0  # SIGTERM: calls in flight get this long to finish, then end as interrupted
    audiohook: AudioHookSettings = AudioHookSettings()
    audiosocket_peers: list[str] = []  # addresses/networks allowed besides loopback (AudioSocket has no auth)
    audiosocket_operator: str | None = None  # whose calls AudioSocket calls are
    # AudioSocket has no authentication, and a PBX streams without pause: a connection that delivers
    # less than this share of real time (over the time spent waiting for it, after the grace) is ended,
    # so trickling peers cannot hold the call slots
    audiosocket_min_rate: float = 0.2
    audiosocket_grace_s: float = 10.0
    certfile: Path | None = None
    keyfile: Path | None = None
    # under CALLSENSE_HOME (or ~/.local/share/callsense), never the working directory
    store: Path = Field(default_factory=lambda: data_dir() / "calls.sqlite")


class ClusterSettings(_Strict):
    """Gateways and workers on several machines, joined by Redis Streams (`serve --role gateway`,
    `callsense worker`). Without a broker the server is one process, as before."""

    broker: str | None = None  # redis://[user:password@]host:port/db, or rediss:// for TLS
    # signs every entry gateways and workers write (the same on all; CALLSENSE_CLUSTER_SECRET wins)
    secret: str | None = Field(None, repr=False)
    source_timeout_s: float = 30.0  # a worker ends a call (incomplete) after this long without input
    assign_timeout_s: float = 10.0  # a call no worker takes this long is refused (1013)
    heartbeat_s: float = 0.5  # a worker renews its claim on its calls this often
    takeover_after_s: float = 2.5  # a call whose worker stopped renewing this long is taken over
    max_load: float = 0.85  # a worker takes a new call only while its CPU use is under this share of its cores
    cores: float | None = None  # a worker's cores (default: its container's CPU quota, else the CPUs it may run on)
    max_lag_s: float = 1.0  # ... and every call it has is within this of live
    max_calls: int = 16  # hard cap per worker, whatever the load
    backlog_s: float = 30.0  # audio a gateway may queue for a call before it stops reading the source
    events_maxlen: int = 20000  # the cluster-wide event stream gateways tail (approximate trim)
    ended_ttl_s: float = 300.0  # a finished call's streams stay this long for consoles that resume
    # a worker's /health (and /metrics, supervisor token) on this port for liveness/readiness probes
    # (None: none; 0: any free port, printed at start)
    health_port: int | None = None
    # the host gateways reach that port on, to fetch the worker's reports (default: the bound host, or
    # this machine's address when bound to all interfaces)
    advertise_host: str | None = None


class CallProfile(_Strict):
    """How a call is processed. Two profiles: `live` (calls as they happen: serve, worker, stream,
    demo) and `recording` (files: transcribe, analyze, audit). Each setting is named once, here."""

    partials: bool = Field(description="partial transcripts while someone speaks (the operator reads along)")
    beam_size: int = Field(5, ge=1, description="Whisper's beam for finals (beam 1 → 5: live WER 0.199 → 0.169)")
    pack: bool = Field(
        description="a speaker's turns decoded together in windows of asr.pack_s, one encoder pass per window, "
        "instead of each turn as it ends (a recording's finals need not come at once)"
    )
    revise: bool = Field(
        description="stereo calls: finals also decoded again in such packs in the background (lowest CPU "
        "priority), the revised ones replacing them in the record and the consoles"
    )
    eager_voice: bool = Field(
        description="the voice measured as the audio arrives (the work spread over the call), not when a turn is scored"
    )
    diarizer_process: bool = Field(
        description="mono calls diarized in the process's diarizer child, off the calls' threads, not on the call's thread"
    )


PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "live": {"partials": True, "pack": False, "revise": True, "eager_voice": True, "diarizer_process": True},
    "recording": {"partials": False, "pack": True, "revise": False, "eager_voice": False, "diarizer_process": False},
}


class Profiles(_Strict):
    live: CallProfile = CallProfile(**PROFILE_DEFAULTS["live"])
    recording: CallProfile = CallProfile(**PROFILE_DEFAULTS["recording"])

    @model_validator(mode="before")
    @classmethod
    def _over_defaults(cls, data: Any) -> Any:
        """A config names only what it changes (`profiles: {recording: {beam_size: 3}}`)."""
        if not isinstance(data, dict):
            return data
        defaults = PROFILE_DEFAULTS
        return {k: {**defaults[k], **v} if k in defaults and isinstance(v, dict) else v for k, v in data.items()}


ProfileName = Literal["live", "recording"]


class ReportSettings(_Strict):
    # personal data is redacted in everything written to disk or exported, and in supervisors' views
    redact_pii: bool = True
    redact_operator_view: bool = False  # the call's own operator sees the live call raw unless this is set
    keep_audio: bool = False
    retention_days: int = 90
    hold_s: float = 5.0
    audit_dir: Path = CONFIG_DIR / "audit"

    @model_validator(mode="after")
    def _checklists_compile(self) -> ReportSettings:
        """A checklist's patterns are compiled with the config, not when the first call needs them."""
        for path in sorted(self.audit_dir.glob("*.yaml")) if self.audit_dir.is_dir() else []:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            items = data.get("items", []) if isinstance(data, dict) else []
            named = [("closing", data.get("closing"))] if isinstance(data, dict) else []
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict):
                    named += [(f"{item.get('id')}.{key}", item.get(key)) for key in ("pattern", "before_pattern")]
            for where, pattern in named:
                try:
                    re.compile(pattern or "")
                except (re.error, TypeError) as exc:
                    raise ValueError(f"{path}: {where}: not a regular expression ({exc})") from None
        return self


class Settings(_Strict):
    channels: list[Literal["operator", "customer", "unknown"]] = ["operator", "customer"]
    chunk_ms: int = 100
    models: ModelSettings = ModelSettings()
    asr: AsrSettings = AsrSettings()
    diarization: DiarizationSettings = DiarizationSettings()
    emotion: EmotionSettings = EmotionSettings()
    hints: HintSettings = HintSettings()
    profiles: Profiles = Profiles()
    server: ServerSettings = ServerSettings()
    cluster: ClusterSettings = ClusterSettings()
    report: ReportSettings = ReportSettings()


class ConfigError(Exception):
    """A config file is missing or invalid; the message says where and why."""


ENV_PREFIX = "CALLSENSE_"


def load_settings(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """The config file (the shipped defaults without one), then the environment (`env_overrides`), then
    `overrides` (command-line options)."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    for keys, value in env_overrides():
        node = data
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[keys[-1]] = value  # a mapping from the environment replaces the file's (tokens: no dev tokens left)
    _merge(data, overrides or {})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path} (with CALLSENSE_* variables): invalid settings:\n{_explain(exc)}") from exc


def env_overrides(environ: dict[str, str] | None = None) -> list[tuple[list[str], Any]]:
    """Settings from the environment, for what differs between deployments: `CALLSENSE_SERVER__PORT=9000`
    sets server.port (`__` between levels, values read as YAML: numbers, true/false, lists, mappings);
    `CALLSENSE_CLUSTER__SECRET_FILE=/run/secrets/cluster` takes the value from that file, as text (secrets
    stay out of the environment and of process listings). Variables without `__` (CALLSENSE_HOME, ...) are not
    settings."""
    out: list[tuple[list[str], Any]] = []
    for name, raw in sorted((environ if environ is not None else os.environ).items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        keys = name[len(ENV_PREFIX) :].lower().split("__")
        if keys[-1].endswith("_file"):  # a secret (text as it is) or, for a mapping such as tokens, YAML
            keys[-1] = keys[-1].removesuffix("_file")
            try:
                text = Path(raw).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"{name}: cannot read {raw}: {exc.strerror or exc}") from exc
            out.append((keys, text if _is_text(keys) else yaml.safe_load(text)))
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        out.append((keys, value))
    return out


def _annotation(keys: list[str] | tuple[Any, ...]) -> Any:
    """The type of the setting at `keys` (a model for a section), None where no setting is."""
    model: Any = Settings
    for key in keys:
        field = getattr(model, "model_fields", {}).get(str(key))
        if field is None:
            return None
        model = field.annotation
    return model


def _is_text(keys: list[str]) -> bool:
    """Whether the setting at `keys` holds text (a password must not be read as YAML)."""
    model = _annotation(keys)
    return model is None or ("str" in str(model) and "dict" not in str(model))


def _explain(exc: ValidationError) -> str:
    """pydantic's errors in a line each; an unknown key with the nearest valid one."""
    import difflib

    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        line = f"  {where}: {err['msg']}"
        if err["type"] == "extra_forbidden" and where in MOVED:
            line = f"  {where}: moved to {MOVED[where]}"
        elif err["type"] == "extra_forbidden":
            known = list(getattr(_annotation(err["loc"][:-1]), "model_fields", {}))
            near = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            line = f"  {where}: unknown setting" + (f" - did you mean {near[0]!r}?" if near else "")
        lines.append(line)
    return "\n".join(lines)


# settings that became a call profile's (a config written for an earlier version names them)
MOVED = {
    "asr.beam_size": "profiles.live.beam_size",
    "asr.offline_beam_size": "profiles.recording.beam_size",
    "asr.revise": "profiles.live.revise",
    "diarization.own_process": "profiles.live.diarizer_process",
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
