"""The HTTP side of a server, through its real handler and request objects (no models): Prometheus'
text format for /metrics, and the token rule in front of it."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from websockets.datastructures import Headers
from websockets.http11 import Request

from callsense.config import TokenGrant
from callsense.service.http import Http

METRICS = {
    "calls": [
        {"call_id": "+79161234567", "operator_id": "op-1", "lag_s": 0.8, "stream_s": 12.0, "risk": 0.2, "queued_frames": 3},
        {"call_id": "b", "operator_id": "op-2", "lag_s": 2.5, "stream_s": 40.0, "risk": None, "queued_frames": 0},
    ],
    "consoles": 4,
    "dropped_partials": 7,
    "revision_packs": {"done": 12, "skipped": 1},
    "broker_rejected": {},
    "degraded": False,
}


def _http() -> Http:
    tokens = {"sup": TokenGrant(role="supervisor"), "op": TokenGrant(role="operator", operator_id="op-1")}
    return Http(tokens.get, lambda: {"status": "ok"}, lambda: METRICS)


def _get(path: str, **headers: str):
    return _http()(None, Request(path, Headers(headers)))  # type: ignore[arg-type]


def test_prometheus_scrapes_metrics_in_its_text_format_without_ids():
    scrape = _get("/metrics", Authorization="Bearer sup", Accept="text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    assert scrape.status_code == 200 and scrape.headers["Content-Type"].startswith("text/plain")
    text = scrape.body.decode()
    values = {(s.name, tuple(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values[("callsense_calls_live", ())] == 2 and values[("callsense_call_lag_max_seconds", ())] == 2.5
    assert values[("callsense_call_queued_frames", ())] == 3 and values[("callsense_consoles", ())] == 4
    assert values[("callsense_revision_packs", (("key", "done"),))] == 12
    assert "79161234567" not in text and "op-1" not in text, "no call or operator id becomes a label"
    assert _get("/metrics?format=prometheus", Authorization="Bearer sup").body == scrape.body


def test_metrics_stay_json_for_browsers_and_need_a_supervisor():
    assert _get("/metrics", Authorization="Bearer sup", Accept="application/json").headers["Content-Type"] == (
        "application/json"
    )
    for who in ({}, {"Authorization": "Bearer op"}, {"Authorization": "Bearer nope"}):
        assert _get("/metrics", Accept="text/plain", **who).status_code == 401
