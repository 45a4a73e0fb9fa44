"""``POST /leads`` in its plain case, answered before FastAPI's layers.

A lead's way through FastAPI (the middleware stack, routing, a Request, solving the dependency,
the body's read and validation, the response's way back through each layer) cost ~0.3 ms of the
daemon's CPU, most of what a lead's HTTP input costs. The plain case is nearly every lead a CRM
posts: Content-Length within the body limit, a JSON content type, a bearer token of the intake
scope, room in the address's limit, the daemon open for leads, a body that is a valid ``LeadIn``.
This path answers exactly that case, with what ``post_lead`` answers (the same function builds the
answer). Anything else goes to the FastAPI app unchanged, with the body this path read handed back
to it, and FastAPI answers it as before: every refusal of the request itself (401, 403, 413, 422,
429, 503) has one place, and since this path counts nothing unless it serves the request (a failed
authentication, a lead against its address), no count happens twice or is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Final

from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dialer.requests import LeadIn

# The content types FastAPI reads as JSON that CRMs send; any other (FastAPI parses its
# parameters) takes FastAPI's path.
JSON_TYPES: Final = frozenset({b"application/json", b"application/json; charset=utf-8"})


class PlainLeadPost:
    """The plain ``POST /leads``; ``fallback`` (the FastAPI app) gets every other request, and this one
    whenever it is not plain."""

    def __init__(
        self,
        fallback: ASGIApp,
        max_body_bytes: int,
        may_pass: Callable[[str, str], bool],
        answer: Callable[[LeadIn], Awaitable[Response]],
        failed: Callable[[BaseException, Scope, Receive, Send], Awaitable[None]],
    ) -> None:
        """``may_pass(authorization, address)``: True when the lead dependency would let the request
        through, and the lead is then counted as that dependency counts it (else nothing is);
        ``answer``: ``post_lead``'s answer to a valid lead; ``failed``: what FastAPI's layers answer
        to an exception the answer raised (too late to hand the request over: it was counted)."""
        self._fallback = fallback
        self._max_body_bytes = max_body_bytes
        self._may_pass = may_pass
        self._answer = answer
        self._failed = failed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # FastAPI's path reads the first of repeated headers and BodyLimit the last Content-Length:
        # a repeated one is not plain. A session cookie rides along only with browsers' requests.
        authorization = length = content_type = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is not None:
                    break
                authorization = value
            elif name == b"content-length":
                if length is not None:
                    break
                length = value
            elif name == b"content-type":
                if content_type is not None:
                    break
                content_type = value
            elif name == b"cookie":
                break
        else:
            if (
                authorization is not None
                and content_type in JSON_TYPES
                and length is not None
                and length.isdigit()
                and int(length) <= self._max_body_bytes
                and not scope.get("root_path")
            ):
                await self._plain(scope, receive, send, authorization.decode("latin-1"))
                return
        await self._fallback(scope, receive, send)

    async def _plain(self, scope: Scope, receive: Receive, send: Send, authorization: str) -> None:
        received: list[Message] = []
        chunks: list[bytes] = []
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":  # the client went away: FastAPI's path says so
                await self._fallback(scope, _replay(received, receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        try:
            # As FastAPI reads a JSON body (Starlette's json.loads) and validates it (python mode).
            lead = LeadIn.model_validate(json.loads(b"".join(chunks)))
        except Exception:  # not JSON, not a lead, too deep: FastAPI's path names the problem
            await self._fallback(scope, _replay(received, receive), send)
            return
        client = scope.get("client")
        if not self._may_pass(authorization, client[0] if client else "unknown"):
            await self._fallback(scope, _replay(received, receive), send)
            return
        try:
            response = await self._answer(lead)
        except Exception as exc:
            await self._failed(exc, scope, receive, send)
            return
        await response(scope, receive, send)


def _replay(received: list[Message], receive: Receive) -> Receive:
    """``receive`` as if nothing had been read from it: what was read comes first, in order."""
    pending = list(received)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
