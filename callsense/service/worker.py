"""`callsense worker`: processes live calls a gateway put on the broker (docs/deployment.md).

A worker takes a new call only while it has room, by its own measure: the machine's CPU under
`cluster.max_load`, every call it holds within `cluster.max_lag_s` of live, and fewer than
`cluster.max_calls`. Each call runs exactly as in the one-process server (`Call`: the same pipeline,
redaction and store); only its input and its events travel through Redis.

Failover: a worker renews its claim on its calls every `heartbeat_s` from a thread of its own (a
busy event loop cannot starve it). A call whose claim is older than `takeover_after_s` is taken over
by another worker: it goes on from the call's last checkpoint (a moment nobody was speaking, saved
with each step), replays the input after it from the stream, and drops what consoles already have
(by the events' own ids), so no final is lost or repeated. Events carry on with the next sequence
number after a `worker_changed` event. A dead worker's publications are refused: each step's events
are written only while the call's hash still names that worker (one Lua script).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
import redis.asyncio as aredis

from callsense.config import SAMPLE_RATE, Settings
from callsense.events import SOURCE_LOST, Event, WorkerChanged
from callsense.pipeline import CallPipeline, Checkpoint, warm_up
from callsense.registry import Models
from callsense.reports.privacy import redact_events
from callsense.reports.store import Store
from callsense.service import broker as b
from callsense.service.calls import (
    Call,
    End,
    SourceError,
    call_executor,
    call_status,
    persist_report,
    recover_interrupted,
    sweep_retention,
)

log = logging.getLogger("callsense.worker")
CHECKPOINT_S = 1.0
BROKER_RETRIES = 10  # reads 0.5 s apart: a broker away longer than this ends the worker's calls

# Events and progress of one step, written only while this worker still owns the call. A new
# checkpoint also trims the call's input before it: a takeover never reads further back, so a long
# call keeps only the audio since its last pause in Redis.
PUBLISH = """
local owner = redis.call('HGET', KEYS[1], 'worker')
if owner == false then return -2 end
if owner ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], 'done', ARGV[3], 'lag', ARGV[4])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'ckpt', ARGV[5])
  redis.call('XTRIM', KEYS[4], 'MINID', ARGV[6])
end
for i = 7, #ARGV, 3 do
  redis.call('XADD', KEYS[2], ARGV[i], 'e', ARGV[i + 1], 's', ARGV[i + 2])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[i + 1], 's', ARGV[i + 2])
