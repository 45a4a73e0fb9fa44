"""CSV import through the running daemon: POST /leads/import and ``leadrouter leads import``."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pytest

from bench.lead_import import sample_csv
from leadrouter.cli import main
from pbxsim import Behaviour, World
from tests.integration.rig import TOKEN, Rig, running

ROUTING = {
    "version": 1,
    "managers": [{"id": "anna", "name": "Anna", "extension": "101"}],
    "scenarios": [{"name": "default", "hold_limit": "60s", "ring_timeout": "8s", "max_attempts": 1}],
}
WORLD = World(clients={}, managers={"101": Behaviour(answer_after=1)})


async def _stored(rig: Rig) -> int:
    return sum((await rig.daemon.queries.lead_status_counts()).values())


@pytest.mark.timeout(60)
async def test_the_import_endpoint_reports_each_bad_row_stores_the_good_ones_and_refuses_a_big_file(
    tmp_path: Path,
) -> None:
    sections = {"http": {"max_import_bytes": 4000}}
    async with running(tmp_path, world=WORLD, routing=ROUTING, sections=sections) as rig:
        text, bad = sample_csv(40, bad_every=10)

        dry = await rig.http.post("/leads/import", params={"dry_run": "true"}, content=text.encode())
        assert dry.status_code == 200 and dry.json()["dry_run"] is True and dry.json()["created"] == 36
        assert await _stored(rig) == 0

        response = await rig.http.post("/leads/import", content=text.encode())
        assert response.status_code == 200
        report = response.json()
        assert (report["rows"], report["created"], report["duplicates"], report["refused"]) == (40, 36, 0, 4)
        assert {(error["row"], error["field"]) for error in report["errors"]} == set(bad.items())
        assert await _stored(rig) == 36

        again = (await rig.http.post("/leads/import", content=text.encode())).json()
        assert (again["created"], again["duplicates"]) == (0, 36)  # the same external_ids: no second lead

        too_big = await rig.http.post("/leads/import", content=b"phone\n" + b"+79161234567\n" * 400)
        assert too_big.status_code == 413 and too_big.json()["problems"][0]["field"] == "body"

        no_phone = await rig.http.post("/leads/import", content=b"tel,name\n+79161234567,x\n")
        assert no_phone.status_code == 422 and "no 'phone' column" in no_phone.json()["problems"][0]["reason"]

        lead_sized = await rig.post(phone="+79161234567", payload={"x": "y" * 70000})
        assert lead_sized.status_code == 413  # POST /leads keeps its own, smaller limit
        assert await _stored(rig) == 36


@pytest.mark.timeout(60)
async def test_the_cli_sends_the_file_in_parts_and_reports_rows_by_their_number_in_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running(tmp_path, world=WORLD, routing=ROUTING) as rig:
        text, bad = sample_csv(45, bad_every=10)
        path = tmp_path / "leads.csv"
        path.write_text(text.replace("phone,name", "Телефон,name", 1), encoding="utf-8")
        errors = tmp_path / "errors.csv"
        argv = [
            "leads",
            "import",
            str(path),
            "--config",
            str(tmp_path / "leadrouter.yaml"),
            "--url",
            str(rig.http.base_url),
            "--token",
            TOKEN,
            "--phone",
            "Телефон",
            "--chunk-rows",
            "10",  # five parts: row numbers must run on across them
            "--errors",
            str(errors),
        ]
        code = await asyncio.to_thread(main, argv)
        out = capsys.readouterr().out
        assert code == 1  # some rows were refused: a script notices
        for row, column in bad.items():
            shown = "Телефон" if column == "phone" else column
            assert f"row {row}: {shown}: " in out
        assert (
            "45 rows: 41 leads created, 0 duplicates (an external_id already known, "
            "or merged into an open lead of the same phone), 4 refused" in out
        )
        with errors.open(encoding="utf-8") as written:
            assert [int(line["row"]) for line in csv.DictReader(written)] == sorted(bad)
        assert await _stored(rig) == 41

        code = await asyncio.to_thread(main, [*argv[:-2], "--dry-run"])
        assert code == 1 and "0 leads would be created, 41 duplicates" in capsys.readouterr().out
