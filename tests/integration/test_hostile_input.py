"""Input that Python's json reads but nothing downstream can store, render or publish is
refused with a 4xx before anything is stored; odd ids and dates are 422, never 500."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbxsim import Behaviour, World
from pbxsim.tests.amitools import wait_until
from tests.integration.rig import actions_received, running

ROUTING = {
    "version": 1,
    "managers": [{"id": "anna", "name": "Anna", "extension": "101"}],
    "scenarios": [{"name": "default"}],
}

UNSTORABLE_PAYLOADS = [
    '{"score": NaN}',
    '{"score": Infinity}',
    '{"score": -Infinity}',
    '{"score": 1e999}',
    '{"utm": {"list": [1, 2, {"x": -1e999}]}}',
    "[" * 40 + "]" * 40,  # under the body limit, deeper than any CRM needs
    "[" * 5000 + "]" * 5000,  # deeper than Python's recursion limit
    # Text no database stores: a lone surrogate (no UTF-8), as a value or a key; a NUL (PostgreSQL's
    # jsonb). The commit failing on one failed the other clients' leads committed with it: 500s.
    '"\\ud800"',
    '{"note": ["ok", {"k\\udfff": 1}]}',
    '"a\\u0000b"',
]


@pytest.fixture
async def rig(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    world = World(clients={"79161234567": Behaviour(answer_after=None)})
    async with running(tmp_path, database=database_url, world=world, routing=ROUTING) as rig:
        yield rig


async def test_unstorable_payloads_are_refused_before_anything_is_stored(rig) -> None:  # type: ignore[no-untyped-def]
    for payload in UNSTORABLE_PAYLOADS:
        body = '{"phone": "+79161234567", "payload": {"p": ' + payload + "}}"
        response = await rig.http.post("/leads", content=body, headers={"Content-Type": "application/json"})
        assert 400 <= response.status_code < 500, (payload[:40], response.status_code, response.text)
    # Bodies json.loads raises on other than as malformed JSON: a refusal saying so, as every other.
    for body in (b'{"phone": "+79161234567", "name": "\xff"}', b'{"phone": "1", "p": ' + b"1" * 5000 + b"}"):
        response = await rig.http.post("/leads", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and response.json()["problems"][0]["field"] == "body", response.text
    assert await rig.daemon.queries.lead_status_counts() == {}
    assert b"Originate" not in rig.sim.raw_received

    nested = {"level": 1}
    for level in range(2, 31):  # 31 levels with the payload itself: under the limit, stored and rendered
        nested = {"level": level, "inner": nested}
    stored = await rig.post(phone="+79161234567", payload={"crm": nested, "big": 2**70, "small": -1.5e-300})
    assert stored.status_code == 201, stored.text
    shown = await rig.http.get(f"/leads/{stored.json()['id']}")
    assert shown.status_code == 200 and shown.json()["payload"]["big"] == 2**70


async def test_ids_and_dates_out_of_range_are_422(rig) -> None:  # type: ignore[no-untyped-def]
    for lead_id in (2**63, 10**30, 0, -1):
        got = await rig.http.get(f"/leads/{lead_id}")
        assert got.status_code == 422 and got.json()["problems"][0]["field"] == "lead_id", got.text
        patched = await rig.http.patch(f"/leads/{lead_id}", json={"outcome": "won", "author": "crm"})
        assert patched.status_code == 422, patched.text
    assert (await rig.http.get(f"/leads/{2**63 - 1}")).status_code == 404
    for day in ("9999-12-31", "0001-01-01"):
        stats = await rig.http.get("/stats/managers", params={"date": day, "tz": "Pacific/Kiritimati"})
        assert stats.status_code == 422 and stats.json()["problems"][0]["field"] == "date", stats.text
    for day, tz in (("9999-12-30", "Pacific/Kiritimati"), ("9999-12-30", "Etc/GMT+12"), ("1970-01-01", "Asia/Tokyo")):
        assert (await rig.http.get("/stats/managers", params={"date": day, "tz": tz})).status_code == 200
    # A zone name ZoneInfo resolves by recursion (a 500 once).
    stats = await rig.http.get("/stats/managers", params={"tz": "UTC/" + "x/" * 300})
    assert stats.status_code == 422 and stats.json()["problems"][0]["field"] == "tz", stats.text
    # A NUL in a manager id cannot even be compared on PostgreSQL (it was a 500 there, found by the fuzz).
    for path in ("/stats", "/stats/managers"):
        stats = await rig.http.get(path, params={"manager": "anna\x00"})
        assert stats.status_code == 422 and stats.json()["problems"][0]["field"] == "manager", stats.text


TOLL_FRAUD = [
    ("+19005551234", "number in US"),  # US premium rate
    ("+449012345678", "number in GB"),  # UK premium rate
    ("+499001234567", "number in DE"),  # German premium rate
    ("+78091234567", "type premium_rate"),  # Russian premium rate: the company's own country
    ("+78001234567", "type toll_free"),  # free for the caller, paid by the company
    ("+88216123456", "non-geographic"),  # satellite / international networks
]


async def test_premium_foreign_and_satellite_numbers_are_refused_with_the_reason(rig) -> None:  # type: ignore[no-untyped-def]
    for phone, reason in TOLL_FRAUD:
        response = await rig.post(phone=phone)
        assert response.status_code == 422, (phone, response.text)
        problem = response.json()["problems"][0]
        assert problem["field"] == "phone" and reason in problem["reason"], (phone, problem)
    assert await rig.daemon.queries.lead_status_counts() == {}
    assert (await rig.post(phone="+74951234567")).status_code == 201  # a Moscow landline
    assert (await rig.post(phone="+79161234567")).status_code == 201  # a Russian mobile


async def test_a_scenario_allows_its_own_countries_the_others_keep_the_companys(tmp_path: Path) -> None:
    routing = {
        "version": 2,
        "timezone": "Europe/Moscow",
        "managers": [{"id": "anna", "name": "Anna", "extension": "101"}],
        "scenarios": [
            {
                "name": "english-b2b",
                "match": {"sources": "landing-en", "when": "mon-fri 09:00-18:00"},
                "phones": {"allowed_regions": ["GB", "US"], "allowed_types": ["mobile", "fixed_line_or_mobile"]},
            },
            {"name": "default"},
        ],
    }
    world = World(default_client=lambda _number: Behaviour(answer_after=None))
    async with running(tmp_path, world=world, routing=routing) as rig:
        # Whatever the hour now: the lead is judged by the scenario that will call it.
        assert (await rig.post(phone="+447400123456", source="landing-en")).status_code == 201
        assert (await rig.post(phone="+12025550123", source="landing-en")).status_code == 201
        for phone, source, reason in (
            ("+447400123457", "site", "is a number in GB; allowed: RU"),  # the catch-all: the company's country
            (
                "+442071234567",
                "landing-en",
                "is of type fixed_line; allowed types: fixed_line_or_mobile, mobile (scenario 'english-b2b')",
            ),
            ("+449012345678", "landing-en", "type premium_rate"),
            ("+79161234567", "landing-en", "is a number in RU; allowed: GB, US (scenario 'english-b2b')"),
        ):
            response = await rig.post(phone=phone, source=source)
            assert response.status_code == 422, (phone, response.text)
            assert reason in response.json()["problems"][0]["reason"], (phone, response.json())
        assert sum((await rig.daemon.queries.lead_status_counts()).values()) == 2


async def test_one_number_gets_a_bounded_number_of_new_leads(rig) -> None:  # type: ignore[no-untyped-def]
    limit = rig.settings.phones.max_leads_per_number
    for index in range(limit):
        assert (await rig.post(phone="+79161234567", external_id=f"form-{index}")).status_code == 201
    again = await rig.post(phone="+7 916 123-45-67", external_id="form-flood")
    assert again.status_code == 429 and again.json()["problems"][0]["field"] == "phone"
    assert 0 < int(again.headers["Retry-After"]) <= rig.settings.phones.per_number_window
    # A repeat of a lead already taken is still answered (idempotent), and other numbers go on.
    assert (await rig.post(phone="+79161234567", external_id="form-0")).status_code == 200
    assert (await rig.post(phone="+79161234568")).status_code == 201
    counts = await rig.daemon.queries.lead_status_counts()
    assert sum(counts.values()) == limit + 1


# Everything that has ever turned data into dialplan or AMI: separators of Dial() and channel
# strings, dialplan expressions and functions, header and action breaks, look-alike digits,
# and sheer length.
INJECTIONS = [
    "&PJSIP/666@evil",
    ",,,666",
    "|666",
    ";666",
    "@evil",
    "/666",
    "\r\nAction: Originate\r\nChannel: Local/666@evil",
    "\n666",
    "\0666",
    "${SHELL(id)}",
    "$[1+1]",
    "${EXTEN:1}",
    "７９１６１２３４５６７",
    "٧٩١٦١٢٣٤٥٦٧",
    "x" * 10_000,
]
# What the daemon sends and nothing else, whatever the leads say.
SENT_ACTIONS = {"Login", "Events", "Originate", "Redirect", "Hangup", "CoreShowChannels", "DeviceStateList", "Ping"}


async def test_an_injection_corpus_reaches_the_pbx_as_nothing_but_digits(rig) -> None:  # type: ignore[no-untyped-def]
    answers: list[int] = []
    accepted = 0
    for index, text in enumerate(INJECTIONS):
        phone = f"+7916100{index:04d}"  # a number of its own for each: the per-number limit stays out of it
        attempts: list[dict[str, object]] = [
            {"phone": "+7916" + text + "1234567"},
            {"phone": text},
            {"phone": phone, "name": text},
            {"phone": phone, "source": text},
            {"phone": phone, "external_id": text},
            {"phone": phone, "payload": {"note": text, text[:50]: 1}},
        ]
        for body in attempts:
            response = await rig.http.post("/leads", json=body)
            answers.append(response.status_code)
            accepted += response.status_code == 201
            if response.status_code == 201:
                outcome = {"outcome": "won", "reason": text, "author": text}
                answers.append((await rig.http.patch(f"/leads/{response.json()['id']}", json=outcome)).status_code)
    assert all(status < 500 for status in answers), answers
    await wait_until(lambda: len(actions_received(rig.sim, "Originate")) >= accepted, 10, "every accepted lead dialled")

    # Markers no legitimate action holds (";" does: Local channels end in ";1"; ids are hex, so no "666").
    markers = ["evil", "SHELL", "$[", "${EXTEN", "|", "&", "\0", "７", "٧", "xxxxxxxxxx"]
    injected = [
        headers
        for headers in rig.sim.received
        if dict(headers).get("Action") not in SENT_ACTIONS
        or any(marker in key + value for key, value in headers for marker in markers)
    ]
    originates = actions_received(rig.sim, "Originate")
    print(f"injection corpus: {len(answers)} requests, {accepted} leads dialled, {len(injected)} actions injected")
    assert injected == [] and accepted > 0 and len(originates) == accepted
    for originate in originates:
        channel = originate["Channel"].removeprefix("Local/").removesuffix("@sim-clients")
        assert channel.isascii() and channel.isdigit(), originate


async def test_one_address_gets_a_bounded_number_of_posts_when_configured(tmp_path: Path, database_url: str) -> None:
    sections = {"http": {"max_leads_per_address": 3, "per_address_window": "1h"}}
    async with running(tmp_path, database=database_url, world=World(), routing=ROUTING, sections=sections) as rig:
        statuses = [(await rig.post(phone=f"+7916200000{n}")).status_code for n in range(3)]
        assert statuses == [201, 201, 201]
        refused = await rig.post(phone="+79162000009")
        assert refused.status_code == 429 and refused.json()["problems"][0]["field"] == "source"
        assert 3500 < int(refused.headers["Retry-After"]) <= 3600
        assert (await rig.http.get("/stats/managers")).status_code == 200  # reading is not posting
        assert sum((await rig.daemon.queries.lead_status_counts()).values()) == 3
