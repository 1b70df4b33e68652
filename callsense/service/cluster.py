"""A whole cluster on this machine: a private Redis, gateways and workers as real processes.

`make cluster-demo`, `callsense bench --only cluster` and the tests use it; production runs the same
commands under systemd or compose (docs/deployment.md).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import yaml

INSTALL_HINT = (
    "redis-server is not installed: `apt-get install redis-server` (Debian/Ubuntu; scripts/bootstrap.sh "
    "does it when run as root), or point --broker at a Redis 7 you run"
)


class RedisMissing(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalRedis:
    """redis-server on a free loopback port, without persistence (streams hold raw audio), with a
    password of its own (as any Redis a cluster uses should have: other local users can reach it)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir, self.port = workdir, free_port()
        self.password = secrets.token_hex(16)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> LocalRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisMissing(INSTALL_HINT)
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "redis.conf"  # the password in a private file, not on the command line (ps)
        conf.touch(mode=0o600)
        conf.write_text(
            f'port {self.port}\nbind 127.0.0.1\nsave ""\nappendonly no\ndir "{self.workdir}"\nrequirepass {self.password}\n',
            encoding="utf-8",
        )
        self.proc = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Process:
    """One callsense process of the cluster; its output goes to a log file."""

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name, self.log = name, log
        self._out: IO[str] = open(log, "w", encoding="utf-8")  # noqa: SIM115 - open for the process's life
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "0"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "callsense.cli", *args], stdout=self._out, stderr=subprocess.STDOUT, env=env, text=True
        )

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log.read_text(encoding="utf-8", errors="replace"))
            if found:
                return found
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); see {self.log}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not print {pattern!r} within {timeout:.0f} s; see {self.log}")

    def kill(self) -> None:
        """kill -9: no clean-up of any kind, as when a machine dies."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._out.close()


class LocalCluster:
    """Redis + gateways + workers on this machine, each worker with its own store."""

    def __init__(self, workdir: Path, config: dict[str, Any], gateways: int = 1, workers: int = 2) -> None:
        self.workdir, self.config = workdir, config
        self.n_gateways, self.n_workers = gateways, workers
        self.redis = LocalRedis(workdir / "redis")
        self.gateways: list[Process] = []
        self.workers: dict[str, Process] = {}
        self.urls: list[str] = []
        self._client: Any = None  # redis.Redis, made on first use
        self.secret = secrets.token_hex(32)  # signs the cluster's entries on the broker

    def _config(self, name: str) -> Path:
        data = yaml.safe_load(yaml.safe_dump(self.config)) or {}
        data.setdefault("server", {})["store"] = str(self.workdir / name / "calls.sqlite")
        data.setdefault("cluster", {}).update(broker=self.redis.url, secret=self.secret)
        path = self.workdir / f"{name}.yaml"
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    def start(self, timeout: float = 300) -> LocalCluster:
        self.redis.start()
        for i in range(self.n_workers):
            self.add_worker(f"worker{i + 1}")
        for i in range(self.n_gateways):
            name = f"gateway{i + 1}"
            gw = Process(
                name,
                ["--config", str(self._config(name)), "serve", "--role", "gateway", "--port", "0"],
                self.workdir / f"{name}.log",
            )
            self.gateways.append(gw)
        for gw in self.gateways:
            port = gw.wait_for(r"serving on ws://[\d.]+:(\d+)", timeout).group(1)
            self.urls.append(f"ws://127.0.0.1:{port}")
        for worker in self.workers.values():
            worker.wait_for(r"taking calls", timeout)
        return self

    def add_worker(self, name: str) -> Process:
        self.workers[name] = Process(
            name, ["--config", str(self._config(name)), "worker", "--name", name], self.workdir / f"{name}.log"
        )
        return self.workers[name]

    def worker_of(self, call_id: str) -> str | None:
        from callsense.service.broker import call_key, text

        return text(self._redis().hget(call_key(call_id), "worker"))

    def _redis(self) -> Any:
        if self._client is None:  # one client for all the polls of a test or bench
            import redis

            self._client = redis.Redis.from_url(self.redis.url)
        return self._client

    def is_live(self, call_id: str) -> bool:
        from callsense.service.broker import LIVE

        return bool(self._redis().sismember(LIVE, call_id))

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        for proc in [*self.gateways, *self.workers.values()]:
            proc.stop()
        self.redis.stop()
