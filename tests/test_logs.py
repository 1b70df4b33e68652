"""Logs of the long-running processes: one JSON object per line when asked, ids and codes as fields."""

from __future__ import annotations

import json
import logging

from callsense.service.logs import JsonFormatter, TextFormatter


def _record(**extra) -> logging.LogRecord:
    record = logging.getLogger("callsense.calls").makeRecord(
        "callsense.calls", logging.INFO, __file__, 1, "call ended: %s", ("done",), None, extra=extra
    )
    return record


def test_a_call_end_is_one_json_line_with_its_fields():
    line = JsonFormatter().format(_record(call_id="c-1", status="done", duration_s=42.5, errors=["source_lost"]))
    assert "\n" not in line
    data = json.loads(line)
    assert data["msg"] == "call ended: done" and data["level"] == "info" and data["logger"] == "callsense.calls"
    assert data["call_id"] == "c-1" and data["duration_s"] == 42.5 and data["errors"] == ["source_lost"]
    assert data["ts"].endswith("Z")


def test_an_exception_is_its_last_line_not_the_trace():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.getLogger("x").makeRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    data = json.loads(JsonFormatter().format(record))
    assert data["error"] == "ValueError: boom" and "Traceback" not in json.dumps(data)


def test_text_lines_have_a_time_and_the_fields():
    text = TextFormatter().format(_record(call_id="c-1", status="done"))
    assert text[:4].isdigit() and "call ended: done" in text and "call_id=c-1" in text
