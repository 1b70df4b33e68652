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


def test_a_gateway_sends_tokens_only_to_worker_addresses_signed_by_the_cluster():
    """A worker's heartbeat names where its reports are; the gateway forwards console tokens there, so an
    entry someone else wrote into Redis (no or a wrong signature, another scheme) gives no address."""
    import json
    import time

    from callsense.service import broker as b
    from callsense.service.gateway import _recent_workers

    ours, theirs = b.Signer(b"cluster secret"), b.Signer(b"another secret")

    def beat(name: str, http: str, signer: b.Signer) -> tuple[bytes, bytes]:
        tag = signer.tag({"name": name, "http": http})
        return name.encode(), json.dumps({"calls": 0, "load": 0.1, "at": time.time(), "http": http, "s": tag}).encode()

    beats = dict(
        [
            beat("w1", "http://10.0.0.5:9100", ours),
            beat("w2", "http://evil.example:80", theirs),
            beat("w3", "file:///etc/passwd", ours),
            (b"w4", json.dumps({"calls": 0, "load": 0.1, "at": time.time(), "http": "http://10.0.0.6:9100"}).encode()),
        ]
    )
    workers = _recent_workers(beats, ours)
    assert set(workers) == {"w1", "w2", "w3", "w4"}, "every live worker still counts in /metrics"
    assert {n: w.get("http") for n, w in workers.items()} == {
        "w1": "http://10.0.0.5:9100",
        "w2": None,
        "w3": None,
        "w4": None,
    }
