"""The CLI's way into the running daemon: its HTTP API, found and authorised from the config.

Commands that change what the daemon runs (imports, managers) go through it rather than around
it, so the daemon that owns the dialer and the routing plan applies them at once.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from api.scopes import TokenScope
from config.settings import Settings


class ApiFailed(Exception):
    """The daemon refused the request (the message names field and reason) or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ApiTarget:
    url: str  # the daemon's API, e.g. http://127.0.0.1:8080
    token: str

    @classmethod
    def from_settings(
        cls, settings: Settings, url: str | None, token: str | None, scopes: tuple[TokenScope, ...]
    ) -> ApiTarget:
        """The API the settings describe, with the first of their tokens in ``scopes`` unless one is given."""
        if url is None:
            host = settings.http.host
            host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
            url = f"http://{host}:{settings.http.port}"
        if token is None:
            tokens = settings.http.tokens_by_scope()
            candidates = [token for scope in scopes for token in tokens.get(scope, [])]
            if not candidates:
                raise ApiFailed(f"no {' or '.join(scopes)} token in the config: pass --token")
            token = candidates[0]
        return cls(url.rstrip("/"), token)

    def call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        json_body: object = None,
        csv_body: str | None = None,
    ) -> Any:
        """The answer's JSON; raises ApiFailed with the daemon's problems on a 4xx/5xx."""
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if csv_body is not None:
            data, headers["Content-Type"] = csv_body.encode(), "text/csv; charset=utf-8"
        elif json_body is not None:
            data, headers["Content-Type"] = json.dumps(json_body).encode(), "application/json"
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            raise ApiFailed(f"the daemon answered {exc.code}: {_problems(exc.read())}", exc.code) from None
        except OSError as exc:
            raise ApiFailed(f"cannot reach the daemon at {self.url}: {exc}") from None


def _problems(body: bytes) -> str:
    try:
        data: dict[str, Any] = json.loads(body)
        return "; ".join(f"{p['field']}: {p['reason']}" for p in data["problems"]) or str(data.get("error"))
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")[:200]
