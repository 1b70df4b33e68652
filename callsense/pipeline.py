"""The call pipeline: wiring only. It builds one call's stages and passes each item down them.

    chunk ─▶ speakers.hear (mono: streaming diarization) ─▶ echo gate ─▶ asr[channel] (VAD + Whisper)
    transcript ─▶ speakers (who and which role) ─▶ final ─▶ overlaps, emotion ─▶ hints

Every path (live server, `callsense stream`, `transcribe`, `analyze`, `audit`) drives this same
class, chunk by chunk; a call profile (`profiles.live` or `profiles.recording` in the settings)
says how. The pipeline is typed against the stage protocols (`stages.base`: `Stage`, `Listener`,
`Checkpointed`) and stamps each event it returns with the call's sequence number and stream time
(a cluster worker renumbers them once more after a takeover, see `service.worker`). Models and
process-wide tallies are shared by every call of a process (`callsense.registry.Models`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from callsense.audio.codecs import AudioChunk
from callsense.config import SAMPLE_RATE, CallProfile, ProfileName, Settings
from callsense.events import (
    CallEnded,
    CallStarted,
    Emotion,
    Error,
    Event,
    Hint,
    HintFeedback,
    Metrics,
    Overlap,
    Sequencer,
    SupervisorNote,
    TranscriptFinal,
)
from callsense.hooks import Hooks, TimingHook
from callsense.registry import Models
from callsense.stages.base import (
    AudioGate,
    HintStage,
    ListeningStage,
    RiskStage,
    Stage,
    Transcriber,
    TranscriberState,
    Transcript,
)
from callsense.stages.checklist import ScriptStage
from callsense.stages.customer_state import CustomerState
from callsense.stages.emotion import EmotionStage
from callsense.stages.escalation import EscalationState
from callsense.stages.hints import HintEngine
from callsense.stages.overlaps import OverlapDetector
from callsense.stages.revision import Reviser
from callsense.stages.speakers import (
    ChannelGate,
    ChannelSpeakers,
    Diarizer,
    MonoSpeakers,
    RoleAssigner,
    load_voiceprint,
)
from callsense.stages.text_emotion import TextEmbedder, embed_early
from callsense.stages.transcription import StreamingTranscriber
from callsense.stages.whisper import WhisperDecoder


class StageFailed(Exception):
    """A stage raised; `events` are what the call produced before it, already stamped."""

    def __init__(self, message: str, events: list[Event]) -> None:
        super().__init__(message)
        self.events = events


@dataclass
class Checkpoint:
    """Where another worker can take a live call over: a moment nobody was speaking, so no
    utterance is split. Stages start fresh from there; ids and times go on."""

    samples: int
    utterances: list[int]
    hints: int
    vad: list[dict[str, str]] = field(default_factory=list)  # each channel's VAD state (same utterances)
    gate: str = ""  # the echo gate's incomplete frame (same frames)
    asr: list[dict[str, Any]] = field(default_factory=list)  # each channel's language and prompt (same words)


def roles_for(channels: int, settings: Settings) -> list[str]:
    """Roles of a recording's channels: one mixed channel is diarized; stereo follows `settings.channels`."""
    if channels == 1:
        return ["unknown"]
    roles = [str(r) for r in settings.channels][:channels]
    return roles + ["unknown"] * (channels - len(roles))


