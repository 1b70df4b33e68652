"""The web dashboard in a real headless Chromium (Debian's chromium, driven by Playwright):
connect, see live events of a streamed sample call, accept a hint and see it recorded."""

import asyncio
import shutil
import threading

import pytest

from callsense.service.client import stream_file
from callsense.service.server import CallServer

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt-get install chromium; CI does)")
def test_dashboard_shows_live_call_and_records_accepted_hint(settings, models):
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    from tests.conftest import SAMPLES

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
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/?token=sup")
            page.wait_for_function("document.getElementById('status').textContent === 'connected'", timeout=20000)
            call = asyncio.run_coroutine_threadsafe(
                stream_file(SAMPLES / "ru_call_stereo.flac", f"ws://127.0.0.1:{port}", "sup", speed=2.0), loop)
            page.wait_for_selector("#transcript .final", timeout=60000)
            page.wait_for_selector("#calls tbody tr", timeout=5000)
            page.wait_for_selector(".hint .btn-accepted", timeout=90000)
            hint_id = page.get_attribute(".hint", "data-hint")
            page.click(".hint .btn-accepted")
            page.wait_for_selector(".hint .done", timeout=10000)
            assert page.text_content(".hint .done") == "accepted"
            assert page.query_selector("#chart polyline") is not None
            page.screenshot(path=str(settings.server.store.parent / "dashboard.png"))
            browser.close()
        result = call.result(120)
        from callsense.reports.store import Store

        feedback = [e for e in Store(settings.server.store).events(result["call_id"]) if e.type == "hint_feedback"]
        assert [(f.hint_id, f.action) for f in feedback] == [(hint_id, "accepted")]
    finally:
        asyncio.run_coroutine_threadsafe(server.shutdown(), loop).result(120)
        loop.call_soon_threadsafe(loop.stop)
