"""HTTP beside the websockets: `/health` (open liveness), `/metrics` (supervisor token), the dashboard."""

from __future__ import annotations

import http
import json
import mimetypes
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from callsense.config import TokenGrant

STATIC = Path(__file__).parent / "static"
WEBSOCKET_PATHS = ("/console", "/ingest", "/twilio", "/audio_fork")


def token_of(request: Request) -> str | None:
    query = {k: v[0] for k, v in parse_qs(urlsplit(request.path).query).items()}
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return query.get("token") or request.headers.get("X-Callsense-Token")


class Http:
    def __init__(
        self,
        grant: Callable[[str | None], TokenGrant | None],
        health: Callable[[], dict[str, Any]],
        metrics: Callable[[], dict[str, Any]],
    ) -> None:
        self.grant, self.health, self.metrics = grant, health, metrics

    def __call__(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
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
            return _json(self.metrics())
        return _static(path)


def _static(path: str) -> Response:
    name = "index.html" if path in ("/", "") else path.lstrip("/").removeprefix("static/")
    file = (STATIC / name).resolve()
    if STATIC.resolve() in file.parents and file.is_file():
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        return Response(200, "OK", Headers({"Content-Type": ctype}), file.read_bytes())
    return Response(404, "Not Found", Headers({"Content-Type": "text/plain"}), b"not found\n")


def _json(data: Any, status: http.HTTPStatus = http.HTTPStatus.OK) -> Response:
    return Response(status.value, status.phrase, Headers({"Content-Type": "application/json"}), json.dumps(data).encode())
