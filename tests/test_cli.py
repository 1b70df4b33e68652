import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from callsense.config import SAMPLES_DIR as SAMPLES

ROOT = Path(__file__).resolve().parent.parent


def run(*args, timeout: float = 600, **kw):
    return subprocess.run(
        [sys.executable, "-m", "callsense.cli.main", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout, **kw
    )


def test_help_lists_the_commands():
    out = run("--help").stdout
    for cmd in ("models", "transcribe", "diarize", "analyze", "stream", "serve", "console", "audit", "bench", "demo"):
        assert cmd in out


def test_missing_model_is_one_plain_message(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("models:\n  segmentation: /nowhere/pytorch_model.bin\n")
    proc = run("--config", str(cfg), "diarize", str(SAMPLES / "en_call_mono.flac"))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "/nowhere/pytorch_model.bin" in proc.stderr


def test_bad_audio_is_one_plain_message(tmp_path):
    junk = tmp_path / "x.wav"
    junk.write_bytes(b"not audio at all")
    proc = run("transcribe", str(junk))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "cannot decode" in proc.stderr


@pytest.mark.slow
def test_transcribe_json_with_channels():
    proc = run(
        "transcribe",
        str(SAMPLES / "ru_call_stereo.flac"),
        "--language",
        "ru",
        "--channels",
        "customer,operator",
        "--format",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["language"] == "ru"
    roles = {s["role"] for s in out["segments"]}
    assert roles == {"operator", "customer"}
    # the flag swapped the channels: the left channel (the prompt voice saying "Здравствуйте") is now "customer"
    first = out["segments"][0]
    assert first["role"] == "customer" and first["words"]


@pytest.mark.slow
def test_audit_is_resumable_and_survives_corrupt_files(tmp_path, clip):
    folder = tmp_path / "calls"
    clip("ru_call_stereo.flac", 12, "calls/call_+79161234567_Ivan-Petrov.flac")
    (folder / "bad_Maria_Smith.wav").write_bytes(b"RIFF....WAVEjunk")
    # a reference transcript beside the recordings is not a call (chats only with --chats)
    (folder / "reference.json").write_text((SAMPLES / "ru_call_stereo.json").read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "metadata.csv").write_text(
        "file,operator_id,team,date\ncall_+79161234567_Ivan-Petrov.flac,op-7,cards,2026-12-01\n", encoding="utf-8"
    )
    out = tmp_path / "out"
    first = run("audit", str(folder), "--out", str(out))
    assert first.returncode == 1 and "1 recording(s) failed" in first.stderr, first.stderr  # the bad file
    summary = json.loads((out / "summary.json").read_text())
    assert summary["calls"] == 1 and summary["failed"] == 1
    # per checklist item and per operator; each call worth listening to says why, where, and links its report
    assert summary["checklist"] and all(0 <= i["failure_rate"] <= 1 and i["judged"] == 1 for i in summary["checklist"])
    (card,) = summary["scorecards"]
    assert card["operator_id"] == "op-7" and set(card["checklist_failure_rate"]) == {i["id"] for i in summary["checklist"]}
    (worth,) = summary["worth_listening"]
    assert worth["team"] == "cards" and worth["why"] and Path(worth["report"]).exists()
    assert summary["failures"][0]["source"].startswith("bad_[NAME]")
    assert (out / "calls.csv").exists() and (out / "summary.html").exists()
    # the recordings' names carry a phone number and names: no export, and no row of the store, has them
    for written in [p for p in out.rglob("*") if p.is_file() and p.name != ".source-key"]:  # reports/ too
        data = written.read_bytes()
        assert not any(v in data for v in (b"79161234567", b"Ivan", b"Maria")), written.name
    again = run("audit", str(folder), "--out", str(out))
    assert json.loads((out / "summary.json").read_text())["skipped_already_done"] == 1, again.stderr


def _blas_threads() -> int:
    import numpy  # noqa: F401  (loads its BLAS)
    from threadpoolctl import threadpool_info

    return max(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")


def test_audit_workers_run_math_libraries_on_their_share_of_the_cores():
    """An audit worker's BLAS pool is as wide as the worker's share of the cores, not as the machine
    (it would compete with the other workers); the audit leaves its own environment as it was."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from callsense.reports.audit import MATH_THREADS, _worker_threads

    before = {k: os.environ.get(k) for k in MATH_THREADS}
    with _worker_threads(1), ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert pool.submit(_blas_threads).result() == 1
    assert {k: os.environ.get(k) for k in MATH_THREADS} == before


def _names_then_torch() -> tuple[list[str], bool, bool]:
    import sys

    from callsense.reports.privacy import find_pii

    text = "My name is John Smith and I live in Boston."
    names = [text[a:b] for a, b, kind in find_pii(text, "en") if kind == "NAME"]
    before = "torch" in sys.modules
    import torch  # a mono call's diarization imports it later in the same worker

    return names, before, torch.tensor([1.0]).sum().item() == 1.0


def test_an_audit_worker_finds_names_without_loading_torch_and_can_still_load_it():
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from callsense.reports.audit import start_worker

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=start_worker) as pool:
        names, torch_before, torch_works = pool.submit(_names_then_torch).result()
    assert names == ["John Smith"] and not torch_before and torch_works


def test_an_audit_takes_the_longest_recordings_first(tmp_path):
    import numpy as np
    import soundfile as sf

    from callsense.reports.audit import _longest_first

    for name, seconds in (("short.wav", 1), ("long.flac", 5), ("mid.wav", 2)):
        sf.write(tmp_path / name, np.random.default_rng(0).normal(0, 0.1, 16000 * seconds), 16000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    calls = [{"path": str(p)} for p in sorted(tmp_path.iterdir())] + [{"path": str(tmp_path / "gone.wav")}]
    order = [Path(c["path"]).name for c in _longest_first(calls)]
    assert order[:3] == ["long.flac", "mid.wav", "short.wav"] and set(order[3:]) == {"bad.wav", "gone.wav"}


@pytest.mark.slow
def test_audit_runs_on_a_local_dask_cluster(settings, tmp_path, clip):
    pytest.importorskip("distributed")
    import pyarrow.parquet as pq

    from callsense.reports.audit import run_audit

    folder = tmp_path / "calls"
    clip("ru_call_stereo.flac", 12, "calls/stereo.flac")
    summary = run_audit(folder, tmp_path / "out", settings, workers=1, engine="dask")
    assert summary["calls"] == 1 and summary["failed"] == 0
    table = pq.read_table(tmp_path / "out" / "calls.parquet")
    assert table.num_rows == 1 and "operator_conduct" in table.column_names


def test_a_port_in_use_is_one_line_before_any_model_loads():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run("serve", "--port", str(port), timeout=60)  # model loading alone takes longer on any machine
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"port {port} on 127.0.0.1 is in use" in proc.stderr and "--port" in proc.stderr


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:8765", "use ws://127.0.0.1:8765"),
        ("127.0.0.1:8765", "use ws://HOST:PORT"),
        ("ws://127.0.0.1:{closed}", "is `callsense serve` running?"),
    ],
)
def test_stream_to_a_wrong_address_is_one_line(url, says):
    import socket

    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    proc = run("stream", str(SAMPLES / "ru_call_stereo.flac"), "--url", url.format(closed=closed), "--token", "x")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and says in proc.stderr, proc.stderr[-500:]


def test_an_audit_of_nothing_fails_plainly(tmp_path):
    missing = run("audit", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert missing.returncode == 2 and "no folder" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a call")
    empty = run("audit", str(tmp_path / "empty"), "--out", str(tmp_path / "out"))
    assert empty.returncode == 1 and "no recordings found" in empty.stderr, empty.stderr


def test_every_command_explains_its_options_and_shows_an_example():
    import argparse

    from callsense.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, cmd in sub.choices.items():
        text = cmd.format_help()
        assert "examples:\n  callsense " + name in text, name
        for action in cmd._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_version():
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("callsense ")


@pytest.mark.slow
def test_demo_runs_the_whole_live_path_and_writes_its_report(tmp_path, clip):
    """`make demo` in short: server, streamed call, operator console, stored report. The user's config
    names no tokens: the demo makes one-time ones (it used to fail with a traceback)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"server:\n  store: {tmp_path / 'store' / 'calls.sqlite'}\n", encoding="utf-8")
    # 20 s of the stereo sample call, not the 110 s demo call: the same path in a fraction of the time
    # (the demo call's hints are checked through the pipeline and in the browser test)
    proc = run("--config", str(cfg), "demo", "--file", str(clip("ru_call_stereo.flac", 20)), "--speed", "8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"\?token=demo-sup-\S+", proc.stdout.replace("\n", "")), "the dashboard address has a token"
    assert "Quality report:" in proc.stdout and "summary for the ticket" in proc.stdout
    assert list((tmp_path / "store" / "reports").glob("*/report.html"))
    # `callsense report CALL_ID` finds it, and that reading is in the access log
    import sqlite3

    db = sqlite3.connect(tmp_path / "store" / "calls.sqlite")
    (call_id,) = db.execute("SELECT call_id FROM calls").fetchone()
    shown = run("--config", str(cfg), "report", call_id, "--summary")
    assert shown.returncode == 0 and "report.html" in shown.stdout, shown.stderr[-2000:]
    assert "Причина обращения" in shown.stdout  # the Russian sample's summary, in Russian
    assert ("report view",) in db.execute("SELECT action FROM access_log WHERE call_id = ?", (call_id,)).fetchall()
    missing = run("--config", str(cfg), "report", "no-such-call")
    assert missing.returncode == 2 and "no report" in missing.stdout


@pytest.mark.slow
def test_ctrl_c_stops_an_audit_at_once_and_the_next_run_resumes(tmp_path, clip):
    """Ctrl-C reaches the whole process group: the audit stops within seconds (it used to run on through
    every queued call), keeps what it saved, and the next run goes on after it."""
    import os
    import signal
    import sqlite3
    import time

    folder = tmp_path / "calls"
    for i in range(2):  # Ctrl-C lands while the second is processed
        clip("ru_call_stereo.flac", 20, f"calls/call{i}.flac")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "callsense.cli.main", "audit", str(folder), "--out", str(out), "--workers", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # as from a terminal: a shell's background job (CI's own runner may be one) inherits SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )

    def saved() -> int:
        try:
            with sqlite3.connect(out / "audit.sqlite") as db:
                return db.execute("SELECT COUNT(*) FROM calls WHERE status = 'done'").fetchone()[0]
        except sqlite3.Error:
            return 0

    deadline = time.monotonic() + 300
    while saved() < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert saved() >= 1 and proc.poll() is None, "the first call was saved while the second was still to do"
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the audit went on after Ctrl-C")
    assert proc.returncode == 130 and "interrupted" in err, err[-500:]
    done = saved()
    assert done == 1
    again = run("audit", str(folder), "--out", str(out), "--workers", "1")
    assert again.returncode == 0, again.stderr[-500:]
    assert json.loads((out / "summary.json").read_text())["skipped_already_done"] == done
