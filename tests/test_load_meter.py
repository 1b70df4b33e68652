"""A worker admits calls by its own CPU use against its own cores (its container's quota, if any), not by
the machine's: another program busy on the machine does not make it refuse every call."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from callsense.service.worker import LoadMeter, cpu_quota


def _samples(meter: LoadMeter, n: int = 5, every: float = 0.4) -> float:
    for _ in range(n):
        time.sleep(every)  # the meter measures CPU time over an interval: it needs the interval
        meter.sample()
    return meter.share


def test_another_program_on_the_machine_does_not_count():
    import os
    import signal

    # started through a shell that exits at once: the busy program is not this process's child
    shell = subprocess.run(
        ["sh", "-c", f"'{sys.executable}' -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    busy = int(shell.stdout.strip())
    meter = LoadMeter(cores=2)
    try:
        assert _samples(meter) < 0.2
    finally:
        os.kill(busy, signal.SIGKILL)


def test_the_workers_own_work_counts():
    meter = LoadMeter(cores=2)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        assert _samples(meter) > 0.2  # one busy thread of two cores: about 0.5, smoothed
    finally:
        stop.set()
        worker.join()


def test_a_container_quota_is_the_workers_cores(tmp_path):
    limit = tmp_path / "cpu.max"
    limit.write_text("150000 100000\n")
    assert cpu_quota(str(limit)) == 1.5
    limit.write_text("max 100000\n")
    assert cpu_quota(str(limit)) is None
    assert cpu_quota(str(tmp_path / "missing")) is None
    assert LoadMeter(cores=None).cores >= 1
