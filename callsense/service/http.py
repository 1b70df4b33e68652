"""HTTP beside the websockets: `/health` (open liveness), `/metrics` (supervisor token), the dashboard,
the recent calls (`/api/calls`) and their reports (`/reports/CALL_ID`) under the consoles' token rules."""

from __future__ import annotations

import asyncio
import http
import json
import logging
import mimetypes
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import ValidationError
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from callsense.config import Settings, TokenGrant
from callsense.reports.report import with_disputes
from callsense.reports.store import Store

log = logging.getLogger("callsense.server")
STATIC = Path(__file__).parent / "static"
MAX_FETCH = 256 * 2**20  # a report page, or a call's kept audio, from a worker
WEBSOCKET_PATHS = ("/console", "/ingest", "/twilio", "/audio_fork", "/audiohook")


def token_of(request: Request) -> str | None:
    query = {k: v[0] for k, v in parse_qs(urlsplit(request.path).query).items()}
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return query.get("token") or request.headers.get("X-Callsense-Token")


def grant_in(settings: Settings, token: str | None) -> TokenGrant | None:
    """What the configured `token` may do (None: no such token, or its grant in the config is invalid)."""
    raw: Any = settings.server.tokens.get(token or "")
    if raw is None:
        return None
    try:
        return raw if isinstance(raw, TokenGrant) else TokenGrant.model_validate(raw)
    except ValidationError:
        log.error("token %s… has an invalid grant in the config", (token or "")[:4])
        return None


def who_of(grant: TokenGrant, token: str | None) -> str:
    """Who a token is, as the access log names them (never the whole token)."""
    return f"{grant.role}:{grant.operator_id or (token or '')[:6]}"


def operators_of(grant: TokenGrant) -> set[str] | None:
    """Whose calls a console or page may show: every call for supervisors (None), else the token's own."""
    return None if grant.role == "supervisor" else {o for o in (grant.operator_id, *grant.operators) if o}