class CallPipeline:
    def __init__(
        self,
        settings: Settings,
        models: Models,
        roles: list[str],
        call_id: str | None = None,
        operator_id: str | None = None,
        language: str | None = None,
        source: str = "file",
        hooks: Hooks | None = None,
        profile: ProfileName | CallProfile = "live",
    ) -> None:
        """`profile`: how the call is processed, by name (`settings.profiles.live` / `.recording`) or
        given whole (a variant of one)."""
        self.settings, self.models = settings, models
        self.profile = profile if isinstance(profile, CallProfile) else getattr(settings.profiles, profile)
        self.call_id = call_id or uuid.uuid4().hex[:12]
        self.roles, self.operator_id, self.source = roles, operator_id, source
        self.mono = len(roles) == 1 and roles[0] == "unknown"
        self.language = language or settings.asr.language
        self.seq = Sequencer(self.call_id)
        self.timing = TimingHook()
        self.hooks = hooks or Hooks()
        self.hooks.add(self.timing)
        # the stages, in the order audio meets them
        self.speakers: ListeningStage[Transcript, Transcript] = self._speakers()
        self.echo_gate: AudioGate = ChannelGate(settings.diarization.echo_dominance_db)
        self.decoder = WhisperDecoder(
            models.whisper, settings.asr, gate=models.decode_gate, beam_size=self.profile.beam_size
        )
        self.asr: list[Transcriber] = [self._transcriber(ch, role) for ch, role in enumerate(roles)]
        self.overlaps: Stage[TranscriptFinal, Overlap] = OverlapDetector()
        self.emotion: ListeningStage[TranscriptFinal, Emotion] = EmotionStage(
            settings.emotion, models.speech_emotion, models.text_emotion, len(roles), eager=self.profile.eager_voice
        )
        customer = CustomerState(settings.hints.customer_state)  # the hints keep it, the risk reads it
        self.hints: HintStage = HintEngine(
            settings.hints,
            language=(self.language or "en"),
            embed=TextEmbedder(settings.models),
            silence_at_end=self.profile.pack,
            customer_state=customer,
        )
        self.escalation: RiskStage = EscalationState(customer, settings.hints.recover_turns)
        # the script checklist, ticked as the operator speaks (the report judges it with the same rules)
        self.script: ScriptStage | None = (
            ScriptStage(settings.report.audit_dir, self.language) if settings.hints.live_checklist else None
        )
        # what the call has said so far (no partials: they are superseded by finals)
        self.events: list[Event] = []
        self.samples = 0
        self.shedding = False
        self._started_wall = time.monotonic()
        self._last_metrics_t = 0.0
        self._ended = False
        self._set_partials(self.profile.partials)

    def _transcriber(self, channel: int, role: str) -> StreamingTranscriber:
        # mono finals are split between speakers by diarization: a revision would not map onto them
        revise = self.profile.revise and not self.profile.pack and not self.mono
        reviser = (
            Reviser(self.decoder, self.settings.asr.pack_s, self.models.background_whisper, self.models.revisions)
            if revise
            else None
        )
        models = self.settings.models  # not `self`: a stage holding the pipeline would make a cycle
        return StreamingTranscriber(
            self.decoder,
            self.settings.asr,
            speaker="S" if self.mono else f"ch{channel}",
            role=role,  # type: ignore[arg-type]
            language=self.language,
            pack=self.profile.pack,
            reviser=reviser,
            channel=channel,
            # the words' embedding starts in the pause, with the speculative final
            on_speculation=lambda text: embed_early(text, models),
        )

    def _speakers(self) -> ChannelSpeakers | MonoSpeakers:
        if not self.mono:
            return ChannelSpeakers()
        voiceprint = load_voiceprint(self.operator_id) if self.operator_id else None
        return MonoSpeakers(self._diarizer(), RoleAssigner(voiceprint=voiceprint))

    def _diarizer(self) -> Diarizer:
        """Live: in the process's diarizer child, so torch does not share the call's cores with
        Whisper; a recording (one call per process): on this thread (`profile.diarizer_process`)."""
        if self.profile.diarizer_process:
            return self.models.diarizer_host.open()
        from callsense.stages.diarization import StreamingDiarizer  # pyannote and torch: mono calls only

        return StreamingDiarizer(
            self.settings.models,
            self.settings.diarization,
            segmentation=self.models.segmentation,
            embedding=self.models.embedding,
        )

    # -- the call, chunk by chunk --

    def start(self) -> list[Event]:
        return self._emit(
            [
                CallStarted(
                    sample_rate=SAMPLE_RATE,
                    channels=list(self.roles),
                    source=self.source,
                    operator_id=self.operator_id,
                    language=self.language,
                )
            ]
        )

    def push(self, chunk: AudioChunk, arrived: float | None = None) -> list[Event]:
        """Process one chunk; `arrived` is the monotonic time it was received (for lag)."""
        audio = chunk.audio
        if audio.shape[0] != len(self.roles):
            return self._emit(
                [Error(code="channels", message=f"chunk has {audio.shape[0]} channels, call has {len(self.roles)}")]
            )
        self.samples += audio.shape[1]
        with self.hooks.step("diarization"):
            self.speakers.hear(audio)
        self.emotion.hear(audio)
        gated = self.echo_gate(audio)
        with self.hooks.step("asr"):
            transcripts = [ev for ch, asr in enumerate(self.asr) for ev in asr.push(gated[ch])]
        turns = self._turns(transcripts)
        holds = self.hints.tick(
            self.stream_time, any(asr.speaking for asr in self.asr), max(asr.heard_until for asr in self.asr)
        )
        # a recording's finals come in packs, long after their words: its checklist moves with them only
        script = self.script.tick(self.stream_time) if self.script is not None and not self.profile.pack else []
        return self._emit([*turns, *holds, *script, *self._metrics(arrived)], arrived)

    def finish(self, reason: str = "hangup") -> list[Event]:
        if self._ended:
            return []
        self._ended = True
        self.speakers.flush()
        tail = self.echo_gate.flush()
        transcripts = [
            ev for ch, asr in enumerate(self.asr) for ev in [*(asr.push(tail[ch]) if tail is not None else []), *asr.flush()]
        ]
        for asr in self.asr:
            asr.end_revisions()
        self.decoder.close()
        turns = self._turns(transcripts)
        ended = CallEnded(duration_s=round(self.stream_time, 3), reason=reason)
        return self._emit([*turns, *self.hints.flush(), ended])

    def revisions(self, wait_s: float | None = None) -> list[Event]:
        """After `finish`: the call's last revised finals, which follow its `call_ended` (the live
        stream is complete; the record is, after these). Waits at most `wait_s` (None: until done)."""
        deadline = None if wait_s is None else time.monotonic() + wait_s
        return self._emit(self._turns([ev for asr in self.asr for ev in asr.revise_rest(deadline)]))

    def feedback(self, hint_id: str, action: str, by: str) -> list[Event]:
        """The operator accepted or dismissed a hint: recorded in the call like any event."""
        fb = HintFeedback(hint_id=hint_id, action=action, by=by)
        return self._emit([fb, *self.escalation.push(fb)])

    def note(self, text: str, joining: bool, by: str) -> list[Event]:
        """A supervisor's note to the operator (or "I'm joining"): recorded in the call like any event."""
        return self._emit([SupervisorNote(text=text, joining=joining, by=by)])

    def fail(self, code: str, message: str) -> list[Event]:
        """Something outside the stages went wrong for this call: an `error` event in its stream."""
        return self._emit([Error(code=code, message=message)])

    def abort(self, code: str, message: str) -> list[Event]:
        """End the call now without running the stages again (they may be what failed)."""
        self._ended = True
        self.decoder.close()
        return self._emit(
            [Error(code=code, message=message, fatal=True), CallEnded(duration_s=round(self.stream_time, 3), reason=code)]
        )

    def run(self, chunks: Iterable[AudioChunk], on_event: Callable[[Event], None] | None = None) -> list[Event]:
        """Whole source through the pipeline (batch paths use this; same code as live)."""
        emit = on_event or (lambda ev: None)
        for ev in self.start():
            emit(ev)
        for chunk in chunks:
            for ev in self.push(chunk, time.monotonic()):
                emit(ev)
        for ev in self.finish():  # the live stream ends before the last revisions are waited for
            emit(ev)
        for ev in self.revisions():
            emit(ev)
        return self.events

    @property
    def stream_time(self) -> float:
        return self.samples / SAMPLE_RATE

    # -- handing a live call to another worker --

    def checkpoint(self) -> Checkpoint | None:
        """A point to resume this call from, if nobody is speaking now."""
        if self._ended or any(asr.speaking for asr in self.asr):
            return None
        states = [asr.state() for asr in self.asr]
        return Checkpoint(
            self.samples,
            [s.utterances for s in states],
            self.hints.state(),
            [s.vad or {} for s in states],
            self.echo_gate.state(),
            [s.decoding or {} for s in states],
        )

    def resume(self, at: Checkpoint, after_seq: int, history: Sequence[Event] = ()) -> None:
        """Continue a call another worker started, from `at`; events are numbered after `after_seq`.
        What was said before stays in the consoles and the store. The escalation state is rebuilt
        from the call's `history` (a latched escalation stays latched); the other stages' history
        (speaker baselines, diarization clusters) starts again here."""
        for ev in history:
            if isinstance(ev, Emotion | Hint | HintFeedback):
                self.escalation.push(ev)
            elif isinstance(ev, TranscriptFinal) and self.script is not None:
                self.script.push(ev)  # what was ticked stays ticked
        self.samples = at.samples
        self.seq.restart(after_seq)
        if at.gate:
            self.echo_gate.restore(at.gate)
        heard = at.samples - self.echo_gate.pending  # what the transcribers had of it: the gate holds the rest
        for ch, (asr, done) in enumerate(zip(self.asr, at.utterances, strict=True)):
            asr.restore(TranscriberState(heard, done, at.vad[ch] if at.vad else None, at.asr[ch] if at.asr else None))
        self.speakers.seek(at.samples)
        self.emotion.seek(at.samples)
        self.hints.restore(at.hints)
        self._last_metrics_t = self.stream_time

    def announce(self, event: Event) -> list[Event]:
        """An event from outside the stages (the service's), stamped like the others."""
        return self._emit([event])

    # -- transcripts down the stages --

    def _turns(self, transcripts: Sequence[Transcript]) -> list[Event]:
        out: list[Event] = []
        try:
            for ev in transcripts:
                if isinstance(ev, TranscriptFinal) and ev.revision:
                    out.append(self._revised(ev))  # the record is corrected; live signals stand
                    continue
                for turn in self.speakers.push(ev):
                    out.append(turn)
                    if isinstance(turn, TranscriptFinal):
                        out.extend(self._on_final(turn))
        except Exception as exc:  # a stage failed: what came before it (the transcript) is not lost
            raise StageFailed(f"{type(exc).__name__}: {exc}", self._emit(out)) from exc
        return out

    def _revised(self, rev: TranscriptFinal) -> TranscriptFinal:
        """A revised final as the live one it replaces (its role and speaker as assigned then)."""
        i = self._final_index(rev.utterance_id)
        if i is None:
            return rev  # words only the revision heard: a final of its own
        live = self.events[i]
        assert isinstance(live, TranscriptFinal)
        return live.model_copy(
            update={
                k: getattr(rev, k) for k in ("text", "words", "start", "end", "revision", "avg_logprob", "no_speech_prob")
            }
        )

    def _final_index(self, utterance_id: str) -> int | None:
        """Where the call's record holds the final of `utterance_id` (recent ones are found first)."""
        for i in range(len(self.events) - 1, -1, -1):
            ev = self.events[i]
            if isinstance(ev, TranscriptFinal) and ev.utterance_id == utterance_id:
                return i
        return None

    def _on_final(self, fin: TranscriptFinal) -> list[Event]:
        overlaps = self.overlaps.push(fin)
        with self.hooks.step("emotion"):
            emotions = self.emotion.push(fin)
        for emo in emotions:
            emo.evidence["scoring_ms"] = round(self.timing.last["emotion"] * 1000, 1)
        with self.hooks.step("hints"):
            items: list[TranscriptFinal | Emotion | Overlap] = [fin, *emotions, *overlaps]
            hints = [h for item in items for h in self.hints.push(item)]
        signals: list[Emotion | Hint] = [*emotions, *hints]
        risk = [r for item in signals for r in self.escalation.push(item)]
        script = self.script.push(fin) if self.script is not None else []
        return [*overlaps, *emotions, *hints, *risk, *script]

    # -- lag and load shedding --

    def _set_partials(self, on: bool) -> None:
        for asr in self.asr:
            asr.set_partials(on)

    def _metrics(self, arrived: float | None) -> list[Event]:
        if arrived is None or self.stream_time - self._last_metrics_t < 1.0:
            return []
        self._last_metrics_t = self.stream_time
        lag = time.monotonic() - arrived
        shed_at = self.settings.asr.shed_lag_s
        # shed partials while behind; resume once lag is back under half the threshold
        self.shedding = lag > shed_at or (self.shedding and lag > shed_at / 2)
        self._set_partials(self.profile.partials and not self.shedding)
        wall = time.monotonic() - self._started_wall
        return [
            Metrics(
                lag_s=round(max(lag, 0.0), 3),
                rtf=round(self.timing.busy_s() / max(self.stream_time, 1e-6), 3),
                shedding=self.shedding,
                optional_decodes_skipped=self.models.decode_gate.skipped,
                revisions_skipped=self.models.revisions.skipped + self.models.revisions.dropped,
                shed_reason=f"lag {lag:.1f} s over {shed_at:.1f} s: partial transcripts paused" if self.shedding else None,
                stage_ms={k: round(v * 1000, 1) for k, v in self.timing.total.items()} | {"wall_ms": round(wall * 1000)},
            )
        ]

    def _emit(self, events: list[Event], arrived: float | None = None) -> list[Event]:
        now = time.monotonic()
        for ev in events:
            self.seq.stamp(ev)
            ev.arrived_at(arrived if arrived is not None else now)
            ev.t = round(self.stream_time, 3)
            if isinstance(ev, TranscriptFinal) and ev.revision:
                self._record_revision(ev)
            elif ev.type != "transcript_partial":
                self.events.append(ev)
        return events

    def _record_revision(self, rev: TranscriptFinal) -> None:
        """The call's record keeps one final per utterance: the revision replaces the live one (an
        empty one withdraws it), in the order it was given (the record stays in `seq` order)."""
        i = self._final_index(rev.utterance_id)
        if i is not None:
            del self.events[i]
        if rev.text:
            self.events.append(rev)


