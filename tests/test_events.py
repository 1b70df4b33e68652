import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from callsense.events import SCHEMA_VERSION, Emotion, Hint, Sequencer, TranscriptFinal, json_schema, parse_event


def test_schema_lists_every_event_type():
    schema = json.dumps(json_schema())
    for kind in (
        "call_started",
        "transcript_partial",
        "transcript_final",
        "emotion",
        "hint",
        "metrics",
        "call_ended",
        "error",
        "overlap",
        "hint_feedback",
    ):
        assert f'"{kind}"' in schema
    assert SCHEMA_VERSION in json_schema()["title"]


def test_round_trip_and_sequence():
    seq = Sequencer("c1")
    events = [
        seq.stamp(TranscriptFinal(speaker="ch0", role="operator", start=0, end=1, text="hi")),
        seq.stamp(Emotion(speaker="ch0", start=0, end=1, valence=0.2, arousal=0.1, label="neutral", confidence=0.7)),
        seq.stamp(Hint(hint_id="h1", severity="critical", reason="supervisor_request", title="t")),
    ]
    assert [e.seq for e in events] == [1, 2, 3]
    for ev in events:
        again = parse_event(ev.model_dump_json())
        assert again == ev and again.call_id == "c1"


def test_unknown_type_and_bad_fields_are_rejected():
    with pytest.raises(ValidationError):
        parse_event({"type": "nonsense", "call_id": "x"})
    with pytest.raises(ValidationError):
        parse_event({"type": "hint", "call_id": "x", "hint_id": "h", "severity": "apocalyptic", "reason": "r", "title": "t"})


@given(revision=st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=5), st.none(), st.booleans()))
@settings(max_examples=200, deadline=None)
def test_a_final_s_revision_is_0_or_1_or_the_event_is_refused(revision):
    """Events cross Redis between workers and gateways: a revision outside the model is refused, never kept."""
    body = {"type": "transcript_final", "speaker": "ch0", "start": 0, "end": 1, "text": "hi", "revision": revision}
    try:
        ev = parse_event(json.dumps(body, allow_nan=True))
    except ValidationError:
        return
    assert ev.revision in (0, 1)


@given(
    field=st.sampled_from(["optional_decodes_skipped", "revisions_skipped"]),
    value=st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=5), st.none(), st.booleans()),
)
@settings(max_examples=200, deadline=None)
def test_a_metrics_counter_is_a_count_or_the_event_is_refused(field, value):
    """The same for the counters a worker's metrics carry to consoles through the gateway."""
    body = {"type": "metrics", "lag_s": 0.1, field: value}
    try:
        ev = parse_event(json.dumps(body, allow_nan=True))
    except ValidationError:
        return
    assert isinstance(getattr(ev, field), int) and getattr(ev, field) >= 0
