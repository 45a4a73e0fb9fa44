"""Recordings served by the daemon: signed expiring links, the token, HTTP Range, nothing outside the folder."""

from __future__ import annotations

import time
import wave
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from pbxsim import World
from recordings.access import RecordingLinks, signing_key
from storage.schema import calls
from tests.integration.rig import TOKEN, running
from tests.storage.test_stats import add_call, add_lead

ROUTING = {"version": 1, "managers": [{"id": "anna", "name": "Anna", "extension": "101"}], "scenarios": [{"name": "d"}]}


def write_wav(path: Path, seconds: float) -> None:
    """Silence, 8 kHz mono 16-bit: what MixMonitor writes for a telephone call."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * int(8000 * seconds))


@pytest.fixture
async def rig(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    folder = tmp_path / "monitor"
    write_wav(folder / "leadrouter" / "lr-1.wav", 2.0)
    (tmp_path / "secret.txt").write_text("not a recording")
    (folder / "leadrouter" / "escape.wav").symlink_to(tmp_path / "secret.txt")
    async with running(
        tmp_path,
        world=World(),
        routing=ROUTING,
        sections={"recordings": {"directory": str(folder)}},
        database=database_url,
    ) as rig:
        yield rig


async def test_a_signed_link_plays_and_seeks_without_the_token(rig) -> None:  # type: ignore[no-untyped-def]
    link = (await rig.http.get("/recording-links/leadrouter/lr-1.wav")).json()
    base = str(rig.http.base_url)
    async with httpx.AsyncClient(base_url=base) as browser:  # no Authorization header
        whole = await browser.get(link["url"])
        assert whole.status_code == 200 and whole.headers["content-type"] == "audio/wav"
        assert len(whole.content) == 44 + 2 * 16000 and whole.headers["accept-ranges"] == "bytes"
        part = await browser.get(link["url"], headers={"Range": "bytes=44-99"})
        assert part.status_code == 206 and part.headers["content-range"] == f"bytes 44-99/{44 + 32000}"
        assert part.content == whole.content[44:100]

        tampered = link["url"].replace("lr-1.wav", "lr-2.wav")
        assert (await browser.get(tampered)).status_code == 403
        assert (await browser.get("/recordings/leadrouter/lr-1.wav")).status_code == 401
        wrong = await browser.get(
            "/recordings/leadrouter/lr-1.wav", headers={"Authorization": "Bearer wrong-wrong-wrong"}
        )
        assert wrong.status_code == 401
        # A link signed with the right key that has expired: refused as such.
        links = RecordingLinks(signing_key(TOKEN), ttl=3600)
        expires = int(time.time()) - 1
        expired = await browser.get(
            "/recordings/leadrouter/lr-1.wav",
            params={"expires": expires, "signature": links.signature("leadrouter/lr-1.wav", expires)},
        )
        assert expired.status_code == 403 and expired.json()["problems"][0]["reason"] == "link expired"
    # The stable path works with the token, as the API's other endpoints do.
    assert (await rig.http.get("/recordings/leadrouter/lr-1.wav")).status_code == 200


async def test_a_recording_of_a_call_still_up_is_reported_as_such(rig) -> None:  # type: ignore[no-untyped-def]
    async with rig.daemon.database.write() as conn:
        await add_lead(conn, 1, "site", datetime.now(UTC))
        await add_call(conn, 1, 1, datetime.now(UTC), recording_file="leadrouter/lr-1.wav")  # no ended_at: still up
        await conn.commit()
    for path in ["/recording-links/leadrouter/lr-1.wav", "/recordings/leadrouter/lr-1.wav"]:
        busy = await rig.http.get(path)
        assert busy.status_code == 409 and busy.json()["error"] == "recording_in_progress", path
    async with rig.daemon.database.write() as conn:
        await conn.execute(update(calls).values(ended_at=datetime.now(UTC)))
        await conn.commit()
    assert (await rig.http.get("/recordings/leadrouter/lr-1.wav")).status_code == 200


async def test_names_outside_the_folder_are_never_served(rig, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    links = RecordingLinks(signing_key(TOKEN), ttl=3600)
    for name in [
        "../secret.txt",
        "leadrouter/../../secret.txt",
        str(tmp_path / "secret.txt"),
        "leadrouter/escape.wav",
        "leadrouter/nothing.wav",
        "leadrouter/" + "x" * 300 + ".wav",  # too long for the file system: the look raised (a 500)
    ]:
        assert (await rig.http.get(f"/recording-links/{name}")).status_code == 404, name
        expires, signature = links.sign(name, time.time())
        served = await rig.http.get(f"/recordings/{name}", params={"expires": expires, "signature": signature})
        assert served.status_code == 404 and b"not a recording" not in served.content, name
    # Encoded, so no client normalises the dots away before the daemon sees them.
    encoded = await rig.http.get("/recordings/%2e%2e/secret.txt")
    assert encoded.status_code == 404 and b"not a recording" not in encoded.content
