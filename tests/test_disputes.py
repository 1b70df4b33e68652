"""Disputes of a call's scorecard, as the server takes them from consoles: who may dispute or decide
what, once; comments redacted before they are stored; the report page and the access log show them.
(The dashboard round trip is in test_web.)"""

from __future__ import annotations

import pytest

from callsense.reports.report import with_disputes
from callsense.reports.store import DisputeError, Store
from callsense.service.disputes import DecisionMessage, DisputeMessage, take

REPORT = {
    "language": "en",
    "metrics": {"duration_s": 60.0},
    "compliance": [{"id": "greeting", "title": "Greeting with name"}, {"id": "farewell", "title": "Farewell"}],
}


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(tmp_path / "calls.sqlite")
    s.save_call("c1", [], REPORT, operator_id="op-1")
    s.save_call("c2", [], REPORT, operator_id="op-2")
    return s


def _dispute(call_id: str = "c1", item: str = "greeting", comment: str = "I did greet") -> DisputeMessage:
    return DisputeMessage(type="dispute", call_id=call_id, item=item, comment=comment)


def _decision(dispute_id: int, outcome: str = "accepted", comment: str = "") -> DecisionMessage:
    return DecisionMessage(type="dispute_decision", dispute_id=dispute_id, outcome=outcome, comment=comment)


def test_an_operator_disputes_an_item_of_their_own_call_once_and_a_supervisor_decides_once(store):
    row = take(store, _dispute(), "operator:op1", "operator", "op-1", redact_pii=True)
    assert (row["call_id"], row["item"], row["outcome"], row["by"]) == ("c1", "greeting", "open", "operator:op1")
    with pytest.raises(DisputeError, match="already disputed"):
        take(store, _dispute(comment="again"), "operator:op1", "operator", "op-1", redact_pii=True)
    with pytest.raises(DisputeError, match="only supervisors"):
        take(store, _decision(row["id"]), "operator:op1", "operator", "op-1", redact_pii=True)
    decided = take(
        store, _decision(row["id"], "rejected", "not in the recording"), "supervisor:sup", "supervisor", None, True
    )
    assert (decided["outcome"], decided["decided_by"], decided["decision"]) == (
        "rejected",
        "supervisor:sup",
        "not in the recording",
    )
    with pytest.raises(DisputeError, match="no open dispute"):
        take(store, _decision(row["id"], "accepted"), "supervisor:sup", "supervisor", None, True)
    log = [(who, call, action) for _, who, call, action in store.access_log()]
    assert ("operator:op1", "c1", "dispute") in log and ("supervisor:sup", "c1", "dispute rejected") in log


@pytest.mark.parametrize(
    ("msg", "role", "operator_id", "says"),
    [
        (_dispute(call_id="c2"), "operator", "op-1", "no ended call 'c2' of yours"),  # another operator's call
        (_dispute(call_id="nope"), "operator", "op-1", "no ended call"),
        (_dispute(), "supervisor", None, "no ended call"),  # supervisors decide, they do not dispute
        (_dispute(item="no_such_item"), "operator", "op-1", "has no checklist item 'no_such_item'"),
        (_decision(99), "supervisor", None, "no open dispute 99"),
    ],
)
def test_what_is_refused_says_why_and_stores_nothing(store, msg, role, operator_id, says):
    with pytest.raises(DisputeError, match=says):
        take(store, msg, "someone", role, operator_id, redact_pii=True)
    assert store.disputes() == []


def test_a_live_call_without_a_report_cannot_be_disputed_yet(store):
    store.open_call("live1", "ws", "op-1")
    with pytest.raises(DisputeError, match="with a report"):
        take(store, _dispute(call_id="live1"), "operator:op1", "operator", "op-1", redact_pii=True)


def test_comments_are_redacted_before_they_are_stored(store):
    said = "the customer gave +7 916 123-45-67 as the callback number"
    row = take(store, _dispute(comment=said), "operator:op1", "operator", "op-1", redact_pii=True)
    assert "916" not in row["comment"] and "[PHONE]" in row["comment"]
    assert b"123-45-67" not in store.path.read_bytes() + store.path.with_name("calls.sqlite-wal").read_bytes()
    kept = take(store, _dispute(item="farewell", comment=said), "operator:op1", "operator", "op-1", redact_pii=False)
    assert kept["comment"] == said  # redaction off: as typed


def test_each_side_lists_what_it_may_see_and_the_report_page_shows_the_outcome(store):
    take(store, _dispute(comment="<b>I did</b>"), "operator:op1", "operator", "op-1", redact_pii=True)
    take(store, _dispute(call_id="c2"), "operator:op2", "operator", "op-2", redact_pii=True)
    assert [d["call_id"] for d in store.disputes(operators={"op-1"})] == ["c1"]
    assert {d["call_id"] for d in store.disputes()} == {"c1", "c2"}
    page = with_disputes("<html><body><h1>report</h1></body></html>", store.disputes(call_id="c1"), REPORT)
    assert page.index('<section id="disputes">') < page.index("</body>")
    assert "Greeting with name" in page and "&lt;b&gt;I did&lt;/b&gt;" in page and "<b>I did" not in page
    assert with_disputes("<html></html>", []) == "<html></html>"
    # purged with their call
    store.db.execute("UPDATE calls SET finished = 0")
    store.purge_older_than(1)
    assert store.disputes() == []
