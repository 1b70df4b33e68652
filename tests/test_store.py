import time

from callsense.events import CallEnded, CallStarted, Sequencer
from callsense.reports.store import Store


def _events():
    seq = Sequencer("c1")
    return [seq.stamp(CallStarted(sample_rate=16000, channels=["operator", "customer"])),
            seq.stamp(CallEnded(duration_s=3.0))]


def test_saved_calls_expire_after_the_retention_period(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    report = {"metrics": {"duration_s": 3.0}}
    store.save_call("c1", _events(), report, source="a.flac")
    assert store.status("a.flac") == "done"
    assert store.purge_older_than(1) == []  # fresh: kept
    store.db.execute("UPDATE calls SET finished = ?", (time.time() - 3 * 86400,))
    assert store.purge_older_than(1) == ["c1"]
    assert store.status("a.flac") is None
    assert store.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0


def test_access_log_records_who_read_what(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    store.log_access("supervisor:sup", "c1", "console view")
    (ts, who, call, action), = store.access_log()
    assert (who, call, action) == ("supervisor:sup", "c1", "console view")
