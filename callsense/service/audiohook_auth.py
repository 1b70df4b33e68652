"""Who may open an AudioHook session: Genesys signs each connection request (HTTP Message Signatures,
HMAC-SHA256 with the integration's client secret; the `keyid` is the X-API-KEY). The signature must
cover the request target, the authority and the Audiohook-* and X-API-KEY headers, be fresh
(`max_signature_age_s`) and carry a nonce not seen before (a replayed request is refused).

Verification is `http_message_signatures`' (RFC 9421); this module only says which key and which
components are required.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from http_message_signatures import HTTPMessageVerifier, InvalidSignature, algorithms
from http_message_signatures.exceptions import HTTPMessageSignaturesException
from http_message_signatures.resolvers import HTTPSignatureKeyResolver
from websockets.datastructures import Headers
from websockets.http11 import Request

from callsense.config import AudioHookKey, AudioHookSettings, TokenGrant

log = logging.getLogger("callsense.audiohook")
REQUIRED = (
    "@request-target",
    "@authority",
    "audiohook-organization-id",
    "audiohook-session-id",
    "audiohook-correlation-id",
    "x-api-key",
)
MAX_NONCES = 100_000  # remembered for `max_signature_age_s`; bounded whatever the request rate


class _HeaderLines:
    """The request's header lines, in order, as the verifier reads them (read-only)."""

    def __init__(self, headers: Headers) -> None:
        self._lines = list(headers.raw_items())

    def items(self) -> list[tuple[str, str]]:
        return self._lines

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self._lines))

    def __contains__(self, name: object) -> bool:
        return any(n.lower() == str(name).lower() for n, _ in self._lines)

    def __setitem__(self, name: str, value: str) -> None:
        raise TypeError("read-only")

    def __delitem__(self, name: str) -> None:
        raise TypeError("read-only")


@dataclass
class HttpMessage:
    """What `http_message_signatures` signs (our client: headers a dict it adds to) or verifies (the
    server: the request's header lines)."""

    method: str
    url: str
    headers: _HeaderLines | dict[str, str]


class SharedSecret(HTTPSignatureKeyResolver):
    """An HMAC key: the same client secret signs (Genesys, our client) and verifies (the server)."""

    def __init__(self, key_id: str, secret: bytes) -> None:
        self.key_id, self.secret = key_id, secret

    def resolve_public_key(self, key_id: str) -> bytes | None:
        return self.secret if key_id == self.key_id else None

    def resolve_private_key(self, key_id: str) -> bytes | None:
        return self.resolve_public_key(key_id)


class AudioHookAuth:
    def __init__(self, settings: AudioHookSettings) -> None:
        self.settings = settings
        self._nonces: OrderedDict[str, float] = OrderedDict()

    def check(self, request: Request) -> str | None:
        """None when the request is signed by a configured key; else why not (said in the 401)."""
        api_key = request.headers.get("X-API-KEY", "")
        key = self.settings.keys.get(api_key)
        if key is None:
            return "unknown or missing X-API-KEY"
        try:
            secret = key.client_secret()
        except (ValueError, OSError) as exc:
            log.error("audiohook key %s…: %s", api_key[:4], exc)
            return "this key's client secret is not configured on the server"
        org = request.headers.get("Audiohook-Organization-Id", "")
        if key.organization_id and org.lower() != key.organization_id.lower():
            return "this key is not for the organization in Audiohook-Organization-Id"
        url = f"http://{request.headers.get('Host', '')}{request.path}"
        message = HttpMessage("GET", url, _HeaderLines(request.headers))
        key_resolver = SharedSecret(api_key, secret)
        verifier = HTTPMessageVerifier(signature_algorithm=algorithms.HMAC_SHA256, key_resolver=key_resolver)
        try:
            result = verifier.verify(
                message,
                max_age=datetime.timedelta(seconds=self.settings.max_signature_age_s),
                require_components=REQUIRED,
            )[0]
        except (InvalidSignature, HTTPMessageSignaturesException) as exc:
            return f"signature not valid: {str(exc)[:200]}"
        return self._fresh(str(result.nonce or ""))

    def _fresh(self, nonce: str) -> str | None:
        """A nonce is good once within the signature's lifetime: a replayed request is refused."""
        now, life = time.monotonic(), self.settings.max_signature_age_s * 2
        while self._nonces and (next(iter(self._nonces.values())) < now - life or len(self._nonces) >= MAX_NONCES):
            self._nonces.popitem(last=False)
        if len(nonce) < 16:
            return "the signature needs a nonce of 16 characters or more"
        if nonce in self._nonces:
            return "this signed request was seen before (replay)"
        self._nonces[nonce] = now
        return None

    def grant(self, request: Request) -> TokenGrant | None:
        """The ingest grant of the (already checked) request's key."""
        key: AudioHookKey | None = self.settings.keys.get(request.headers.get("X-API-KEY", ""))
        return None if key is None else TokenGrant(role="ingest", operator_id=key.operator_id, operators=key.operators)