def warm_up(models: Models, settings: Settings, mono: bool = False) -> None:
    """Load the models and run each once, so the first call does not pay for initialisation."""
    from concurrent.futures import ThreadPoolExecutor

    from callsense.stages.prosody import features

    if models.warmed:
        return
    tone = (0.1 * np.sin(np.arange(SAMPLE_RATE) * 2 * np.pi * 220 / SAMPLE_RATE)).astype(np.float32)
    diarizer = None
    if settings.profiles.live.diarizer_process and settings.diarization.preload:  # its child loads meanwhile
        diarizer = models.diarizer_host.open()
        diarizer.push(tone)
    elif mono and settings.diarization.preload:
        _ = models.segmentation, models.embedding
    whisper = models.whisper
    workers = settings.models.whisper_workers
    with ThreadPoolExecutor(workers) as pool:  # warm every worker replica
        list(pool.map(lambda _: list(whisper.transcribe(tone, language="en", beam_size=1)[0]), range(workers)))
    models.text_emotion.score(["hello"])
    features(tone)  # librosa's YIN is JIT-compiled on first use (about a second)
    _warm_text(settings)
    # a throwaway call: the stage modules' sessions and first-use paths
    CallPipeline(settings, models, ["operator", "customer"], source="warm-up").run([AudioChunk(np.stack([tone, tone]), 0.0)])
    if diarizer is not None:  # ready before calls come: loading it beside a call would slow the call
        diarizer.wait(timeout=120.0)
    models.warmed = True


def _warm_text(settings: Settings) -> None:
    """The intent classifiers (fitted on first use), the name recognisers and pymorphy3's dictionary."""
    from callsense.models import english_ner, russian_ner
    from callsense.stages.intents import classifier_for
    from callsense.stages.phrases import morph

    for role in ("customer", "operator"):
        if settings.hints.intents_dir.exists():
            classifier_for(settings.hints.intents_dir, role, TextEmbedder(settings.models))
    if settings.report.redact_pii:
        english_ner(), russian_ner()
    morph()
