"""The web dashboard in a real headless Chromium (Debian's chromium, driven by Playwright):
connect, see live events of a streamed sample call, see the supervisor alert banner of a critical
escalation, acknowledge it (the latch is released), and see that recorded; after the call, its report
from the recent-calls list (token rules and the access log included)."""

import asyncio
import json
import shutil
import threading
import urllib.error
import urllib.request

import pytest

from callsense.config import SAMPLES_DIR as SAMPLES
from callsense.service.client import stream_file
from callsense.service.server import CallServer

pytestmark = pytest.mark.slow
NEWEST_LINE_IN_VIEW = """() => {
  const box = document.getElementById("transcript"), lines = box.querySelectorAll(".final");
  if (!lines.length) return false;
  const last = lines[lines.length - 1].getBoundingClientRect(), pane = box.getBoundingClientRect();
  return last.bottom <= pane.bottom + 1 && last.top >= pane.top - 1 && last.bottom <= window.innerHeight;
}"""
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt-get install chromium; CI does)")
def test_dashboard_shows_live_call_and_records_accepted_hint(settings, models):
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    settings.server.tokens = {
        "sup": {"role": "supervisor"},
        "op1": {"role": "operator", "operator_id": "op-1"},
        "op2": {"role": "operator", "operator_id": "op-2"},
    }
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
            size = {"width": 1400, "height": 900}
            page, operator = browser.new_page(viewport=size), browser.new_page(viewport=size)
            # the operator has chosen a Russian interface (?lang=ru); the supervisor's follows the call (English)
            for view, query in ((page, "token=sup"), (operator, "token=op1&lang=ru")):
                view.goto(f"http://127.0.0.1:{port}/?{query}")
                view.wait_for_function("document.getElementById('status').textContent === 'connected'", timeout=20000)
            # the call stays on (on hold, silence) after its audio until the live checks are done: on a slow
            # or busy machine they outlasted the audio, and an acknowledgement after the end is not recorded
            hold = asyncio.Event()
            call = asyncio.run_coroutine_threadsafe(
                stream_file(
                    SAMPLES / "en_escalation_call.flac",
                    f"ws://127.0.0.1:{port}",
                    "sup",
                    speed=2.5,
                    operator_id="op-1",
                    hold=hold,
                ),
                loop,
            )
            page.wait_for_selector("#transcript .final", timeout=60000)
            page.wait_for_selector("#calls tbody tr", timeout=5000)
            # a critical escalation: a banner for the supervisor and a badge on the wall, until acknowledged
            page.wait_for_selector("#alerts .banner", timeout=90000)
            assert page.query_selector("#calls .badge") is not None
            hint_id = page.get_attribute("#alerts .banner", "data-hint")
            # roles: the operator answers hints and never sees the supervisor's alert; the supervisor
            # acknowledges the alert and has no buttons on the operator's hints
            operator.wait_for_selector("#now .hint .btn-accepted", timeout=30000)
            assert operator.inner_text("#now .hint .btn-accepted") == "принять"
            assert "оператор" in operator.inner_text("#calls thead") and "operator" in page.inner_text("#calls thead")
            assert operator.query_selector("#alerts .banner") is None
            assert page.query_selector("#now .hint button, #hints .hint button") is None
            # the script checklist, ticked as the operator speaks: the greeting and the disclosure are said
            operator.wait_for_selector('#script li.done[data-item="greeting"]', timeout=30000)
            assert len(operator.query_selector_all("#script li")) >= 5
            assert operator.query_selector('#script li[data-item="disclosure_recording"].done') is not None
            # the operator's newest transcript line is in view (its pane scrolls, the page does not)
            assert operator.evaluate(NEWEST_LINE_IN_VIEW), "the newest line is visible"
            shots = settings.server.store.parent  # kept with the test's files (docs/img has a pair from a run)
            operator.screenshot(path=str(shots / "operator.png"))
            page.screenshot(path=str(shots / "supervisor.png"))
            # the page is updated in place: a button stays the same element while events arrive (a rebuild
            # on every event replaced it under the pointer)
            button = operator.query_selector("#now .hint .btn-accepted")
            shown = operator.text_content("#timer")  # the call's clock: it moves with every second of audio
            operator.wait_for_function(
                f"document.getElementById('timer').textContent !== {json.dumps(shown)}", timeout=30000
            )
            assert button.evaluate("b => b.isConnected"), "the card's button survived the update"
            # one card to act on now; answering it shows at once, and the next one takes its place
            answered = operator.get_attribute("#now .hint", "data-hint")
            operator.keyboard.press("KeyA")  # A answers the card to act on now
            operator.wait_for_selector(f'#hints .hint[data-hint="{answered}"] .done', state="attached", timeout=5000)
            # the supervisor takes the escalation over and writes to the operator: the operator sees both at once
            page.click("#alerts .banner .btn-join")
            operator.wait_for_selector("#notes .note.joining", timeout=15000)
            page.fill("#note-text", "offer the fee refund")
            page.click("#note-send")
            operator.wait_for_function(
                "[...document.querySelectorAll('#notes .note')].some(n => n.textContent.includes('offer the fee refund'))",
                timeout=15000,
            )
            assert operator.is_hidden("#note"), "operators do not write notes"
            # the summary so far, on request: the customer's reason in their own words, ready to paste
            operator.click("#summary-ask")
            operator.wait_for_selector("#summary pre", state="visible", timeout=15000)
            summary = operator.inner_text("#summary-text")
            reason = summary.split("Done:")[0]
            assert reason.startswith("Reason:\n- ") and "Promised:" in summary, summary  # a sentence of theirs
            hint_id = page.get_attribute("#alerts .banner", "data-hint")  # the latch may have moved on meanwhile
            page.click(f'#alerts .banner[data-hint="{hint_id}"] .btn-ack')
            # released: the banner goes (a later critical escalation of the call may raise a new one)
            page.wait_for_function(f"!document.querySelector('#alerts .banner[data-hint=\"{hint_id}\"]')", timeout=15000)
            assert page.query_selector("#chart polyline") is not None
            # the chart says what it shows: a scale, the call's time, a legend
            axis = page.text_content("#chart") or ""
            assert "negative" in axis and "0:00" in axis and "customer" in axis, axis
            loop.call_soon_threadsafe(hold.set)  # the live part is done: the call may end
            result = call.result(120)
            # after the call: the recent-calls list links its report, opened through the same token
            link = f'#recent a:text-is("{result["call_id"]}")'
            page.wait_for_selector(link, timeout=60000)
            operator.wait_for_selector(link, timeout=60000)
            href = page.get_attribute(link, "href")
            # the wall's row of the ended call links its report too
            assert page.get_attribute("#calls a.report-link", "href", timeout=20000) == href
            report = browser.new_page()
            report.goto(f"http://127.0.0.1:{port}{href}")
            assert result["call_id"] in report.title()
            # the operator disputes an item the call was marked down on; the analyst (a supervisor) accepts it
            operator.click("#script li.item .btn-dispute")
            disputed = operator.get_attribute("#script li.item:has(form.dispute-form)", "data-item")
            operator.fill("#script .dispute-text", "verified by the IVR before the call")
            operator.press("#script .dispute-text", "Enter")
            operator.wait_for_selector(f'#script li[data-item="{disputed}"] .dispute.open', timeout=15000)
            page.click("#disputes li.dispute.open .btn-uphold", timeout=30000)  # the wall asks every 10 s
            page.wait_for_selector("#disputes li.dispute.accepted", timeout=15000)
            operator.wait_for_selector(f'#script li[data-item="{disputed}"] .dispute.accepted', timeout=30000)
            report.reload()  # the report page shows the dispute and its outcome
            shown = report.inner_text("#disputes")
            assert "verified by the IVR before the call" in shown and "accepted" in shown, shown
            browser.close()
        base = f"http://127.0.0.1:{port}"
        assert _get(f"{base}/api/calls?token=op2") == (200, []), "another operator's calls are not listed"
        assert _get(f"{base}{href.replace('token=sup', 'token=op2')}")[0] == 404, "nor their reports served"
        from callsense.reports.store import Store

        log = [(who, seen, action) for _, who, seen, action in Store(settings.server.store).access_log()]
        assert ("supervisor:sup", result["call_id"], "report view") in log
        assert ("supervisor:sup", result["call_id"], "note") in log, "every note is in the access log"
        events = Store(settings.server.store).events(result["call_id"])
        notes = [(e.by, e.joining, e.text) for e in events if e.type == "note"]
        assert ("supervisor:sup", False, "offer the fee refund") in notes and any(j for _, j, _ in notes)
        assert {(result["call_id"], "dispute"), (result["call_id"], "dispute accepted")} <= {(c, a) for _, c, a in log}
        feedback = [e for e in events if e.type == "hint_feedback"]
        assert (hint_id, "accepted") in [(f.hint_id, f.action) for f in feedback]
        # only the supervisor's answer releases the latch (the operator may have answered the same card first)
        acked = min(f.seq for f in feedback if f.hint_id == hint_id and f.by.startswith("supervisor"))
        later = [e for e in events if e.type == "risk" and e.seq > acked]
        assert later and not any(e.latched and e.hint_id == hint_id for e in later), "acknowledged: no longer latched"
    finally:
        asyncio.run_coroutine_threadsafe(server.shutdown(), loop).result(120)
        loop.call_soon_threadsafe(loop.stop)


def _get(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None
