import json

import pytest

from callsense.audio.files import FileSource
from callsense.config import SAMPLES_DIR as SAMPLES
from callsense.pipeline import CallPipeline
from callsense.reports.report import build_report, write_report

pytestmark = pytest.mark.slow
SAMPLE = "ru_call_stereo"


class Run:
    """One pass of the stereo sample through the live pipeline: the record it keeps, every event it gave
    as it went (revisions included), and whether the call's stages left memory at once when it ended."""

    def __init__(self, models) -> None:
        import gc
        import weakref

        from callsense.config import load_settings

        self.given: list = []
        pipe = CallPipeline(load_settings(), models, ["operator", "customer"], call_id="t1")
        self.record = pipe.run(FileSource(SAMPLES / f"{SAMPLE}.flac", chunk_ms=100), self.given.append)
        gone = weakref.ref(pipe.asr[0])
        gc.disable()
        try:
            del pipe
            self.freed = gone() is None
        finally:
            gc.enable()


@pytest.fixture(scope="module")
def stereo_run(models) -> Run:
    return Run(models)


@pytest.fixture(scope="module")
def stereo_events(stereo_run):
    return stereo_run.record


def test_revised_finals_replace_the_live_ones_in_the_record(stereo_run):
    record, given = stereo_run.record, stereo_run.given
    finals = [e for e in record if e.type == "transcript_final"]
    ids = [f.utterance_id for f in finals]
    assert len(ids) == len(set(ids)), "one final per turn in the record"
    revisions = [e for e in given if e.type == "transcript_final" and e.revision]
    assert revisions, "an idle machine revises a stereo call's turns"
    kept = {f.utterance_id: f for f in finals}
    for rev in revisions:
        live = [e for e in given if e.type == "transcript_final" and e.utterance_id == rev.utterance_id]
        assert live[0].revision == 0 and live[0].seq < rev.seq  # the live final came first
        if rev.text:
            assert kept[rev.utterance_id].text == rev.text and kept[rev.utterance_id].role == live[0].role
        else:
            assert rev.utterance_id not in kept, "an empty revision withdraws the live final"
    # a finished call's stages go at once, not at the next full garbage collection: a reviser that
    # referred back to its transcriber made a cycle, and a server's memory climbed call by call
    assert stereo_run.freed, "nothing of the call is left for the cycle collector"


