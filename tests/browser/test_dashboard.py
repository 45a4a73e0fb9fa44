"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): login trades a
token for an HttpOnly session cookie, the live board follows a simulated call, the stats page
draws its charts. Screenshots land in var/screenshots/."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from api.auth import SESSION_COOKIE
from pbxsim import Behaviour, World
from tests.integration.rig import TOKEN, running
from tests.storage.test_stats import company_day

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path("var/screenshots")
ROUTING = {
    "version": 2,
    "timezone": "Europe/Moscow",
    "managers": [
        {"id": "anna", "name": "Anna", "extension": "101"},
        {"id": "boris", "name": "Boris", "extension": "102"},
        {"id": "vera", "name": "Vera", "extension": "103"},
    ],
    "scenarios": [{"name": "default", "pool": {"managers": ["anna"]}}],  # so the board test knows who talks
}
# The client talks 150 simulated seconds (three real seconds at the rig's 50x clock), then hangs up.
WORLD = World(
    clients={"79161234567": Behaviour(answer_after=1.0, talk=150.0)},
    managers={"101": Behaviour(answer_after=1.0, talk=None)},
)

IDLE = re.compile("^available$")


def setup_module() -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)


pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="make test installs the Debian chromium")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        await browser.close()


async def _screenshot(page: Page, name: str) -> None:
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def test_board_follows_a_call_and_stats_draw_charts(tmp_path: Path, browser: Browser) -> None:
    async with running(tmp_path, world=WORLD, routing=ROUTING, recordings=True) as rig:
        await company_day(rig.daemon.database)
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        base = f"http://127.0.0.1:{rig.daemon.http_port}"
        # Without a session the page asks for a token; a wrong one is refused.
        await page.goto(f"{base}/dashboard/")
        await expect(page.locator("#login")).to_be_visible()
        await page.fill("#token", "wrong-token-0123456789")
        await page.click("#login-form button")
        await expect(page.locator("#login-error")).to_have_text("That token was refused.")
        assert await page.context.cookies() == []

        # The right one opens a session: a cookie no script can read, and the token kept nowhere.
        await page.fill("#token", TOKEN)
        await page.click("#login-form button")
        await expect(page.locator("#board")).to_be_visible()
        (cookie,) = await page.context.cookies()
        assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (SESSION_COOKIE, True, "Strict")
        stored = await page.evaluate(
            "() => [document.cookie, JSON.stringify(sessionStorage), JSON.stringify(localStorage)]"
        )
        assert not any(TOKEN in kept or cookie["value"] in kept for kept in stored), stored
        assert TOKEN not in page.url

        # Log out: the login form again, and the cookie no longer opens anything.
        await page.click("#logout")
        await expect(page.locator("#login")).to_be_visible()
        live = await page.request.get(f"{base}/live", headers={"Cookie": f"{SESSION_COOKIE}={cookie['value']}"})
        assert live.status == 401

        # The login link `leadrouter demo` prints: the token goes from the address bar at once.
        await page.goto(f"{base}/dashboard/#token={TOKEN}")
        await expect(page.locator("#board")).to_be_visible()
        assert TOKEN not in page.url
        anna = page.locator('#managers tr[data-manager="anna"] .state')
        # Idle: available (a phone whose state the PBX has not reported yet counts as free).
        await expect(anna).to_have_text(IDLE, timeout=10_000)
        lead = (await rig.post(phone="+79161234567", name="Иван", source="site")).json()

        await expect(anna).to_have_text("on call", timeout=15_000)
        # Among the calls in progress (the hand-built one of the 25th still open too).
        call_row = page.locator("#calls tbody tr", has=page.locator(f'a[href="#lead/{lead["id"]}"]'))
        await expect(call_row).to_contain_text("Anna")
        await _screenshot(page, "board")
        await expect(anna).to_have_text(IDLE, timeout=15_000)
        await expect(call_row).to_have_count(0)

        # The lead's id on the board opens its timeline, with the call's recording to play: the
        # WAV the simulator's MixMonitor wrote, as long as the call's talk.
        (call,) = (await rig.http.get(f"/leads/{lead['id']}")).json()["calls"]
        await page.goto(f"{base}/dashboard/#lead/{lead['id']}")
        await expect(page.locator("#timeline")).to_contain_text("Talking to anna")
        await expect(page.locator("#timeline")).to_contain_text("ended: completed")
        await expect(page.locator("#timeline")).to_contain_text("MQTT lead.assigned")
        audio = page.locator("#timeline audio")
        await expect(audio).to_have_count(1)
        duration = await audio.evaluate(
            "a => a.readyState >= 1 ? a.duration"
            " : new Promise(ok => a.addEventListener('loadedmetadata', () => ok(a.duration)))"
        )
        assert duration == pytest.approx(call["talk_seconds"], abs=3.0)  # recorded from the redirect on
        await _screenshot(page, "timeline")

        await page.goto(f"{base}/dashboard/#stats")
        await page.select_option("#period-name", "custom")
        await page.fill("#from", "2026-11-24")
        await page.fill("#to", "2026-11-25")
        await page.click("#period button")
        await expect(page.locator("#period-label")).to_have_text("2026-11-24 – 2026-11-25 (Europe/Moscow)")
        # Anna 300 s and Boris 1800 s of talk: two bars of the talk chart have height.
        talk_bars = page.locator("#chart-talk rect.value")
        await expect(talk_bars).to_have_count(3)
        heights = [float(await bar.get_attribute("height") or 0) for bar in await talk_bars.all()]
        assert heights[1] > heights[0] > 0 == heights[2]
        await expect(page.locator("#chart-hours rect.value")).to_have_count(48)
        await expect(page.locator("#stats-sources")).to_contain_text("ads")
        await _screenshot(page, "stats")
        assert errors == []