end
return (#ARGV - 6) / 3
"""
# A job's claim renewed (its idle time reset) only while the call is still this worker's.
RENEW = """
local n = 0
for i = 1, #KEYS do
  if redis.call('HGET', KEYS[i], 'worker') == ARGV[1] then
    redis.call('XCLAIM', ARGV[2], ARGV[3], ARGV[1], 0, ARGV[i + 3], 'JUSTID')
    n = n + 1
  end
end
return n
"""
# A new call is taken only if its gateway is still waiting for a worker (it may have given up).
TAKE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'waiting' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'live', 'worker', ARGV[1])
redis.call('PERSIST', KEYS[1])
return 1
"""


class LostCall(Exception):
    """Another worker owns this call now: this one must stop without writing anything more."""


class BrokerDown(Exception):
    """Redis went away mid-call: the call ends as interrupted, saved from this worker's own events."""


@dataclass
class Resume:
    """Where a taken-over call goes on: its checkpoint, the input after it, what consoles have."""

    at: Checkpoint
    entry: str  # input stream id the checkpoint was taken after
    last_seq: int  # the last sequence number consoles got
    previous: str | None
    published: set[tuple[str, ...]] = field(default_factory=set)  # identities of events after the checkpoint
    history: list[Event] = field(default_factory=list)  # every event consoles got
    last_t: float = 0.0  # stream time of the last of them

    def is_new(self, ev: Event) -> bool:
        """Consoles have not got this event yet: its identity is new, or it is a state (partial,
        metrics, risk) from after the point they had reached, or an error."""
        key = identity(ev)
        if key is not None:
            return key not in self.published
        return ev.type == "error" or ev.t > self.last_t


def identity(ev: Event) -> tuple[str, ...] | None:
    """What makes an event the same event when a new worker makes it again (None: no identity -
    partials, metrics and risk levels are states, re-sending them is harmless)."""
    if ev.type in ("call_started", "call_ended"):
        return (ev.type,)
    if ev.type == "transcript_final":
        return (ev.type, ev.utterance_id, str(ev.revision))
    if ev.type == "emotion":
        return (ev.type, ev.utterance_id)
    if ev.type == "hint":
        return (ev.type, ev.hint_id, ev.reason)
    if ev.type == "hint_feedback":
        return (ev.type, ev.hint_id, ev.action, ev.by)
    if ev.type == "overlap":
        return (ev.type, ev.interrupter, f"{ev.start:.2f}")
    if ev.type == "note":
        return (ev.type, ev.by, ev.text, str(ev.joining))
    return None


class ClusterCall(Call):
    """A call on a worker: input read from its stream, events written to the broker each step."""

    def __init__(
        self, worker: Worker, call_id: str, meta: b.CallMeta, pipeline: CallPipeline, resume: Resume | None
    ) -> None:
        assert worker.redis is not None
        super().__init__(
            call_id,
            meta.operator,
            meta.protocol,
            pipeline,
            worker.settings,
            worker.store,
            worker.executor,
            self._publish,
        )
        self.worker, self.redis, self.resume = worker, worker.redis, resume
        self.read_from = resume.entry if resume else "0-0"
        self._seq = resume.last_seq if resume else 0
        self._announce = resume is not None
        self.lost = False  # another worker took the call over
        self.broker_down = False
        self._checkpointed = 0.0

    async def work(self) -> None:
        reader = asyncio.create_task(self._read_input())
        try:
            await super().work()
        finally:
            reader.cancel()

    async def _read_input(self) -> None:
        """The call's input from its stream; if the broker stays away, the call ends with what it had."""
        key, failures, heard = b.input_key(self.call_id), 0, time.monotonic()
        while True:
            try:
                reply = await b.read(self.redis, {key: self.read_from}, 50, 1000)
                failures = 0
            except redis.RedisError as exc:
                failures += 1
                if failures > BROKER_RETRIES:
                    return self._end("broker unreachable", f"the broker is unreachable ({exc})")
                await asyncio.sleep(0.5)
                continue
            if not reply and not await self.redis.exists(b.call_key(self.call_id)):
                return self._end("broker restarted", "the broker lost this call (Redis restarted)")
            if reply or len(self.inbox):  # input queued here: the gateway may be holding back (backpressure)
                heard = time.monotonic()
            elif time.monotonic() - heard > self.settings.cluster.source_timeout_s:
                return self._lost_source()
            for _, entries in reply:
                for entry_id, fields in entries:
                    self.read_from = entry_id
                    try:
                        msg = b.decode_message(self.worker.signer.check(fields))
                    except b.MalformedEntry as exc:  # not from a gateway of ours: skipped, noted
                        await self.worker.rejects.record(self.redis, key, entry_id, str(exc))
                        continue
                    msg.entry = self.read_from
                    if not await self.inbox.put(msg) or isinstance(msg, End):
                        return  # the call has ended (or failed): nothing more to read for it

    def _end(self, reason: str, why: str) -> None:
        self.inbox.put_nowait(SourceError("broker", f"{why}; the call ends with what it had"))
        self.inbox.put_nowait(End(reason))

    def _lost_source(self) -> None:
        """Nothing from the call's gateway for `source_timeout_s` (it died, or lost the source without
        a word): the call ends incomplete with what was heard, and its slot is free again."""
        timeout = self.settings.cluster.source_timeout_s
        self.inbox.put_nowait(
            SourceError(SOURCE_LOST, f"no audio from the call's gateway for {timeout:.0f} s: the call may be cut short")
        )
        self.inbox.put_nowait(End("source lost"))

    async def _emit(self, events: list[Event]) -> None:
        """Drops what consoles already have (after a takeover), numbers the rest on, writes them."""
        pipe = self.pipeline
        if self._announce and pipe is not None and self.resume is not None:
            self._announce = False
            events = [
                *events,
                *pipe.announce(
                    WorkerChanged(
                        worker=self.worker.name,
                        previous=self.resume.previous,
                        resumed_from=self.resume.at.samples / SAMPLE_RATE,
                    )
                ),
            ]
        if self.resume is not None:
            events = [ev for ev in events if ev.type == "worker_changed" or self.resume.is_new(ev)]
        # the pipeline numbered them; after a takeover the replayed ones the consoles already have were
        # dropped above, so the worker numbers what is published: consoles see one gapless sequence
        for ev in events:
            self._seq += 1
            ev.seq = self._seq
        if events:
            await super()._emit(events)  # redaction, the store, then `_publish`
        elif pipe is not None:  # the step's progress, even without events
            await self._progress(pipe, [])

    async def _publish(self, call_id: str, events: list[Event], redacted: list[Event | None]) -> None:
        if self.pipeline is not None:
            await self._progress(self.pipeline, list(zip(events, redacted, strict=True)))

    async def _progress(self, pipe: CallPipeline, pairs: list[tuple[Event, Event | None]]) -> None:
        # a checkpoint (a few KB with the VAD state) at most every CHECKPOINT_S, and with events
        due = bool(pairs) or time.monotonic() - self._checkpointed > CHECKPOINT_S
        ckpt = pipe.checkpoint() if due else None
        if ckpt is not None:
            self._checkpointed = time.monotonic()
        entry = self.consumed.entry if self.consumed is not None else ""
        saved = json.dumps({**asdict(ckpt), "entry": entry, "seq": self._seq}) if ckpt and entry else ""
        args: list[Any] = [
            self.worker.name,
            self.settings.cluster.events_maxlen,
            pipe.samples,
            self.last_lag,
            saved,
            entry or "0-0",
        ]
        for ev, red in pairs:
            entry_json = b.encode_event(ev, red)
            args += [f"{ev.seq}-0", entry_json, self.worker.signer.tag({"e": entry_json})]
        keys = [b.call_key(self.call_id), b.events_key(self.call_id), b.EVENTS, b.input_key(self.call_id)]
        if self.broker_down:
            return
        try:
            written = await self.worker.publish(keys=keys, args=args)
        except redis.RedisError as exc:
            self.broker_down = True  # consoles get nothing more; the store and the report keep it all
            raise BrokerDown(f"the broker is unreachable: {exc}") from exc
        if written == -2:  # the call's hash is gone: Redis restarted empty
            self.broker_down = True
            raise BrokerDown("the broker lost this call (Redis restarted without it)")
        if written == -1:
            self.lost = True
            raise LostCall(f"call {self.call_id} was taken over by another worker")

    async def _abort(self, pipe: CallPipeline, code: str, message: str) -> None:
        if self.lost:
            return
        if self.broker_down:  # recorded for the report; nothing can be sent
            self.failure = f"{code}: {message}"
            pipe.abort(code, message)
            return
        await super()._abort(pipe, code, message)

    async def _close(self, pipe: CallPipeline) -> None:
        if not self.lost:
            await super()._close(pipe)
            return
        self.ended, self.pipeline = True, None  # another worker has it: nothing more from this one

    def _persist(self, pipe: CallPipeline) -> list[Event]:
        """The report covers the whole call, also what another worker heard before a takeover; without
        the broker, what this worker has."""
        events: list[Event] | None = None
        if not self.broker_down:
            with contextlib.suppress(redis.RedisError):
                events = self.worker.call_events(self.call_id)
        if events is None:
            events = [*(self.resume.history if self.resume else []), *pipe.events]
        status = call_status(events)
        if self.resume is not None and self.store is not None:  # this store has only what we processed
            earlier = [e for e in events if e.seq <= self.resume.last_seq]
            self.store.append_events(
                self.call_id, redact_events(earlier, self.language) if self.settings.report.redact_pii else earlier
            )
        self._redact_late_values(list(pipe.events))
        try:
            persist_report(self.settings, self.store, self.call_id, events, self.source, status, self.seal_audio())
        except Exception:  # persisting must not take the worker down
            log.exception("could not persist call %s", self.call_id)
        self.log_end(events, status)
        return []


class LoadMeter:
    """This worker's own CPU use (its process and children: the diarizer) as a share of the cores it may
    use, smoothed over a few seconds. Another program on the machine does not count (it made a worker
    refuse every call while it used one core of two); the lag rule still notices a machine that is short."""

    def __init__(self, cores: float | None = None) -> None:
        allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # macOS
        self.cores = cores or cpu_quota() or allowed
        self.share = 0.0
        self._proc = psutil.Process()
        self._last = (time.monotonic(), self._cpu())

    def _cpu(self) -> float:
        t = self._proc.cpu_times()
        return t.user + t.system + t.children_user + t.children_system + self._live_children()

    def _live_children(self) -> float:
        total = 0.0
        for child in self._proc.children(recursive=True):  # children's times count only once they exit
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
        return total

    def sample(self) -> float:
        now, cpu = time.monotonic(), self._cpu()
        (then, before), self._last = self._last, (now, cpu)
        used = max(0.0, cpu - before) / max(now - then, 1e-3) / self.cores
        self.share = 0.6 * self.share + 0.4 * min(used, 1.0)
        return self.share


def cpu_quota(path: str = "/sys/fs/cgroup/cpu.max") -> float | None:
    """The container's CPU limit in cores (cgroup v2 `cpu.max`: "200000 100000" is 2), None if unlimited."""
    try:
        quota, period = Path(path).read_text(encoding="ascii").split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def advertised_host(settings: Settings) -> str:
    """The address other machines reach this worker's health port on: `cluster.advertise_host`, else the
    bound host, else (bound to all interfaces) this machine's own address (a pod's IP in Kubernetes)."""
    if settings.cluster.advertise_host:
        return settings.cluster.advertise_host
    host = settings.server.host
    if host not in ("0.0.0.0", "::", ""):
        return host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


class Worker:
    def __init__(self, settings: Settings, models: Models | None = None, name: str | None = None) -> None:
        if not settings.cluster.broker:
            raise SystemExit("a worker needs a broker: --broker redis://HOST:PORT/DB (or cluster.broker in the config)")
        self.settings = settings
        self.models = models or Models(settings)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.signer = b.Signer(b.cluster_secret(settings))
        self.rejects = b.Rejects(f"worker {self.name}")
        self.calls: dict[str, ClusterCall] = {}
        self.jobs: dict[str, str] = {}  # call id -> its job's entry id
        self.load = LoadMeter(settings.cluster.cores)
        self.redis: aredis.Redis | None = None
        self.sync: redis.Redis = b.connect_sync(settings.cluster.broker)
        self.store = Store(settings.server.store)
        self.executor = call_executor()
        self._stop = threading.Event()
        self._last_taken = 0.0
        self.ready = False  # models warm, taking calls
        self.broker_ok = True  # the last round with the broker went through
        self.http: str | None = None  # where gateways fetch this worker's reports (its health port)

    # -- lifecycle --

    async def run(self, stop: asyncio.Event, on_ready: Callable[[], None] = lambda: None) -> None:
        await self.connect()
        assert self.redis is not None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, recover_interrupted, self.settings, self.store)
        await loop.run_in_executor(self.executor, warm_up, self.models, self.settings)
        beat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        beat.start()
        # retention holds on every worker (each keeps its own calls' reports, events and audio)
        sweep = asyncio.create_task(sweep_retention(self.settings, self.store, self.executor))
        health = await self._serve_health()
        self.ready = True
        on_ready()
        try:
            while not stop.is_set():
                try:
                    if not self.has_room() or not (await self._take_over() or await self._take_new()):
                        await asyncio.sleep(0.2)
                    self.broker_ok = True
                except redis.RedisError as exc:  # Redis away or restarted (empty): wait, then join again
                    self.broker_ok = False
                    log.warning("worker %s: broker unavailable (%s); retrying", self.name, exc)
                    await asyncio.sleep(1.0)
                    with contextlib.suppress(redis.RedisError):
                        await self._join()
        finally:
            sweep.cancel()
            self.ready = False  # draining: a readiness probe sends nothing new here
            await self._drain()
            if health is not None:
                health.close()
            self._stop.set()
            await self.redis.aclose()

    async def _serve_health(self) -> Any:
        """`cluster.health_port`: /health (200 when warm and the broker answers, else 503) and /metrics
        (supervisor token; JSON or Prometheus) for the orchestrator's probes and scrapes."""
        port = self.settings.cluster.health_port
        if port is None:
            return None
        from websockets.asyncio.server import ServerConnection, serve

        from callsense.service.http import Http, grant_in

        async def no_websockets(ws: ServerConnection) -> None:
            await ws.close(1008, "a worker takes calls from the broker, not from sources")

        grant = lambda token: grant_in(self.settings, token)  # noqa: E731
        # the same port serves this worker's recent calls, disputes and reports (console tokens, the same
        # rules as a server's) to the gateways, which ask every worker and merge
        http = Http(grant, self.health, self.metrics, lambda: self.store, dashboard=False)
        server = await serve(no_websockets, self.settings.server.host, port, process_request=http)
        bound = server.sockets[0].getsockname()[1]
        print(f"callsense worker {self.name}: health on http://{self.settings.server.host}:{bound}/health", flush=True)
        self.http = f"http://{advertised_host(self.settings)}:{bound}"
        return server

    def health(self) -> dict[str, Any]:
        ok = self.ready and self.broker_ok
        return {"status": "ok" if ok else "degraded", "worker": self.name, "ready": self.ready} | {
            "broker": self.broker_ok,
            "calls": len(self.calls),
        }

    def metrics(self) -> dict[str, Any]:
        calls = [
            {"call_id": cid, "operator_id": c.operator_id, "lag_s": c.last_lag, "queued_frames": len(c.inbox)}
            for cid, c in self.calls.items()
        ]
        return {"calls": calls, "load": round(self.load.share, 3), "broker_rejected": dict(self.rejects.counts)}

    async def connect(self) -> None:
        """The broker, the scripts, the consumer group (before taking calls)."""
        self.redis = b.connect(self.settings.cluster.broker or "")
        self.publish = self.redis.register_script(PUBLISH)
        self._take = self.redis.register_script(TAKE)
        await self._join()

    async def _join(self) -> None:
        """The consumer group, created by the first worker (a restarted Redis has none)."""
        assert self.redis is not None
        with contextlib.suppress(redis.ResponseError):  # BUSYGROUP: it exists
            await self.redis.xgroup_create(b.JOBS, b.GROUP, id="0", mkstream=True)

    async def _drain(self) -> None:
        """Stopping: calls in flight get `shutdown_timeout_s` to end; the rest are left to the other
        workers, which take them over once this one stops renewing its claims."""
        tasks = [c.task for c in self.calls.values() if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.server.shutdown_timeout_s)

    def has_room(self) -> bool:
        c = self.settings.cluster
        if len(self.calls) >= c.max_calls:
            return False
        if not self.calls:
            return True
        # a call just taken has not shown its load yet: one at a time
        settled = time.monotonic() - self._last_taken > 3.0
        return settled and self.load.share < c.max_load and all(x.last_lag < c.max_lag_s for x in self.calls.values())

    def _heartbeat(self) -> None:
        renew = self.sync.register_script(RENEW)
        while not self._stop.wait(self.settings.cluster.heartbeat_s):
            try:
                jobs = dict(self.jobs)
                if jobs:
                    renew(keys=[b.call_key(c) for c in jobs], args=[self.name, b.JOBS, b.GROUP, *jobs.values()])
                beat: dict[str, Any] = {"calls": len(jobs), "load": round(self.load.sample(), 2), "at": time.time()}
                if self.http:  # signed: a gateway sends console tokens there
                    beat |= {"http": self.http, "s": self.signer.tag({"name": self.name, "http": self.http})}
                self.sync.hset(f"{b.PREFIX}workers", self.name, json.dumps(beat))
            except redis.RedisError as exc:
                log.warning("worker %s: broker unreachable (%s)", self.name, exc)

    # -- taking calls --

    async def _take_new(self) -> bool:
        assert self.redis is not None
        reply: Any = await self.redis.xreadgroup(b.GROUP, self.name, {b.JOBS: ">"}, count=1, block=200)
        for _, entries in reply or []:
            for raw_id, fields in entries:
                entry_id = b.text(raw_id) or ""
                call = await self._job(entry_id, fields)
                if call is None:
                    continue
                call_id, meta = call
                if await self._take(keys=[b.call_key(call_id)], args=[self.name]) != 1:
                    await self._done_with_job(call_id, entry_id)
                    continue
                await self._start(call_id, entry_id, None, meta)
                return True
        return False

    async def _job(self, entry_id: str, fields: dict[bytes, bytes]) -> tuple[str, b.CallMeta] | None:
        """A job's call and its hash, checked; a job or hash no gateway wrote is refused (dead-lettered,
        acknowledged, and a gateway waiting on the call is told), never fatal."""
        assert self.redis is not None
        call_id = None
        try:
            call_id = b.decode_job(fields, self.signer) if fields else None
            if call_id is None:  # a job deleted meanwhile (XAUTOCLAIM returns it empty)
                await self._done_with_job("", entry_id)
                return None
            return call_id, b.decode_meta(await self.redis.hgetall(b.call_key(call_id)))
        except b.MalformedEntry as exc:
            await self.rejects.record(self.redis, b.JOBS, entry_id, f"{exc} (call {call_id!r})")
            if call_id is not None:
                await self._refuse(call_id, f"the call's record on the broker is malformed ({exc})")
            await self._done_with_job(call_id or "", entry_id)
            return None

    async def _refuse(self, call_id: str, why: str) -> None:
        """A call this worker cannot run ends at once: its gateway refuses or ends its source."""
        assert self.redis is not None
        if await self.redis.hget(b.call_key(call_id), "state") not in (b"waiting", b"live"):
            return
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(b.call_key(call_id), "state", "refused")
            p.srem(b.LIVE, call_id)
            p.expire(b.call_key(call_id), int(self.settings.cluster.ended_ttl_s))
            p.xadd(b.EVENTS, self.signer.sign(b.control(call_id, saved=True, clean=False, failure=why)))
            await p.execute()

    async def _take_over(self) -> bool:
        """A call whose worker stopped renewing its claim: take it over from its checkpoint."""
        assert self.redis is not None
        idle_ms = int(self.settings.cluster.takeover_after_s * 1000)
        reply: Any = await self.redis.xautoclaim(b.JOBS, b.GROUP, self.name, idle_ms, "0-0", count=1)
        for raw_id, fields in reply[1]:
            entry_id = b.text(raw_id) or ""
            call = await self._job(entry_id, fields)
            if call is None:
                continue
            call_id, meta = call
            if meta.state != "live":
                await self._done_with_job(call_id, entry_id)
                continue
            await self.redis.hset(b.call_key(call_id), "worker", self.name)  # the old one's writes are refused now
            try:
                resume = await self._resume_point(call_id, meta)
            except b.MalformedEntry as exc:
                await self.rejects.record(self.redis, b.call_key(call_id), "ckpt", str(exc))
                await self._refuse(call_id, f"the call's checkpoint on the broker is malformed ({exc})")
                await self._done_with_job(call_id, entry_id)
                continue
            log.warning(
                "worker %s takes over call %s from %s at %.1f s",
                self.name,
                call_id,
                resume.previous,
                resume.at.samples / 16000,
            )
            await self._start(call_id, entry_id, resume, meta)
            return True
        return False

    async def _resume_point(self, call_id: str, meta: b.CallMeta) -> Resume:
        assert self.redis is not None
        at, entry, after = _checkpoint(meta) or (Checkpoint(0, [0] * len(meta.roles), 0), "0-0", 0)
        published = await self._published(call_id)
        keys = {k for ev in published if ev.seq > after and (k := identity(ev)) is not None} | {("call_started",)}
        last_seq = max((ev.seq for ev in published), default=0)
        last_t = max((ev.t for ev in published), default=0.0)
        return Resume(at, entry, last_seq, meta.worker, keys, published, last_t)

    async def _published(self, call_id: str) -> list[Event]:
        """What consoles got of a call, from its event stream (entries no worker of ours wrote skipped)."""
        assert self.redis is not None
        return self._checked_events(b.events_key(call_id), await b.entries(self.redis, b.events_key(call_id)))

    def _checked_events(self, key: str, found: list[b.Entry]) -> list[Event]:
        events = []
        for entry_id, fields in found:
            try:
                events.append(b.raw_event(fields, self.signer))
            except b.MalformedEntry as exc:
                self.rejects.note(key, entry_id, str(exc))
        return events

    async def _start(self, call_id: str, entry_id: str, resume: Resume | None, meta: b.CallMeta) -> None:
        pipe = CallPipeline(
            self.settings,
            self.models,
            list(meta.roles),
            call_id=call_id,
            operator_id=meta.operator,
            language=meta.language,
            source=meta.protocol,
        )
        if resume is not None:
            pipe.resume(resume.at, resume.last_seq, resume.history)
        call = ClusterCall(self, call_id, meta, pipe, resume)
        self.calls[call_id], self.jobs[call_id] = call, entry_id
        self._last_taken = time.monotonic()
        self.store.open_call(call_id, meta.protocol, meta.operator)
        call.task = asyncio.create_task(self._run(call))

    async def _run(self, call: ClusterCall) -> None:
        with contextlib.suppress(LostCall):  # raised while a shutdown cancelled the call
            await call.work()
        if call.lost:
            log.warning("call %s was taken over by another worker; stopped here", call.call_id)
            self.jobs.pop(call.call_id, None)
            self.calls.pop(call.call_id, None)
            return
        await self._saved(call)

    async def _saved(self, call: ClusterCall) -> None:
        """The call ended and is saved: gateways learn it; its streams go after `ended_ttl_s`."""
        try:
            await self._announce_saved(call)
        except redis.RedisError as exc:  # saved on this worker all the same
            log.warning("call %s saved, but the broker could not be told: %s", call.call_id, exc)
        self.jobs.pop(call.call_id, None)
        self.calls.pop(call.call_id, None)

    async def _announce_saved(self, call: ClusterCall) -> None:
        assert self.redis is not None
        call_id, ttl = call.call_id, int(self.settings.cluster.ended_ttl_s)
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(b.call_key(call_id), "state", "ended")
            p.srem(b.LIVE, call_id)
            for key in (b.call_key(call_id), b.input_key(call_id), b.events_key(call_id)):
                p.expire(key, ttl)
            p.xadd(
                b.EVENTS,
                self.signer.sign(b.control(call_id, saved=True, clean=call.failure is None, failure=call.failure)),
                maxlen=self.settings.cluster.events_maxlen,
                approximate=True,
            )
            await p.execute()
        await self._done_with_job(call_id, self.jobs.get(call_id, ""))

    async def _done_with_job(self, call_id: str, entry_id: str) -> None:
        assert self.redis is not None
        self.jobs.pop(call_id, None)
        if entry_id:
            await self.redis.xack(b.JOBS, b.GROUP, entry_id)
            await self.redis.xdel(b.JOBS, entry_id)

    def call_events(self, call_id: str) -> list[Event]:
        """Every event consoles got for this call, in order (raw: the report redacts)."""
        found: Any = self.sync.xrange(b.events_key(call_id))
        return self._checked_events(b.events_key(call_id), [(b.text(i) or "", f) for i, f in found])


def _checkpoint(meta: b.CallMeta) -> tuple[Checkpoint, str, int] | None:
    """The call's last checkpoint as its worker saved it, the input entry it was taken after and the
    last sequence number then; `MalformedEntry` if it is not one."""
    if meta.ckpt is None:
        return None
    try:
        saved = json.loads(meta.ckpt)
        at = Checkpoint(**{k: v for k, v in saved.items() if k not in ("entry", "seq")})
        if not isinstance(saved["seq"], int) or not isinstance(saved["entry"], str):
            raise TypeError("seq and entry")
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise b.MalformedEntry(f"malformed checkpoint ({type(exc).__name__}: {exc})") from None
    return at, saved["entry"], saved["seq"]
