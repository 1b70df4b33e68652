"""SQLite store for finished calls (events, report) and the access log; shared by server and audit."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
  call_id TEXT PRIMARY KEY, source TEXT, operator_id TEXT, status TEXT, error TEXT,
  started REAL, finished REAL, duration_s REAL, report TEXT
);
CREATE TABLE IF NOT EXISTS events (call_id TEXT, seq INTEGER, type TEXT, body TEXT, PRIMARY KEY (call_id, seq));
CREATE TABLE IF NOT EXISTS access_log (ts REAL, who TEXT, call_id TEXT, action TEXT);
"""


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def save_call(self, call_id: str, events: list[Any], report: dict[str, Any] | None, *, source: str = "",
                  operator_id: str | None = None, status: str = "done", error: str | None = None) -> None:
        duration = report["metrics"]["duration_s"] if report else None
        with self.db:
            self.db.execute("DELETE FROM events WHERE call_id = ?", (call_id,))
            self.db.executemany(
                "INSERT INTO events VALUES (?, ?, ?, ?)",
                [(call_id, e.seq, e.type, e.model_dump_json()) for e in events if e.type != "transcript_partial"],
            )
            self.db.execute(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (call_id, source, operator_id, status, error, events[0].wall if events else time.time(), time.time(),
                 duration, json.dumps(report, ensure_ascii=False) if report else None),
            )

    def record_failure(self, call_id: str, source: str, error: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO calls (call_id, source, status, error, finished) VALUES "
                            "(?, ?, 'failed', ?, ?)", (call_id, source, error, time.time()))

    def status(self, source: str) -> str | None:
        row = self.db.execute("SELECT status FROM calls WHERE source = ?", (source,)).fetchone()
        return row[0] if row else None

    def reports(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT call_id, source, operator_id, report FROM calls WHERE status = 'done'")
        return [{"call_id": c, "source": s, "operator_id": o, **json.loads(r)} for c, s, o, r in rows if r]

    def failures(self) -> list[tuple[str, str]]:
        return self.db.execute("SELECT source, error FROM calls WHERE status = 'failed'").fetchall()

    def log_access(self, who: str, call_id: str, action: str) -> None:
        with self.db:
            self.db.execute("INSERT INTO access_log VALUES (?, ?, ?, ?)", (time.time(), who, call_id, action))

    def access_log(self) -> list[tuple]:
        return self.db.execute("SELECT ts, who, call_id, action FROM access_log ORDER BY ts").fetchall()

    def purge_older_than(self, days: float) -> list[str]:
        cutoff = time.time() - days * 86400
        with self.db:
            old = [r[0] for r in self.db.execute("SELECT call_id FROM calls WHERE finished < ?", (cutoff,))]
            for cid in old:
                self.db.execute("DELETE FROM events WHERE call_id = ?", (cid,))
                self.db.execute("DELETE FROM calls WHERE call_id = ?", (cid,))
        return old
