"""`callsense serve --role gateway`: sources and consoles connect here; calls run on workers.

The gateway is the one-process server (same ingest, tokens, fan-out, HTTP) with its calls replaced
by `RemoteCall`s: a call's messages go to its input stream on the broker, and every gateway tails
the cluster-wide event stream into its fan-out, so any gateway shows every call and a console can
resume on any of them. A call is accepted once a worker has taken it (`cluster.assign_timeout_s`,
else close 1013); ingest's backpressure comes from the worker's progress (`cluster.backlog_s`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio as aredis

from callsense.audio.protocols import StreamStart
from callsense.config import SAMPLE_RATE, Settings, TokenGrant
from callsense.registry import Models
from callsense.service import broker as b
from callsense.service.calls import Audio, FromConsole, LiveCall, Message
from callsense.service.http import FromWorkers
from callsense.service.ingest import Refused
from callsense.service.server import CallServer

log = logging.getLogger("callsense.gateway")

# Reserves a call id: its hash, which lapses unless a worker takes the call in time (a gateway that
# dies between reserving and submitting leaves nothing behind).
RESERVE = """
if redis.call('HSETNX', KEYS[1], 'state', 'waiting') == 0 then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""
# Gives up on a call no worker took - unless one took it meanwhile.
GIVE_UP = """
if redis.call('HGET', KEYS[1], 'state') ~= 'waiting' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'refused')
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


class RemoteInbox:
    """A call's inbox on a gateway: messages go to its input stream. Audio waits while the worker
    is more than `backlog_s` behind (its progress is in the call's hash): backpressure, no loss.
    If the broker goes away the call fails (the source learns it in `ended`), and input stops here."""

    def __init__(self, call: RemoteCall, conn: aredis.Redis, signer: b.Signer, backlog_s: float) -> None:
        self.call, self.conn, self.signer, self.call_id = call, conn, signer, call.call_id
        self.backlog = int(backlog_s * SAMPLE_RATE)
        self.sent = self.done = 0
        self._later: set[asyncio.Task[bool]] = set()

    @property
    def closed(self) -> bool:
        """The call's worker has ended it (saved, or failed): nothing more goes to it."""
        return self.call.saved.done()

    async def put(self, msg: Message) -> bool:
        if self.closed:
            return False
        try:
            if isinstance(msg, Audio):
                self.sent += msg.chunk.audio.shape[1]
                while self.sent - self.done > self.backlog and not self.closed:
                    done = await self.conn.hget(b.call_key(self.call_id), "done")
                    if done is None:  # Redis restarted without the call: its worker ends it
                        return False
                    self.done = int(done)
                    if self.sent - self.done > self.backlog:
                        await asyncio.sleep(0.05)
            await self.conn.xadd(b.input_key(self.call_id), self.signer.sign(b.encode_message(msg)))
        except redis.RedisError as exc:
            self.call.finish(f"broker_unreachable: {exc}; the call's worker saves what it had")
            return False
        return True

    def put_nowait(self, msg: Message) -> None:
        task = asyncio.create_task(self.put(msg))
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    def __len__(self) -> int:
        """Audio the worker has not processed yet, in 100 ms frames."""
        return max(self.sent - self.done, 0) // (SAMPLE_RATE // 10)


class RemoteCall:
    """A call as a gateway holds it: it ends when its worker says it was saved."""

    def __init__(
        self, conn: aredis.Redis, signer: b.Signer, call_id: str, operator_id: str | None, settings: Settings
    ) -> None:
        self.call_id, self.operator_id = call_id, operator_id
        self.inbox = RemoteInbox(self, conn, signer, settings.cluster.backlog_s)
        self.task: asyncio.Task[None] | None = None
        self.ended = False
        self.failure: str | None = None
        self.last_lag = 0.0
        self.stream_time = 0.0
        self.saved: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def finish(self, failure: str | None) -> None:
        if not self.saved.done():
            self.failure = failure
            self.saved.set_result(None)


class Gateway(CallServer):
    def __init__(self, settings: Settings, models: Models | None = None, name: str = "gateway") -> None:
        if not settings.cluster.broker:
            raise SystemExit("a gateway needs a broker: --broker redis://HOST:PORT/DB (or cluster.broker in the config)")
        super().__init__(settings, models)
        self.name = name
        self.signer = b.Signer(b.cluster_secret(settings))
        self.rejects = b.Rejects(f"gateway {name}")
        self.redis: aredis.Redis = b.connect(settings.cluster.broker)
        self._give_up = self.redis.register_script(GIVE_UP)
        self._reserve_id = self.redis.register_script(RESERVE)
        self.delivery: deque[float] = deque(maxlen=2000)  # seconds the broker added, recent events
        self._view: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._down: set[str] = set()  # readers that failed and are restarting: /health says 503 meanwhile
        self._tail_from = "0-0"

    async def _prepare(self) -> None:
        """No models here: connect, show the calls already live in the cluster, then follow it."""
        try:
            await self.redis.ping()
        except redis.RedisError as exc:
            raise SystemExit(
                f"cannot reach the broker at {b.safe_url(self.settings.cluster.broker)}: {exc}. "
                "Start Redis (docs/deployment.md) or fix cluster.broker."
            ) from None
        info = await self.redis.xinfo_stream(b.EVENTS) if await self.redis.exists(b.EVENTS) else None
        self._tail_from = (b.text(info["last-generated-id"]) if info else None) or "0-0"
        for call_id in sorted(b.text(c) or "" for c in await self.redis.smembers(b.LIVE)):
            key = b.events_key(call_id[:200])
            for entry_id, fields in await b.entries(self.redis, key):
                await self._receive(key, entry_id, fields)
        await self._look()  # healthy from the first request, not from the watch's first round
        self._tasks = [
            asyncio.create_task(self._keep("events reader", self._tail)),
            asyncio.create_task(self._keep("cluster watch", self._watch)),
        ]

    async def shutdown(self) -> int:
        interrupted = await super().shutdown()
        for task in self._tasks:
            task.cancel()
        await self.redis.aclose()
        return interrupted

    # -- calls --

    async def _open_call(self, start: StreamStart, protocol: str, grant: TokenGrant | None) -> LiveCall:
        if self._closing:
            raise Refused(1001, "gateway shutting down; try another gateway")
        operator_id = self._operator_for(grant, start.operator_id)
        try:
            return await self._assign(start, protocol, operator_id)
        except redis.RedisError as exc:
            raise Refused(1013, f"the broker is unavailable ({exc}); try again shortly") from None

    async def _assign(self, start: StreamStart, protocol: str, operator_id: str | None) -> LiveCall:
        """The call in the cluster, taken by a worker (or refused when none has room in time)."""
        call_id = await self._reserve(start.call_id)
        call = RemoteCall(self.redis, self.signer, call_id, operator_id, self.settings)
        self.calls[call_id] = call
        try:
            await self._submit(call_id, start, protocol, operator_id)
        except (redis.RedisError, Refused):
            self.calls.pop(call_id, None)
            raise
        call.task = asyncio.create_task(self._until_saved(call))
        return call

    async def _submit(self, call_id: str, start: StreamStart, protocol: str, operator_id: str | None) -> None:
        """The call's hash and job; then wait until a worker takes it."""
        key = b.call_key(call_id)
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(
                key,
                mapping={
                    "operator": operator_id or "",
                    "protocol": protocol,
                    "roles": json.dumps(start.roles),
                    "language": start.language or "",
                    "gateway": self.name,
                    "created": time.time(),
                },
            )
            p.sadd(b.LIVE, call_id)
            p.xadd(b.JOBS, self.signer.sign({"call": call_id}))
            await p.execute()
        deadline = time.monotonic() + self.settings.cluster.assign_timeout_s
        while (state := await self.redis.hget(key, "state")) == b"waiting":
            if time.monotonic() > deadline and await self._give_up(
                keys=[key, b.LIVE], args=[call_id, int(self.settings.cluster.ended_ttl_s)]
            ):
                raise Refused(
                    1013,
                    f"no worker had room for this call within {self.settings.cluster.assign_timeout_s:.0f}"
                    " s; try again later",
                )
            await asyncio.sleep(0.05)
        if state != b"live":  # a worker refused it (its record was tampered with), or Redis lost it
            raise Refused(1013, "the cluster could not start this call; try again")

    async def _reserve(self, wanted: str) -> str:
        """A call id no live or recent call in the cluster has (Twilio reuses callSids): the id asked
        for, else it with a random suffix. A few tries: a collision of random suffixes is a broken broker."""
        call_id, lapse = wanted, int(self.settings.cluster.assign_timeout_s) + 30
        for _ in range(5):
            if await self._reserve_id(keys=[b.call_key(call_id)], args=[lapse]):
                return call_id
            call_id = f"{wanted[:55]}-{uuid.uuid4().hex[:8]}"
        raise Refused(1013, "could not reserve a call id on the broker; try again")

    async def _until_saved(self, call: RemoteCall) -> None:
        try:
            await call.saved
        finally:
            call.ended = True
            self.calls.pop(call.call_id, None)

    async def _from_console(self, call_id: str, msg: FromConsole) -> bool:
        """From a console on any gateway, into the call's input (its worker records it)."""
        if await self.redis.hget(b.call_key(call_id), "state") != b"live":
            return False
        await self.redis.xadd(b.input_key(call_id), self.signer.sign(b.encode_message(msg)))
        return True

    # -- events from the workers --

    async def _keep(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """A reader the gateway cannot work without: if it fails, /health says so (503) until it is
        running again, a second later."""
        while True:
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gateway %s: the %s failed; restarting it", self.name, name)
                self._down.add(name)
                await asyncio.sleep(1.0)

    async def _tail(self) -> None:
        while True:
            try:
                reply = await b.read(self.redis, {b.EVENTS: self._tail_from}, 500, 1000)
            except redis.RedisError as exc:
                log.warning("gateway %s: broker unreachable (%s); retrying", self.name, exc)
                await asyncio.sleep(1.0)
                continue
            self._down.discard("events reader")
            for _, entries in reply:
                for entry_id, fields in entries:
                    self._tail_from = entry_id
                    await self._receive(b.EVENTS, entry_id, fields)

    async def _receive(self, stream: str, entry_id: str, fields: dict[bytes, bytes]) -> None:
        """One entry of an event stream, checked; one a worker of ours did not write is refused."""
        try:
            item = b.decode_entry(fields, self.signer)
        except b.MalformedEntry as exc:
            await self.rejects.record(self.redis, stream, entry_id, str(exc))
            return
        if isinstance(item, b.Saved):
            self._saved(item)
        else:
            await self._deliver(item)

    async def _deliver(self, published: b.Published) -> None:
        ev = published.event
        call_id = ev.call_id
        room = self.fanout.rooms.get(call_id)
        if room is None:
            operator = (
                ev.operator_id
                if ev.type == "call_started"
                else b.text(await self.redis.hget(b.call_key(call_id), "operator"))
            )
            self.fanout.open(call_id, operator or None)
        elif room.replay and ev.seq <= room.replay[-1][0].seq:
            return  # seen already (start-up backfill overlapping the tail)
        self.delivery.append(published.delivery_s)
        call = self.calls.get(call_id)
        if isinstance(call, RemoteCall):
            call.stream_time = ev.t
            if ev.type == "metrics":
                call.last_lag = ev.lag_s
        await self.fanout.publish(call_id, [ev], [published.redacted])

    def _saved(self, saved: b.Saved) -> None:
        call = self.calls.get(saved.call_id)
        if isinstance(call, RemoteCall):
            call.finish(saved.failure)

    # -- health and metrics --

    async def _watch(self) -> None:
        """The cluster's state for /health and /metrics (those answer without waiting on Redis)."""
        while True:
            self._down.discard("cluster watch")
            await self._look()
            await asyncio.sleep(1.0)

    async def _look(self) -> None:
        try:
            workers = _recent_workers(await self.redis.hgetall(f"{b.PREFIX}workers"), self.signer)
            self._view = {"broker": "ok", "workers": workers, "cluster_calls": await self.redis.scard(b.LIVE)}
        except redis.RedisError as exc:
            self._view = {"broker": f"unreachable: {exc}"}

    def _health(self) -> dict[str, Any]:
        status = "ok" if self._view.get("broker") == "ok" and not self._down else "degraded"
        return {
            **super()._health(),
            "status": status,
            "role": "gateway",
            "broker": self._view.get("broker"),
            "workers": len(self._view.get("workers", {})),
            **({"failed": sorted(self._down)} if self._down else {}),
        }

    def _http(self) -> Any:
        """Recent calls, disputes and reports come from the workers that keep them (this process keeps none)."""
        return FromWorkers(super()._http(), self._worker_urls)

    def _worker_urls(self) -> list[str]:
        return [w["http"] for w in self._view.get("workers", {}).values() if "http" in w]

    def _metrics(self) -> dict[str, Any]:
        ordered = sorted(self.delivery)
        p = (lambda q: round(ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000, 1)) if ordered else None
        return {
            **super()._metrics(),
            **self._view,
            "broker_delivery_ms": {"p50": p(0.5), "p95": p(0.95)} if p else None,
            "broker_rejected": dict(self.rejects.counts),
        }


def _recent_workers(beats: dict[Any, Any], signer: b.Signer) -> dict[str, dict[str, Any]]:
    """Workers that reported in the last 10 s (an entry no worker wrote is left out), with the address of
    their reports when a worker of this cluster signed it (console tokens are sent there)."""
    found = {}
    for name, raw in beats.items():
        try:
            beat, who = json.loads(raw), (b.text(name) or "")[:200]
            if time.time() - float(beat["at"]) < 10:
                found[who] = {k: beat[k] for k in ("calls", "load", "at") if k in beat}
                http = beat.get("http")
                if (
                    isinstance(http, str)
                    and http.startswith("http://")
                    and hmac.compare_digest(str(beat.get("s", "")), signer.tag({"name": who, "http": http}))
                ):
                    found[who]["http"] = http
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
    return found