def test_events_are_ordered_and_complete(stereo_events):
    seqs = [e.seq for e in stereo_events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    live = [e for e in stereo_events if not (e.type == "transcript_final" and e.revision)]
    assert live[0].type == "call_started" and live[-1].type == "call_ended"  # revisions may follow it
    assert {e.call_id for e in stereo_events} == {"t1"}
    times = [e.t for e in stereo_events]
    assert times == sorted(times)


def test_both_parties_are_transcribed_on_their_channel(stereo_events):

    ref = json.loads((SAMPLES / f"{SAMPLE}.json").read_text())
    finals = [e for e in stereo_events if e.type == "transcript_final"]
    for role in ("operator", "customer"):
        ours = [f for f in finals if f.role == role]
        theirs = [t for t in ref["turns"] if t["role"] == role]
        assert ours, role
        # most of every final is this party's own reference speech: no phantom turns from the other channel
        for f in ours:
            covered = sum(max(0.0, min(f.end, t["end"]) - max(f.start, t["start"])) for t in theirs)
            assert covered >= 0.5 * (f.end - f.start), (role, f.text)
    emotions = [e for e in stereo_events if e.type == "emotion"]
    assert {e.utterance_id for e in emotions} == {f.utterance_id for f in finals}


def test_hold_and_overtalk_are_noticed_and_calm_call_not_escalated(stereo_events):
    hints = [e for e in stereo_events if e.type == "hint"]
    assert "long_silence" in {h.reason for h in hints}
    assert not [h for h in hints if h.severity == "critical"]
    overlaps = [e for e in stereo_events if e.type == "overlap"]
    assert overlaps and all(o.interrupter == "ch0" for o in overlaps)  # the operator talks over the customer


def test_report_from_the_same_events(stereo_events, settings, tmp_path):
    report = build_report(stereo_events, settings, SAMPLE)
    m = report["metrics"]
    assert m["silences"] and max(s["s"] for s in m["silences"]) >= 10
    assert m["interruptions"].get("operator", 0) >= 1
    conduct = report["scores"]["operator_conduct"]
    assert conduct["uses_emotion"] is False and conduct["score"] == round(conduct["checklist"] + conduct["conduct"])
    assert {c["id"] for c in report["compliance"]} >= {"greeting", "farewell"}
    out = write_report(stereo_events, tmp_path / "r", settings, SAMPLE)
    html = (out / "report.html").read_text()
    assert "<svg" in html and "quality-score" in html
    assert json.loads((out / "report.json").read_text())["call_id"] == "t1"


def test_the_checklist_is_ticked_live_with_the_operators_words(stereo_run, settings):
    from callsense.stages.checklist import load_items

    updates = [e for e in stereo_run.given if e.type == "checklist"]
    assert updates and updates[0].t < 1.0, "the operator sees the script from the call's start"
    assert {i.title for i in updates[-1].items} == {i.title for i in load_items(settings.report.audit_dir, "ru")}
    said = {e.text[:160] for e in stereo_run.given if e.type == "transcript_final" and e.role == "operator"}
    for update in updates:
        assert all(update.evidence[i.id]["text"] in said for i in update.items if i.status == "done")
    seen = {i.id: [u_i.status for u in updates for u_i in u.items if u_i.id == i.id] for i in updates[-1].items}
    for item, statuses in seen.items():
        if statuses[-1] == "missed":
            assert "due" in statuses, f"{item}: reminded before it was missed"
    last = {i.id: i.status for i in updates[-1].items if not i.at_end}
    report = {c["id"]: c["passed"] for c in build_report(stereo_run.record, settings, SAMPLE)["compliance"]}
    for item, status in last.items():
        if status in ("done", "failed", "missed"):
            assert report[item] == (status == "done"), f"{item}: one checklist, live and after the call"


def test_mono_call_is_diarized_and_roles_are_marked_as_guesses(models):
    from callsense.config import load_settings

    settings = load_settings()
    settings.diarization.max_speakers = 2
    pipe = CallPipeline(
        settings, models, ["unknown"], call_id="m1", profile=settings.profiles.live.model_copy(update={"partials": False})
    )
    events = pipe.run(FileSource(SAMPLES / "en_call_mono.flac", chunk_ms=100))
    finals = [e for e in events if e.type == "transcript_final"]
    ref = json.loads((SAMPLES / "en_call_mono.json").read_text())["turns"]
    assert len({f.speaker for f in finals}) == 2
    assert {f.role for f in finals} == {"operator", "customer"}
    assert all(f.role_confidence < 1.0 for f in finals)
    # each diarized speaker maps to one reference party for most of its words
    for spk in {f.speaker for f in finals}:
        parties = []
        for f in finals:
            if f.speaker == spk:
                mid = (f.start + f.end) / 2
                parties += [t["role"] for t in ref if t["start"] - 0.5 <= mid <= t["end"] + 0.5]
        assert parties and max(parties.count(p) for p in set(parties)) >= 0.75 * len(parties)


def test_enrolled_voiceprint_decides_roles_on_a_live_mono_call(models, data, monkeypatch, tmp_path):
    """Wiring: `callsense enroll` -> voiceprint -> the mono call's roles (the voice wins over the
    conversation's guess: here the enrolled voice is the one the conversation would call customer)."""
    from callsense.audio.files import read_audio
    from callsense.config import load_settings
    from callsense.stages.diarization import enroll

    monkeypatch.setenv("CALLSENSE_HOME", str(tmp_path))
    enroll("op-jfk", [read_audio(data / "asr" / "en_faster_whisper_testdata" / "audio" / "jfk.flac")[0]], models.embedding)
    settings = load_settings()
    settings.diarization.max_speakers = 2
    pipe = CallPipeline(settings, models, ["unknown"], operator_id="op-jfk", profile="recording")
    finals = [e for e in pipe.run(FileSource(SAMPLES / "en_call_mono.flac", chunk_ms=100)) if e.type == "transcript_final"]
    ref = json.loads((SAMPLES / "en_call_mono.json").read_text())["turns"]
    jfk = [t for t in ref if t["role"] == "customer"]  # the reference's customer is JFK's voice
    in_jfk = [f for f in finals if any(t["start"] - 0.5 <= (f.start + f.end) / 2 <= t["end"] + 0.5 for t in jfk)]
    assert in_jfk and sum(f.role == "operator" for f in in_jfk) >= 0.75 * len(in_jfk)
    assert pipe.speakers.roles.role_of(in_jfk[0].speaker).method == "voiceprint"


def test_escalation_sample_shows_the_hints_end_to_end(models):
    """Every hop at once on the demo's constructed call: intents, the hold (a recording's silences are
    found between its turns, with the announcement before them), the operator talking over the
    customer (overlap -> hint), a red flag, the latched risk."""
    from callsense.config import load_settings

    pipe = CallPipeline(load_settings(), models, ["operator", "customer"], profile="recording")
    events = pipe.run(FileSource(SAMPLES / "en_escalation_call.flac", chunk_ms=500))
    reasons = {e.reason for e in events if e.type == "hint"}
    assert {"supervisor_request", "close_account", "operator_interrupting", "long_silence", "operator_tone"} <= reasons
    assert any(e.type == "risk" and e.latched for e in events)
    hold = next(e for e in events if e.type == "hint" and e.reason == "long_silence")
    # the 14 s hold after "please hold" (18.4 s to 32.4 s in the reference)
    assert 17.5 < hold.evidence["since"] < 19.5 and hold.evidence["hold_announced"] and not hold.evidence["ongoing"]


def test_a_call_taken_over_at_a_checkpoint_goes_on_with_the_same_words(models):
    """Another worker resuming from a checkpoint decodes the rest of the call as the first worker
    does: same utterances, same language, same words (each final prompted with what its speaker said
    before, which the new worker only knows from the checkpoint)."""
    from callsense.config import load_settings

    settings = load_settings(overrides={"asr": {"prompt_chars": 200}})
    chunks = list(FileSource(SAMPLES / f"{SAMPLE}.flac", chunk_ms=100))
    first = CallPipeline(settings, models, ["operator", "customer"], call_id="t1")
    events, at, cut = first.start(), None, 0
    for i, chunk in enumerate(chunks):
        events += first.push(chunk, 0.0)
        finals = [e for e in events if e.type == "transcript_final"]
        if at is None and len(finals) >= 4 and (at := first.checkpoint()) is not None:
            before, cut = list(events), i + 1
    events += first.finish()
    assert at is not None and {f.role for f in finals[:4]} == {"operator", "customer"}
    second = CallPipeline(settings, models, ["operator", "customer"], call_id="t1")
    second.resume(at, before[-1].seq, before)
    after = [e for c in chunks[cut:] for e in second.push(c, 0.0)] + second.finish()

    def finals_of(evs):
        return {e.utterance_id: (e.language, e.text) for e in evs if e.type == "transcript_final"}

    assert len(finals_of(after)) >= 4, "the takeover came mid-call"
    assert finals_of(before + after) == finals_of(events)
