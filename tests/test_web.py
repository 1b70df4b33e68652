"""The web dashboard in a real headless Chromium (Debian's chromium, driven by Playwright):
connect, see live events of a streamed sample call, see the supervisor alert banner of a critical
escalation, acknowledge it (the latch is released), and see that recorded."""

import asyncio
import shutil
import threading

import pytest

from callsense.config import SAMPLES_DIR as SAMPLES
from callsense.service.client import stream_file
from callsense.service.server import CallServer

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt-get install chromium; CI does)")
def test_dashboard_shows_live_call_and_records_accepted_hint(settings, models):
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    settings.server.tokens = {"sup": {"role": "supervisor"}}
    server = CallServer(settings, models)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port_box: list[int] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        port_box.append(loop.run_until_complete(server.start("127.0.0.1", 0)))
        ready.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    assert ready.wait(120)
    port = port_box[0]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/?token=sup")
            page.wait_for_function("document.getElementById('status').textContent === 'connected'", timeout=20000)
            call = asyncio.run_coroutine_threadsafe(
                stream_file(SAMPLES / "en_escalation_call.flac", f"ws://127.0.0.1:{port}", "sup", speed=2.5), loop
            )
            page.wait_for_selector("#transcript .final", timeout=60000)
            page.wait_for_selector("#calls tbody tr", timeout=5000)
            # a critical escalation: a banner for the supervisor and a badge on the wall, until acknowledged
            page.wait_for_selector("#alerts .banner", timeout=90000)
            assert page.query_selector("#calls .badge") is not None
            hint_id = page.get_attribute("#alerts .banner", "data-hint")
            page.click("#alerts .banner .btn-ack")
            # released: the banner goes (a later critical escalation of the call may raise a new one)
            page.wait_for_function(f"!document.querySelector('#alerts .banner[data-hint=\"{hint_id}\"]')", timeout=15000)
            assert page.query_selector("#chart polyline") is not None
            page.screenshot(path=str(settings.server.store.parent / "dashboard.png"))
            browser.close()
        result = call.result(120)
        from callsense.reports.store import Store

        events = Store(settings.server.store).events(result["call_id"])
        feedback = [e for e in events if e.type == "hint_feedback"]
        assert (hint_id, "accepted") in [(f.hint_id, f.action) for f in feedback]
        acked = min(f.seq for f in feedback if f.hint_id == hint_id)
        later = [e for e in events if e.type == "risk" and e.seq > acked]
        assert later and not any(e.latched and e.hint_id == hint_id for e in later), "acknowledged: no longer latched"
    finally:
        asyncio.run_coroutine_threadsafe(server.shutdown(), loop).result(120)
        loop.call_soon_threadsafe(loop.stop)
