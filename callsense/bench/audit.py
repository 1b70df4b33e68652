"""Audit throughput: `callsense audit` over a folder of distinct calls, in audio hours per wall hour.

The calls are all different (copies of one call would flatter caches and hide the spread): the four
Harper Valley calls with audio (real voices, English, 8 kHz, agent and caller on their own channels)
and Russian calls constructed from the data folder (`bench.wholecall`, telephone band). The wall time
includes starting the worker processes and loading their models, as a user's audit pays it; the
workers' CPU time beside it shows whether a slow run was the code or a machine that gave it less
than its cores.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import soundfile as sf

from callsense.config import SAMPLE_RATE, Settings


def audit_folder(data: Path, folder: Path, ru_calls: int = 4) -> int:
    """Writes the calls into `folder` (stereo FLAC, operator on channel 0); returns how many."""
    from callsense.bench.datasets import harper_valley_calls
    from callsense.bench.wholecall import constructed_calls, telephone

    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for _, audio in harper_valley_calls(data):
        sf.write(folder / f"en_{n:02d}.flac", audio.T, SAMPLE_RATE)
        n += 1
    for i, b in enumerate(constructed_calls(data, ru_calls, seed=11)):
        sf.write(folder / f"ru_{i:02d}.flac", telephone(b.render()).T, SAMPLE_RATE)
        n += 1
    return n


def bench_audit(settings: Settings, data: Path, workers: list[int], tmp: Path, ru_calls: int = 4) -> dict[str, Any]:
    from callsense.reports.audit import run_audit

    folder = tmp / "audit_in"
    shutil.rmtree(folder, ignore_errors=True)
    calls = audit_folder(data, folder, ru_calls)
    out: dict[str, Any] = {}
    for w in workers:
        dest = tmp / f"audit_out_{w}"
        shutil.rmtree(dest, ignore_errors=True)
        t0, cpu0 = time.monotonic(), _workers_cpu()
        summary = run_audit(folder, dest, settings, workers=w)
        wall, cpu = time.monotonic() - t0, _workers_cpu() - cpu0
        out[str(w)] = {
            "workers": w,
            "calls": summary["calls"],
            "failed": summary["failed"],
            "files": calls,
            "audio_min": round(summary["audio_hours"] * 60, 2),
            "wall_s": round(wall, 1),
            "workers_cpu_s": round(cpu, 1),
            "cores_busy": round(cpu / wall, 2),
            "audio_hours_per_wall_hour": round(summary["audio_hours"] / (wall / 3600), 2),
        }
    return out


def _workers_cpu() -> float:
    """CPU seconds of this process's finished child processes (the audit's workers, once joined).
    Next to the wall time it shows a run that the machine starved: cores_busy well under the workers."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
