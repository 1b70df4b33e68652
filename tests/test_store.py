import time

from callsense.events import CallEnded, CallStarted, Sequencer
from callsense.reports.store import Store


def _events():
    seq = Sequencer("c1")
    return [
        seq.stamp(CallStarted(sample_rate=16000, channels=["operator", "customer"])),
        seq.stamp(CallEnded(duration_s=3.0)),
    ]


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
    ((ts, who, call, action),) = store.access_log()
    assert (who, call, action) == ("supervisor:sup", "c1", "console view")


def test_hostile_call_ids_never_reach_outside_the_store(tmp_path, settings):
    """Ids are data: files live under a hash, and retention deletes only inside the store."""
    from callsense.service.calls import purge_expired

    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("do not delete")
    settings.server.store = tmp_path / "store" / "calls.sqlite"
    store = Store(settings.server.store)
    hostile = ["", ".", "..", "../../precious", "/precious", str(outside), "a/../../precious", "\x00", "é" * 300]
    for cid in hostile:
        folder = store.call_dir("reports", cid)
        assert folder.parent == store.root / "reports" and folder.name.isalnum()
        folder.mkdir(parents=True, exist_ok=True)
        store.save_call(cid, _events(), {"metrics": {"duration_s": 3.0}}, source=f"{cid!r}")
    store.db.execute("UPDATE calls SET finished = ?", (time.time() - 400 * 86400,))
    store.db.commit()
    assert purge_expired(settings, store)
    assert (outside / "keep.txt").read_text() == "do not delete"
    assert list((store.root / "reports").iterdir()) == []
    assert store.db.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 0


def test_retention_is_swept_while_the_service_runs(tmp_path, settings, eventually):
    """Not only at start: the sweep a server and every cluster worker run purges what expires later."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from callsense.service.calls import sweep_retention

    store = Store(tmp_path / "calls.sqlite")
    store.save_call("old", _events(), {"metrics": {"duration_s": 3.0}})
    store.save_call("new", _events(), {"metrics": {"duration_s": 3.0}})
    store.db.execute("UPDATE calls SET finished = ? WHERE call_id = 'old'", (time.time() - 400 * 86400,))
    store.db.commit()

    def ids() -> set[str]:
        return {row[0] for row in store.db.execute("SELECT call_id FROM calls")}

    async def scenario() -> set[str]:
        sweep = asyncio.create_task(sweep_retention(settings, store, ThreadPoolExecutor(1), every_s=0.05))
        await eventually(lambda: "old" not in ids(), "the expired call to be purged")
        sweep.cancel()
        return ids()

    assert asyncio.run(scenario()) == {"new"}
