"""SQLite store (WAL) for calls, their events and reports, and the access log; shared by server and audit.

The live server appends each call's events as they happen (`open_call`, `append_events`), so a
killed process loses at most the last moments of a call; on the next start, calls still marked
`live` are closed as `interrupted` with what they had. Call ids are data, never paths: files of a
call live under `storage_name(call_id)`, a hash.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from callsense.events import Event, parse_event

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
  call_id TEXT PRIMARY KEY, source TEXT, operator_id TEXT, status TEXT, error TEXT,
  started REAL, finished REAL, duration_s REAL, report TEXT
);
CREATE TABLE IF NOT EXISTS events (call_id TEXT, seq INTEGER, type TEXT, body TEXT, PRIMARY KEY (call_id, seq));
CREATE TABLE IF NOT EXISTS access_log (ts REAL, who TEXT, call_id TEXT, action TEXT);
CREATE TABLE IF NOT EXISTS disputes (
  id INTEGER PRIMARY KEY AUTOINCREMENT, call_id TEXT, item TEXT, by TEXT, comment TEXT, at REAL,
  outcome TEXT DEFAULT 'open', decided_by TEXT, decided_at REAL, decision TEXT, UNIQUE (call_id, item)
);
"""
DISPUTE_COLUMNS = ("id", "call_id", "item", "by", "comment", "at", "outcome", "decided_by", "decided_at", "decision")


class DisputeError(ValueError):
    """A dispute that cannot be taken or decided (said to the console that sent it)."""


def _cx(report: str | None) -> float | None:
    scores = (json.loads(report) if report else {}).get("scores") or {}
    return (scores.get("customer_experience") or {}).get("score")


