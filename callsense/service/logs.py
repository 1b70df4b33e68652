"""Logging for the long-running processes (`serve`, `worker`): timestamped text for a terminal, or one
JSON object per line for a log collector (`server.log_format: json`, `CALLSENSE_SERVER__LOG_FORMAT=json`).
Records carry ids, codes and numbers only: no call text is ever logged (docs/privacy.md)."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

# what a LogRecord has of its own: everything else on it came in `extra=` and goes into the JSON line
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line |= {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info).splitlines()[-1]  # the exception, not the trace
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        text = super().format(record)
        return text + "".join(f" {k}={v}" for k, v in extra.items()) if extra else text


def setup_logging(fmt: str = "text", level: str = "INFO") -> None:
    """The root logger writes to stderr in `fmt` from `level` up (called once by the process's command)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