class Http:
    def __init__(
        self,
        grant: Callable[[str | None], TokenGrant | None],
        health: Callable[[], dict[str, Any]],
        metrics: Callable[[], dict[str, Any]],
        store: Callable[[], Store | None] = lambda: None,
        dashboard: bool = True,
        audiohook: Callable[[Request], str | None] | None = None,
    ) -> None:
        self.grant, self.health, self.metrics, self.store = grant, health, metrics, store
        self.dashboard = dashboard  # a worker's health port serves no pages
        self.audiohook = audiohook  # None when the server takes no AudioHook sessions

    def __call__(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/audiohook":  # Genesys signs the upgrade request: a bad signature never gets a websocket
            why = self.audiohook(request) if self.audiohook else "AudioHook is not configured (server.audiohook.keys)"
            return None if why is None else _json({"error": why}, http.HTTPStatus.UNAUTHORIZED)
        if path in WEBSOCKET_PATHS:
            return None
        if path == "/health":  # 503 when a part the process needs is failing: load balancers move on
            health = self.health()
            ok = health.get("status") == "ok"
            return _json(health, http.HTTPStatus.OK if ok else http.HTTPStatus.SERVICE_UNAVAILABLE)
        if path == "/whoami":  # the dashboard shows each role its own controls
            grant = self.grant(token_of(request))
            if grant is None:
                return _json({"error": "invalid or missing token"}, http.HTTPStatus.UNAUTHORIZED)
            return _json({"role": grant.role, "operator_id": grant.operator_id})
        if path == "/metrics":
            grant = self.grant(token_of(request))
            if grant is None or grant.role != "supervisor":
                return _json(
                    {"error": "metrics need a supervisor token (Authorization: Bearer ...)"}, http.HTTPStatus.UNAUTHORIZED
                )
            if _wants_prometheus(request):  # a Prometheus scrape (bearer_token_file), or ?format=prometheus
                body = prometheus_text(self.metrics())
                return Response(200, "OK", Headers({"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}), body)
            return _json(self.metrics())
        if path in CALL_PATHS or path.startswith("/reports/"):
            return self._calls(request, path)
        return _static(path) if self.dashboard else _json({"error": "not found"}, http.HTTPStatus.NOT_FOUND)

    def _calls(self, request: Request, path: str) -> Response:
        """The recent calls and each one's report: a console token's calls (all for supervisors); every
        report read is in the access log."""
        token = token_of(request)
        grant, store = self.grant(token), self.store()
        if grant is None or grant.role == "ingest":
            return _json({"error": "a console token is needed (?token=...)"}, http.HTTPStatus.UNAUTHORIZED)
        if store is None:
            return _json({"error": "this process keeps no calls"}, http.HTTPStatus.NOT_FOUND)
        mine = operators_of(grant)
        if path == "/api/calls":
            return _json(store.recent(operators=mine))
        if path == "/api/disputes":  # an operator's own; supervisors (the analysts) all
            return _json(store.disputes(operators=mine))
        call_id, audio = unquote(path.removeprefix("/reports/")), path.endswith("/audio")
        call_id = call_id.removesuffix("/audio") if audio else call_id
        stored, owner = store.operator_of(call_id)
        page = store.call_dir("reports", call_id) / "report.html"
        if audio:  # the kept recording (personal data silenced), for the report's "listen here" links
            page = store.call_dir("audio", call_id).with_suffix(".flac")
        if not stored or (mine is not None and owner not in mine) or not page.is_file():
            return _json({"error": "no such report for this token"}, http.HTTPStatus.NOT_FOUND)
        store.log_access(who_of(grant, token), call_id, "audio listen" if audio else "report view")
        if audio:
            return Response(200, "OK", Headers({"Content-Type": "audio/flac"}), page.read_bytes())
        html = page.read_text(encoding="utf-8")
        if disputes := store.disputes(call_id=call_id):  # the report's JSON only for their items' titles
            html = with_disputes(html, disputes, store.report_of(call_id))
        return Response(200, "OK", Headers({"Content-Type": "text/html; charset=utf-8"}), html.encode("utf-8"))


CALL_PATHS = ("/api/calls", "/api/disputes")


class FromWorkers:
    """A gateway's recent calls, disputes and reports: each worker serves its own on its health port under
    the same token rules (and logs each read); the gateway asks every live worker with the console's
    token and merges the lists, or passes on the first worker's report that has the call."""

    def __init__(self, local: Http, workers: Callable[[], list[str]], timeout_s: float = 5.0) -> None:
        self.local, self.workers, self.timeout_s = local, workers, timeout_s

    async def __call__(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        grant = self.local.grant(token_of(request))
        if not (path in CALL_PATHS or path.startswith("/reports/")) or grant is None or grant.role == "ingest":
            return self.local(connection, request)  # the 401 for a bad token is said here, nothing is sent on
        headers = {k: v for k, v in request.headers.raw_items() if k.lower() == "authorization"}
        asks = [asyncio.to_thread(self._get, base + request.path, headers) for base in self.workers()]
        answers = await asyncio.gather(*asks)
        found = [a for a in answers if a is not None and a[0] == 200]
        if path.startswith("/reports/"):
            if not found:
                return _json({"error": "no such report for this token"}, http.HTTPStatus.NOT_FOUND)
            return Response(200, "OK", Headers({"Content-Type": found[0][1]}), found[0][2])
        rows = [row for _, _, body in found for row in json.loads(body)]
        if path == "/api/calls":  # one row per call (a call taken over is on two workers): the first answer's
            rows = list({r.get("call_id"): r for r in reversed(rows)}.values())
            rows.sort(key=lambda r: r.get("started") or 0, reverse=True)
            return _json(rows[:50])
        rows.sort(key=lambda r: (r.get("outcome") != "open", -(r.get("at") or 0)))
        return _json(rows[:500])

    def _get(self, url: str, headers: dict[str, str]) -> tuple[int, str, bytes] | None:
        """(status, content type, body) of one worker's answer; None when it does not answer."""
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self.timeout_s) as r:
                return r.status, r.headers.get("Content-Type", "application/json"), r.read(MAX_FETCH)
        except urllib.error.HTTPError as exc:
            return exc.code, "", b""
        except (OSError, ValueError) as exc:
            log.warning("a worker's reports at %s did not answer: %s", url.split("?")[0], exc)
            return None


def _static(path: str) -> Response:
    name = "index.html" if path in ("/", "") else path.lstrip("/").removeprefix("static/")
    file = (STATIC / name).resolve()
    if STATIC.resolve() in file.parents and file.is_file():
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        return Response(200, "OK", Headers({"Content-Type": ctype}), file.read_bytes())
    return Response(404, "Not Found", Headers({"Content-Type": "text/plain"}), b"not found\n")


def _json(data: Any, status: http.HTTPStatus = http.HTTPStatus.OK) -> Response:
    return Response(status.value, status.phrase, Headers({"Content-Type": "application/json"}), json.dumps(data).encode())


def _wants_prometheus(request: Request) -> bool:
    query = parse_qs(urlsplit(request.path).query)
    accept = request.headers.get("Accept", "")
    return query.get("format", [""])[0] == "prometheus" or (
        ("text/plain" in accept or "openmetrics" in accept) and "application/json" not in accept
    )


def prometheus_text(metrics: dict[str, Any]) -> bytes:
    """The JSON metrics as Prometheus gauges (prometheus_client writes the format): live calls counted
    and summed (no call or operator id becomes a label: ids may carry personal data), every other number
    as `callsense_<name>`, a mapping of numbers as one gauge with a `key` label."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector

    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"callsense_{_metric_name(name)}", doc, value=float(value))

    class Snapshot(Collector):
        def collect(self) -> Any:
            calls = metrics.get("calls") or []
            yield gauge("calls_live", "calls in progress in this process", len(calls))
            lag = max((c["lag_s"] for c in calls), default=0)
            yield gauge("call_lag_max_seconds", "the most any live call is behind", lag)
            queued = sum(c["queued_frames"] for c in calls)
            yield gauge("call_queued_frames", "audio frames waiting in live calls' inboxes", queued)
            for key, value in metrics.items():
                if isinstance(value, bool) or key == "calls":
                    continue
                if isinstance(value, int | float):
                    yield gauge(key, key.replace("_", " "), value)
                elif (
                    isinstance(value, dict)
                    and value
                    and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value.values())
                ):
                    family = GaugeMetricFamily(f"callsense_{_metric_name(key)}", key.replace("_", " "), labels=["key"])
                    for k, v in value.items():
                        family.add_metric([str(k)], float(v))
                    yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot())
    return generate_latest(registry)


def _metric_name(key: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in key).lower()
