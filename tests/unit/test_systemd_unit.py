"""The shipped unit keeps the hardening and limits the Security section promises."""

from __future__ import annotations

from pathlib import Path

from api.server import RESERVED_FILES
from config.settings import HttpSection

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "leadrouter.service"


def _service() -> dict[str, str]:
    lines = UNIT.read_text().split("[Service]")[1].split("[Install]")[0].splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_the_unit_is_hardened_and_creates_files_for_the_owner_only() -> None:
    service = _service()
    assert service["User"] == "leadrouter" and service["Group"] == "leadrouter"
    for option in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert service[option] == "yes", option
    assert service["ProtectSystem"] == "strict" and service["ReadWritePaths"] == "/var/lib/leadrouter"
    assert service["UMask"] == "0077" and service["StateDirectoryMode"] == "0700"


def test_the_open_file_limit_leaves_room_for_every_allowed_connection() -> None:
    default_cap = HttpSection.model_fields["max_connections"].default
    assert int(_service()["LimitNOFILE"]) - RESERVED_FILES >= default_cap
