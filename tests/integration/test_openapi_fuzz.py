"""schemathesis against the daemon's own OpenAPI: valid and invalid requests for every
operation, generated from the schema the daemon publishes. Whatever arrives, the answer is
never a server error (5xx).

Examples per operation and mode are fixed so the figures in issue 10's note are the suite's own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode

from pbxsim import World
from tests.integration.rig import TOKEN, running

EXAMPLES = 40  # per operation and generation mode
ROUTING = {
    "version": 1,
    "managers": [{"id": "anna", "name": "Anna", "extension": "101"}],
    "scenarios": [{"name": "default"}],
}


@dataclass
class Tally:
    cases: int = 0
    unsendable: int = 0  # requests the HTTP client itself refuses to put on the wire
    server_errors: list[str] = field(default_factory=list)


def _fuzz(spec: dict[str, Any], base_url: str) -> Tally:
    """Runs in a worker thread: schemathesis calls are blocking, the daemon answers on the test's loop."""
    tally = Tally()
    schema = schemathesis.openapi.from_dict(spec)
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(operation.as_strategy(mode))
            def call(case: Case) -> None:
                try:
                    response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
                except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError):
                    tally.unsendable += 1
                    return
                tally.cases += 1
                if response.status_code >= 500:
                    tally.server_errors.append(f"{case.method} {case.formatted_path} -> {response.status_code}")

            try:
                call()
            except Unsatisfiable:
                # Nothing to make invalid: GET /health or /metrics take no parameters, and a
                # recording's name is any text (the daemon refuses what it cannot serve with a 404).
                assert mode is GenerationMode.NEGATIVE
                free_text = {"type": "string"}
                assert all(
                    {key: value for key, value in param.definition["schema"].items() if key != "title"} == free_text
                    for param in operation.path_parameters.items
                ), operation.path
    return tally


# Every valid POST /managers is checked in the reload process (~1 s on a loaded 2-core machine):
# 40 of them alone outlast the default 120 s on a bad day.
@pytest.mark.timeout(300)
async def test_no_generated_request_gets_a_server_error(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database=database_url, world=World(), routing=ROUTING) as rig:
        spec = (await rig.http.get("/openapi.json")).json()
        tally = await asyncio.to_thread(_fuzz, spec, str(rig.http.base_url))
    print(f"schemathesis: {tally.cases} cases, {len(tally.server_errors)} server errors, {tally.unsendable} unsendable")
    assert tally.server_errors == []
    assert tally.cases >= EXAMPLES * len(spec["paths"])  # the run really exercised every path
