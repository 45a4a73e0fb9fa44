"""POST /leads answered in front of FastAPI (api/lead_post.py) answers exactly what FastAPI's path
answers, byte for byte, and leaves everything that is not plain to that path, counting failed
authentications and leads per address once."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from dialer.intake import RateLimit
from tests.unit.api_rig import INTAKE, MAX_BODY, SUPERVISOR, Rig, Unavailable, call, rig, scope

JSON = (b"content-type", b"application/json")
GOOD = [(b"authorization", f"Bearer {INTAKE}".encode()), JSON]


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


async def both(
    data: bytes, headers: list[tuple[bytes, bytes]] = GOOD, make: Any = rig, **rig_args: Any
) -> tuple[list[dict[str, Any]], bool]:
    """The messages for one request through the app and through FastAPI's own path (each on a
    fresh rig), which must be the same; and whether the app left it to FastAPI's path."""
    lean, fastapi = make(**rig_args), make(**rig_args)
    request = scope(data, headers)
    sent = await _call(lean.app, request, data)
    assert sent == await _call(fastapi.app.fastapi, scope(data, headers), data)
    return sent, "app" in request  # Starlette marks the scope of each request it serves


async def _call(app: Any, request: dict[str, Any], data: bytes) -> list[dict[str, Any]]:
    """call's messages, and the exception's type when one went on to the server after a 500."""
    sent: list[dict[str, Any]] = []
    try:
        await call(app, request, data, sent)
    except Exception as exc:
        sent.append({"raised": type(exc)})
    return sent


def answer(sent: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    return sent[0]["status"], json.loads(sent[1]["body"])


async def test_a_good_lead_and_its_repeat() -> None:
    sent, handed_over = await both(body(phone="+79161234567", name=" Иван ", external_id="crm-1", payload={"a": [1]}))
    assert not handed_over
    status, lead = answer(sent)
    assert status == 201 and lead["name"] == "Иван" and lead["payload"] == {"a": [1]}
    assert dict(sent[0]["headers"])[b"content-type"] == b"application/json"

    for app in (lambda r: r.app, lambda r: r.app.fastapi):  # the repeat, on each path after a first post
        first = rig()
        data = body(phone="+79161234567", external_id="crm-1")
        assert answer(await call(app(first), scope(data, GOOD), data))[0] == 201
        status, again = answer(await call(app(first), scope(data, GOOD), data))
        assert status == 200 and again["id"] == 1


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        (body(phone="xyz"), 422, "invalid_lead"),  # refused by the intake
        (body(phone="+79161234567", payload={"bad": 1}), 422, "invalid_lead"),
        (body(phone="busy"), 429, "too_many_leads"),  # with Retry-After
        (body(phone="down"), 503, "storage_unavailable"),  # with Retry-After
    ],
)
async def test_refusals_of_the_intake_are_answered_in_front(data: bytes, status: int, error: str) -> None:
    sent, handed_over = await both(data)
    assert not handed_over and answer(sent)[0] == status and answer(sent)[1]["error"] == error
    if status != 422:
        assert int(dict(sent[0]["headers"])[b"retry-after"]) > 0


@pytest.mark.parametrize(
    "data",
    [
        body(name="no phone"),
        body(phone="+79161234567", phonee="typo"),
        body(phone=79161234567),
        body(phone="+79161234567", payload="not an object"),
        body(phone="+79161234567", name="a\r\nb"),
        body(phone=" " * 40),
        b"{not json",
        b"[]",
        b"null",
        b"[" * 100_000 + b"]" * 100_000,  # too deep for json: FastAPI's 400 (413 here: too big)
        b"[" * 1500 + b"]" * 1500,  # too deep for json within the limit
        b'{"phone": "+79161234567", "payload": {"n": NaN, "big": 123456789012345678901234567890}}',
        b'{"phone": "+79161234567", "phone": "xyz"}',  # the last one counts, on both paths
        b'{"phone": "+79161234567", "name": "\\ud800"}',  # a lone surrogate
        '{"phone": "+79161234567", "name": "Ивáн"}'.encode("utf-16"),  # json reads UTF-16 too
        b"",
    ],
)
async def test_whatever_the_body_both_paths_answer_the_same(data: bytes) -> None:
    sent, _ = await both(data)
    assert sent[0]["status"] in (201, 400, 413, 422, 500)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([JSON], 401),
        ([(b"authorization", b"Bearer wrong"), JSON], 401),
        ([(b"authorization", INTAKE.encode()), JSON], 401),  # no scheme
        ([(b"authorization", f"Bearer {SUPERVISOR}".encode()), JSON], 403),
        ([(b"authorization", f"Bearer {INTAKE}".encode())], 422),  # no content type: not read as JSON
        ([(b"authorization", f"Bearer {INTAKE}".encode()), (b"content-type", b"text/plain")], 422),
        ([*GOOD, (b"content-type", b"text/plain")], 201),  # the first one counts
        ([*GOOD, (b"authorization", b"Bearer wrong")], 201),
        ([*GOOD, (b"content-type", b"application/vnd.crm+json")], 201),
        ([*GOOD, (b"cookie", b"leadrouter_session=x")], 201),  # the bearer token counts
        ([(b"cookie", b"leadrouter_session=1.x.y"), JSON], 401),
    ],
)
async def test_what_is_not_plain_is_left_to_fastapi(headers: list[tuple[bytes, bytes]], status: int) -> None:
    sent, handed_over = await both(body(phone="+79161234567"), headers)
    assert handed_over and sent[0]["status"] == status