def storage_name(call_id: str) -> str:
    """The folder/file name of a call's artefacts: a hash, so no id can reach outside the store."""
    return hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).hexdigest()[:24]


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process kill
        self.db.execute("PRAGMA secure_delete=ON")  # a row written again (redacted later) leaves no old bytes
        self.db.executescript(SCHEMA)
        self._lock = threading.Lock()  # one connection, used from the event loop and call threads

    @property
    def root(self) -> Path:
        return self.path.parent

    def call_dir(self, kind: str, call_id: str) -> Path:
        return self.root / kind / storage_name(call_id)

    # -- live calls, as they happen --

    def open_call(self, call_id: str, source: str, operator_id: str | None) -> None:
        with self._lock, self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO calls (call_id, source, operator_id, status, started) VALUES (?, ?, ?, 'live', ?)",
                (call_id, source, operator_id, time.time()),
            )

    def append_events(self, call_id: str, events: Iterable[Event]) -> None:
        rows = [(call_id, e.seq, e.type, e.model_dump_json()) for e in events if e.type != "transcript_partial"]
        if rows:
            with self._lock, self.db:
                self.db.executemany("INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?)", rows)

    def events(self, call_id: str, who: str = "system") -> list[Event]:
        """A stored call's events; every read is in the access log."""
        self.log_access(who, call_id, "read events")
        with self._lock:
            rows = self.db.execute("SELECT body FROM events WHERE call_id = ? ORDER BY seq", (call_id,)).fetchall()
        return [parse_event(body) for (body,) in rows]

    def finish_call(
        self, call_id: str, report: dict[str, Any] | None, status: str = "done", error: str | None = None
    ) -> None:
        duration = report["metrics"]["duration_s"] if report else None
        with self._lock, self.db:
            self.db.execute(
                "UPDATE calls SET status = ?, error = ?, finished = ?, duration_s = ?, report = ? WHERE call_id = ?",
                (status, error, time.time(), duration, json.dumps(report, ensure_ascii=False) if report else None, call_id),
            )

    def live_calls(self) -> list[tuple[str, str, str | None]]:
        """(call_id, source, operator_id) of calls a previous process left unfinished."""
        with self._lock:
            return self.db.execute("SELECT call_id, source, operator_id FROM calls WHERE status = 'live'").fetchall()

    def operator_of(self, call_id: str) -> tuple[bool, str | None]:
        """(whether the call is stored, whose it is)."""
        with self._lock:
            row = self.db.execute("SELECT operator_id FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        return (row is not None, row[0] if row else None)

    def known(self, call_id: str) -> bool:
        with self._lock:
            return self.db.execute("SELECT 1 FROM calls WHERE call_id = ?", (call_id,)).fetchone() is not None

    # -- whole calls (audit) --

    def save_call(
        self,
        call_id: str,
        events: list[Event],
        report: dict[str, Any] | None,
        *,
        source: str = "",
        operator_id: str | None = None,
        status: str = "done",
        error: str | None = None,
    ) -> None:
        with self._lock, self.db:
            self.db.execute("DELETE FROM events WHERE call_id = ?", (call_id,))
            self.db.execute(
                "INSERT OR REPLACE INTO calls (call_id, source, operator_id, status, started) VALUES (?, ?, ?, 'live', ?)",
                (call_id, source, operator_id, events[0].wall if events else time.time()),
            )
        self.append_events(call_id, events)
        self.finish_call(call_id, report, status, error)

    def record_failure(self, call_id: str, source: str, error: str) -> None:
        with self._lock, self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO calls (call_id, source, status, error, finished) VALUES (?, ?, 'failed', ?, ?)",
                (call_id, source, error, time.time()),
            )

    def status(self, source: str) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT status FROM calls WHERE source = ?", (source,)).fetchone()
        return row[0] if row else None

    def reports(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self.db.execute(
                "SELECT call_id, source, operator_id, report FROM calls WHERE status IN ('done', 'interrupted')"
            ).fetchall()
        return [{"call_id": c, "source": s, "operator_id": o, **json.loads(r)} for c, s, o, r in rows if r]

    def recent(self, limit: int = 50, operators: set[str] | None = None) -> list[dict[str, Any]]:
        """The newest ended calls, newest first (only these operators' calls when given): what a
        recent-calls page lists."""
        only, args = "", list[object]([limit])
        if operators is not None:
            only = f" AND operator_id IN ({','.join('?' * len(operators))})"
            args = [*sorted(operators), limit]
        with self._lock:
            rows = self.db.execute(
                "SELECT call_id, operator_id, status, started, duration_s, report FROM calls "
                f"WHERE status != 'live'{only} ORDER BY COALESCE(finished, started) DESC LIMIT ?",
                args,
            ).fetchall()
        return [
            {"call_id": c, "operator_id": o, "status": st, "started": t, "duration_s": d}
            | {"customer_experience": _cx(report)}
            for c, o, st, t, d, report in rows
        ]

    def failures(self) -> list[tuple[str, str]]:
        with self._lock:
            return self.db.execute("SELECT source, error FROM calls WHERE status = 'failed'").fetchall()

    def log_access(self, who: str, call_id: str, action: str) -> None:
        with self._lock, self.db:
            self.db.execute("INSERT INTO access_log VALUES (?, ?, ?, ?)", (time.time(), who, call_id, action))

    def access_log(self) -> list[tuple[float, str, str, str]]:
        with self._lock:
            return self.db.execute("SELECT ts, who, call_id, action FROM access_log ORDER BY ts").fetchall()

    # -- disputes: the call's operator answers a scorecard item, a supervisor (the analyst) decides --

    def add_dispute(self, call_id: str, item: str, by: str, comment: str) -> dict[str, Any]:
        """One dispute per item of a call (an operator says it once; the analyst's answer is final)."""
        try:
            with self._lock, self.db:
                cur = self.db.execute(
                    "INSERT INTO disputes (call_id, item, by, comment, at) VALUES (?, ?, ?, ?, ?)",
                    (call_id, item, by, comment, time.time()),
                )
        except sqlite3.IntegrityError:
            raise DisputeError(f"item {item!r} of call {call_id!r} is already disputed") from None
        return self._row(int(cur.lastrowid or 0))

    def decide_dispute(self, dispute_id: int, outcome: str, by: str, decision: str) -> dict[str, Any]:
        with self._lock, self.db:
            cur = self.db.execute(
                "UPDATE disputes SET outcome = ?, decided_by = ?, decided_at = ?, decision = ? "
                "WHERE id = ? AND outcome = 'open'",
                (outcome, by, time.time(), decision, dispute_id),
            )
        if cur.rowcount != 1:
            raise DisputeError(f"no open dispute {dispute_id}")
        return self._row(dispute_id)

    def dispute(self, dispute_id: int) -> dict[str, Any] | None:
        with self._lock:
            row = self.db.execute(
                f"SELECT {', '.join(DISPUTE_COLUMNS)} FROM disputes WHERE id = ?", (dispute_id,)
            ).fetchone()
        return dict(zip(DISPUTE_COLUMNS, row, strict=True)) if row else None

    def _row(self, dispute_id: int) -> dict[str, Any]:
        row = self.dispute(dispute_id)
        assert row is not None, "written under the same connection"
        return row

    def disputes(self, call_id: str | None = None, operators: set[str] | None = None) -> list[dict[str, Any]]:
        """Disputes, open ones first then newest first: of one call, or of these operators' calls."""
        where, args = ["1"], list[object]()
        if call_id is not None:
            where.append("d.call_id = ?")
            args.append(call_id)
        if operators is not None:
            where.append(f"c.operator_id IN ({','.join('?' * len(operators))})")
            args += sorted(operators)
        columns = ", ".join(f"d.{c}" for c in DISPUTE_COLUMNS)
        with self._lock:
            rows = self.db.execute(
                f"SELECT {columns}, c.operator_id FROM disputes d JOIN calls c ON c.call_id = d.call_id "
                f"WHERE {' AND '.join(where)} ORDER BY d.outcome != 'open', d.at DESC LIMIT 500",
                args,
            ).fetchall()
        return [dict(zip((*DISPUTE_COLUMNS, "operator_id"), row, strict=True)) for row in rows]

    def report_of(self, call_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.db.execute("SELECT report FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def purge_older_than(self, days: float) -> list[str]:
        cutoff = time.time() - days * 86400
        with self._lock, self.db:
            old = [r[0] for r in self.db.execute("SELECT call_id FROM calls WHERE finished < ?", (cutoff,))]
            for cid in old:
                for table in ("events", "disputes", "calls"):
                    self.db.execute(f"DELETE FROM {table} WHERE call_id = ?", (cid,))
        return old

    def close(self) -> None:
        with self._lock:
            self.db.close()
