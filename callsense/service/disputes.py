"""Disputes of a call's scorecard: its operator answers a checklist item the call was judged on, with
a comment; a supervisor (the quality analyst) accepts or rejects it. Both are kept in the store (the
comments redacted like every other artefact when `report.redact_pii` is on) and in the access log;
the report page shows them with their outcome.

Checked here, not in the dashboard: an operator disputes only an item of their own ended call's
report, once; only supervisors decide, once per dispute."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from callsense.events import NOTE_CHARS
from callsense.reports.privacy import redact
from callsense.reports.store import DisputeError, Store

Comment = Annotated[str, StringConstraints(min_length=1, max_length=NOTE_CHARS, strip_whitespace=True)]


class DisputeMessage(BaseModel):
    """An operator disputes one checklist item of their ended call's report."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["dispute"]
    call_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    item: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    comment: Comment


class DecisionMessage(BaseModel):
    """A supervisor accepts (the item is taken as passed) or rejects a dispute."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["dispute_decision"]
    dispute_id: Annotated[int, Field(ge=1, le=2**53)]
    outcome: Literal["accepted", "rejected"]
    comment: Annotated[str, StringConstraints(max_length=NOTE_CHARS, strip_whitespace=True)] = ""


def take(
    store: Store, msg: DisputeMessage | DecisionMessage, who: str, role: str, operator_id: str | None, redact_pii: bool
) -> dict[str, Any]:
    """The dispute as stored after this message; DisputeError (ValueError) says why it was refused."""
    if isinstance(msg, DecisionMessage):
        if role != "supervisor":
            raise DisputeError("only supervisors decide disputes")
        comment = _clean(store.report_of(_call_of(store, msg)), msg.comment, redact_pii)
        row = store.decide_dispute(msg.dispute_id, msg.outcome, who, comment)
        store.log_access(who, row["call_id"], f"dispute {msg.outcome}")
        return row
    stored, owner = store.operator_of(msg.call_id)
    report = store.report_of(msg.call_id) if stored else None
    if role != "operator" or owner is None or owner != operator_id or report is None:
        raise DisputeError(f"no ended call {msg.call_id!r} of yours with a report")
    items = {c["id"] for c in report.get("compliance", [])}
    if msg.item not in items:
        raise DisputeError(f"the report of {msg.call_id!r} has no checklist item {msg.item!r}: {', '.join(sorted(items))}")
    row = store.add_dispute(msg.call_id, msg.item, who, _clean(report, msg.comment, redact_pii))
    store.log_access(who, msg.call_id, "dispute")
    return row


def _call_of(store: Store, msg: DecisionMessage) -> str:
    row = store.dispute(msg.dispute_id)
    if row is None or row["outcome"] != "open":
        raise DisputeError(f"no open dispute {msg.dispute_id}")
    return str(row["call_id"])


def _clean(report: dict[str, Any] | None, text: str, redact_pii: bool) -> str:
    """A comment is free text about a call: redacted in the call's language before it is stored."""
    if not redact_pii or not text:
        return text
    return redact(text, str((report or {}).get("language") or "en"))
