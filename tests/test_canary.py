"""Privacy canary: one seeded value of each category, in Russian and English, goes through `analyze`,
`audit` and `serve` (with persistence); then every file written and every SQLite row is scanned for
the raw values. With `report.redact_pii` on, nothing may be found.

The chats carry the values as customers and operators say them (the operator reads a card number
back, as compliance evidence would quote). The live call is spoken by espeak-ng and recognised by
the real Whisper model, so what is scanned for is also what ASR may write (digits run together).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from callsense.bench.privacy import VALUES
from callsense.cli.main import main
from callsense.config import SAMPLE_RATE

pytestmark = pytest.mark.slow


def _seeded(language: str) -> dict[str, str]:
    rng = random.Random(20261129)
    return {category: make(rng, language) for category, make in VALUES.items()}


CHAT_LINES = {
    "ru": [
        ("customer", "Здравствуйте, меня зовут {NAME}."),
        ("customer", "Номер карты {CARD}, её заблокировали."),
        ("operator", "Уточню: карта {CARD}, верно?"),
        ("customer", "Мой счёт {ACCOUNT}, ИНН {INN}, СНИЛС {SNILS}."),
        ("customer", "Паспорт {PASSPORT}, телефон {PHONE}, почта {EMAIL}."),
        ("customer", "Дата рождения {DOB}, CVV {CVV}."),
        ("customer", "Я проживаю по адресу {ADDRESS}."),
        ("customer", "Кодовое слово {SECRET}."),
        ("customer", "Переведите на IBAN {IBAN}."),
        ("operator", "Спасибо, {NAME}, до свидания!"),
    ],
    "en": [
        ("customer", "Hi, my name is {NAME}."),
        ("customer", "My card number is {CARD} and it was blocked."),
        ("operator", "Let me confirm, card {CARD}, correct?"),
        ("customer", "Account number {ACCOUNT}, my INN {INN} and SNILS {SNILS}."),
        ("customer", "Passport number {PASSPORT}, phone {PHONE}, email {EMAIL}."),
        ("customer", "My date of birth is {DOB} and the CVV is {CVV}."),
        ("customer", "I live at {ADDRESS}."),
        ("customer", "My code word is {SECRET}."),
        ("customer", "Please send it to IBAN {IBAN}."),
        ("operator", "Thank you {NAME}, goodbye!"),
    ],
}


def _chat(language: str, values: dict[str, str], path: Path) -> None:
    turns = [{"role": role, "text": text.format(**values)} for role, text in CHAT_LINES[language]]
    path.write_text(
        json.dumps({"language": language, "id": f"canary-{language}", "turns": turns}, ensure_ascii=False), encoding="utf-8"
    )


def _needles(values: dict[str, str]) -> list[str]:
    """Each raw value as written, and numbers also as bare digits (ASR and reformatting join them).
    A short number (a CVV) is searched with its cue: "236" alone is in any file of figures."""
    out = []
    for category, v in values.items():
        out.append(f"CVV {v}" if category == "CVV" else v)
        digits = re.sub(r"\D", "", v)
        if len(digits) >= 6:
            out.append(digits)
    return out


def _scan(root: Path, needles: list[str]) -> list[str]:
    """Every file under `root` (SQLite databases row by row, their WAL too) searched for the needles,
    also with separators between digits removed."""
    hits = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        blobs = [path.read_bytes().decode("utf-8", "replace")]
        if path.suffix == ".sqlite":
            db = sqlite3.connect(path)
            blobs.append("\n".join(db.iterdump()))
            db.close()
        for blob in blobs:
            compact = re.sub(r"(?<=\d)[\s.-]+(?=\d)", "", blob)
            for needle in needles:
                if needle in blob or (needle.isdigit() and needle in compact):
                    hits.append(f"{path.relative_to(root)}: {needle}")
    return sorted(set(hits))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"server:\n  store: {tmp_path / 'store' / 'calls.sqlite'}\n  tokens:\n"
        "    sup: {role: supervisor}\n    op: {role: operator, operator_id: op-1}\n"
        "report:\n  redact_pii: true\n",
        encoding="utf-8",
    )
    return cfg


def test_no_raw_personal_data_after_analyze_and_audit(tmp_path, config):
    values = {lang: _seeded(lang) for lang in ("ru", "en")}
    chats = tmp_path / "chats"
    chats.mkdir()
    for lang in values:
        _chat(lang, values[lang], chats / f"{lang}.json")
        assert (
            main(
                [
                    "--config",
                    str(config),
                    "analyze",
                    str(chats / f"{lang}.json"),
                    "--out",
                    str(tmp_path / "out" / f"report-{lang}"),
                ]
            )
            == 0
        )
    audit = ["--config", str(config), "audit", str(chats), "--chats", "--out", str(tmp_path / "out" / "audit")]
    assert main(audit) == 0
    shutil.rmtree(chats)  # the inputs themselves hold the values, of course
    needles = _needles(values["ru"]) + _needles(values["en"])
    assert not (hits := _scan(tmp_path, needles)), f"personal data on disk: {hits}"
    report = json.loads((tmp_path / "out" / "report-en" / "report.json").read_text(encoding="utf-8"))
    said = " ".join(t["text"] for t in report["transcript"])
    assert "[CARD]" in said and "[NAME]" in said, "redaction ran (the values were there to find)"


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_no_raw_personal_data_after_a_live_call(tmp_path, config, models):
    from callsense.config import load_settings
    from callsense.service.client import stream_file
    from callsense.service.server import CallServer

    values = {"CARD": "4111 1111 1111 1111", "DOB": "March 5, 1985", "SECRET": "blue river", "PHONE": "415 555 0132"}
    spoken = (
        f"My card number is {' '.join(values['CARD'].replace(' ', ''))}. My date of birth is March fifth, "
        f"nineteen eighty five. My code word is blue river. Call me on {' '.join('4155550132')}."
    )
    call = tmp_path / "call.flac"
    _speak_call("Thank you for calling, how can I help you?", spoken, call)
    settings = load_settings(config)
    settings.report.keep_audio = True  # the kept recording is checked by ear too (Whisper's)

    async def scenario() -> tuple[dict, list[dict], dict[str, bytes]]:
        server = CallServer(settings, models)
        port = await server.start("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{port}"
        import websockets

        seen: list[dict] = []
        async with websockets.connect(f"{url}/console?token=sup") as console:  # a supervisor's view
            await console.send(json.dumps({"type": "resume", "after": {}}))
            result = await stream_file(call, url, "op", speed=0)
            while not seen or seen[-1]["type"] != "call_ended":
                seen.append(json.loads(await asyncio.wait_for(console.recv(), 60)))
        # the report page and its recording, as the dashboard's report link opens them
        page = f"http://127.0.0.1:{port}/reports/{result['call_id']}?token=sup"
        served = {
            "page": await _served(page),
            "audio": await _served(page.replace("?token", "/audio?token")),
        }
        await server.shutdown()
        return result, seen, served

    result, seen, served = asyncio.run(scenario())
    call.unlink()
    needles = _needles(values) + ["4111111111111", "blue river"]
    assert not (hits := _scan(tmp_path, needles)), f"personal data on disk: {hits}"
    supervisor_view = json.dumps(seen)
    assert not any(n in supervisor_view for n in needles), "supervisors see what the disk holds"
    stored = " ".join(e.get("text", "") for e in seen if e["type"] == "transcript_final")
    assert "[CARD]" in stored or "[DOB]" in stored, f"redaction ran on what ASR heard: {stored!r}"
    # the kept audio: sealed with the values silenced, the spool gone; Whisper hears none of them in it
    from callsense.reports.store import Store

    store = Store(settings.server.store)
    kept = store.call_dir("audio", result["call_id"]).with_suffix(".flac")
    assert kept.exists() and not list(kept.parent.glob("*.partial.flac"))
    report = json.loads(store.db.execute("SELECT report FROM calls").fetchone()[0])
    assert report["audio"]["kept"] and report["audio"]["silenced_spans"] >= 2, report["audio"]
    assert served["audio"] == kept.read_bytes() and b'id="call-audio"' in served["page"]  # "listen here"
    audio, rate = sf.read(kept, dtype="float32", always_2d=True)
    heard = " ".join(seg.text for ch in audio.T for seg in models.whisper.transcribe(ch, language="en", beam_size=1)[0])
    digits = re.sub(r"\D", "", heard)
    assert "blue river" not in heard.lower() and "4111" not in digits and "5550132" not in digits, heard
    assert "calling" in heard.lower() or "help" in heard.lower(), f"the rest is still there: {heard!r}"


async def _served(address: str, timeout: float = 60.0) -> bytes:
    """The body once the server has it (the report is written as the call ends), fetched off the loop
    the server runs on."""
    import time
    import urllib.error
    import urllib.request

    def fetch() -> bytes | None:
        try:
            with urllib.request.urlopen(address, timeout=10) as reply:
                return reply.read()
        except urllib.error.HTTPError:
            return None

    deadline = time.monotonic() + timeout
    while (body := await asyncio.get_running_loop().run_in_executor(None, fetch)) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f} s for {address}")
        await asyncio.sleep(0.2)
    return body


def _speak_call(operator: str, customer: str, path: Path) -> None:
    """Operator on the left channel, then the customer on the right: a stereo call from espeak-ng."""

    def say(text: str) -> np.ndarray:
        wav = path.with_suffix(".tmp.wav")
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(wav), text], check=True)
        audio, rate = sf.read(wav, dtype="float32")
        wav.unlink()
        return soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)

    op, cu = say(operator), say(customer)
    gap = np.zeros(SAMPLE_RATE, np.float32)
    left = np.concatenate([gap, op, gap, np.zeros_like(cu), gap])
    right = np.concatenate([gap, np.zeros_like(op), gap, cu, gap])
    sf.write(path, np.stack([left, right], axis=1), SAMPLE_RATE)