async def test_a_body_too_large_is_left_to_fastapi() -> None:
    sent, handed_over = await both(body(phone="+79161234567", payload={"x": "y" * MAX_BODY}))
    assert handed_over and answer(sent)[0] == 413 and answer(sent)[1]["error"] == "body_too_large"


@pytest.mark.parametrize("gone", [False, True])
async def test_a_body_in_pieces_and_a_client_gone_meanwhile(gone: bool) -> None:
    data = body(phone="+79161234567")
    rest = {"type": "http.disconnect"} if gone else {"type": "http.request", "body": data[5:]}
    answers = []
    for app in (lambda r: r.app, lambda r: r.app.fastapi):
        messages = [{"type": "http.request", "body": data[:5], "more_body": True}, rest]
        request = scope(data, GOOD)
        sent = await call(app(rig()), request, messages)
        answers.append((sent, "app" in request))
    assert answers[0][0] == answers[1][0] and answers[0][0][0]["status"] == (400 if gone else 201)
    assert answers[0][1] == gone  # a client gone is left to FastAPI's path, with what was read of the body


async def test_stopping_is_left_to_fastapi() -> None:
    def closed(**_: Any) -> Rig:
        stopped = rig()
        stopped.open[0] = False
        return stopped

    sent, handed_over = await both(body(phone="+79161234567"), make=closed)
    assert handed_over and answer(sent)[0] == 503 and answer(sent)[1]["error"] == "stopping"
    assert int(dict(sent[0]["headers"])[b"retry-after"]) > 0


async def test_a_failed_authentication_counts_once_on_either_path() -> None:
    good, bad = body(phone="+79161234567"), [(b"authorization", b"Bearer guess"), JSON]
    for app in (lambda r: r.app, lambda r: r.app.fastapi):
        guessed = rig(max_failures=2)
        assert (await call(app(guessed), scope(good, bad), good))[0]["status"] == 401
        assert (await call(app(guessed), scope(good, GOOD), good))[0]["status"] == 201  # one failure of two
        assert (await call(app(guessed), scope(good, bad), good))[0]["status"] == 401
        blocked = await call(app(guessed), scope(good, GOOD), good)  # two of two: a good token waits too
        assert blocked[0]["status"] == 429 and answer(blocked)[1]["error"] == "too_many_failures"


async def test_the_address_limit_counts_each_lead_once_on_either_path() -> None:
    limit = RateLimit(2, timedelta(hours=1))
    good, invalid = body(phone="+79161234567"), body(name="no phone")
    answers = []
    for app in (lambda r: r.app, lambda r: r.app.fastapi):
        limited = rig(leads_per_address=limit)
        # A lead FastAPI refuses after its dependency counted it (a body that is not a lead) counts too.
        statuses = [(await call(app(limited), scope(data, GOOD), data))[0]["status"] for data in (good, invalid, good)]
        other = await call(app(limited), scope(good, GOOD, client="10.0.0.2"), good)
        answers.append((statuses, other[0]["status"]))
        refused = await call(app(limited), scope(good, GOOD), good)
        assert answer(refused)[1]["error"] == "too_many_leads" and int(dict(refused[0]["headers"])[b"retry-after"]) > 0
    assert answers[0] == answers[1] == ([201, 422, 429], 201)


@pytest.mark.parametrize(("exc", "status"), [(Unavailable("the disk is gone"), 503), (RuntimeError("a bug"), 500)])
async def test_an_exception_from_the_answer_gets_fastapi_s_answer(exc: Exception, status: int) -> None:
    data = body(phone="+79161234567")
    answers = []
    for app in (lambda r: r.app, lambda r: r.app.fastapi):
        sent: list[dict[str, Any]] = []
        try:
            await call(app(rig(raising=exc)), scope(data, GOOD), data, sent)
        except RuntimeError as raised:  # after the 500, the exception goes on for the server to log
            assert raised is exc
            sent.append({"raised": True})
        answers.append(sent)
    assert answers[0] == answers[1] and answers[0][0]["status"] == status
    assert (status == 500) == (answers[0][-1] == {"raised": True})


def test_the_openapi_document_still_has_post_leads() -> None:
    document = rig().app.openapi()
    operation = document["paths"]["/leads"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/LeadIn"}
    assert "201" in operation["responses"]
