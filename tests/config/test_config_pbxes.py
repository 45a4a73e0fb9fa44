"""Several PBXes: leadrouter.yaml's `pbxes:` and routing.yaml's `pbx:`, and where each mistake is."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from config.problems import ConfigError
from config.routing import RoutingSource, load_routing
from config.settings import DEFAULT_PBX, load_settings

PBXES = """\
pbxes:
  office1: {host: 10.1.0.5, secret: one}
  office-2: {host: 10.2.0.5, client_channel: "SIP/{phone}@office2-trunk"}
pbx: {client_channel: "PJSIP/{phone}@trunk"}
"""

ROUTING = """\
version: 2
timezone: Europe/Moscow
managers:
  - {id: anna, name: Anna, extension: 101}
  - {id: boris, name: Boris, extension: 101, pbx: office-2}
  - {id: vera, name: Vera, extension: 102, pbx: office-2}
scenarios:
  - {name: moscow, match: {sources: moscow}, pool: {managers: anna}}
  - {name: kazan, match: {sources: kazan}, pbx: office-2}
  - {name: default}
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _problems(path: Path, load: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(path)  # type: ignore[operator]
    return [str(problem).removeprefix(f"{path}:") for problem in caught.value.problems]


def test_each_pbx_has_its_link_secret_and_channels(tmp_path: Path) -> None:
    env = {"LEADROUTER_AMI_SECRET_OFFICE_2": "two", "LEADROUTER_AMI_SECRET": "shared"}
    settings = load_settings(_write(tmp_path, "leadrouter.yaml", PBXES), env)
    links = {name: (ami.host, ami.secret.get_secret_value(), pbx.client_channel) for name, ami, pbx in settings.links()}
    assert links == {
        "office1": ("10.1.0.5", "one", "PJSIP/{phone}@trunk"),  # the file's secret, the pbx: section's trunk
        "office-2": ("10.2.0.5", "two", "SIP/{phone}@office2-trunk"),  # its own variable, its own trunk
    }
    assert settings.pbx_names == ("office1", "office-2")
    # LEADROUTER_AMI_SECRET stands in for a PBX with no secret of its own.
    shared = load_settings(_write(tmp_path, "leadrouter.yaml", PBXES), {"LEADROUTER_AMI_SECRET": "shared"})
    assert [ami.secret.get_secret_value() for _, ami, _ in shared.links()] == ["one", "shared"]


def test_one_ami_section_is_one_pbx_named_default(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, "leadrouter.yaml", "ami: {port: 5039}\n"), {"LEADROUTER_AMI_SECRET": "s"})
    assert [(name, ami.port) for name, ami, _ in settings.links()] == [(DEFAULT_PBX, 5039)]
    assert settings.pbx_names == ()


def test_pbx_mistakes_point_at_them(tmp_path: Path) -> None:
    both = _write(tmp_path, "both.yaml", "ami: {secret: x}\npbxes:\n  office1: {secret: y}\n")
    assert _problems(both, lambda path: load_settings(path, {})) == [
        "3:3: pbxes: write the one PBX under `ami:` or several under `pbxes:`, not both"
    ]
    bad = _write(tmp_path, "bad.yaml", "pbxes:\n  Office1: {secret: y}\n  office2: {port: 5038}\n")
    assert _problems(bad, lambda path: load_settings(path, {})) == [
        "2:12: pbxes.Office1.[key]: may contain only lowercase letters, digits and _ . - (found 'O')",
        "3:12: pbxes.office2.secret: required key is missing: set it here, or LEADROUTER_AMI_SECRET_<NAME> "
        "(or LEADROUTER_AMI_SECRET) in the environment",
    ]


def test_a_scenario_dials_on_its_pbx_or_its_pools(tmp_path: Path) -> None:
    plan = load_routing(_write(tmp_path, "routing.yaml", ROUTING), ("office1", "office-2"))
    assert {scenario.name: scenario.pbx for scenario in plan.scenarios} == {
        "moscow": "office1",  # anna's, the default PBX
        "kazan": "office-2",  # its own
        "default": None,  # everyone: managers on both, whichever PBX has one free dials it
    }
    assert [manager.id for manager in plan.on_pbx("office-2").managers] == ["boris", "vera"]
    assert [manager.id for manager in plan.on_pbx("office1").managers] == ["anna"]


def test_routing_pbx_mistakes_point_at_them(tmp_path: Path) -> None:
    text = ROUTING.replace("pbx: office-2}\n  - {id: vera", "pbx: office3}\n  - {id: vera").replace(
        "extension: 102", "extension: 101"
    )
    path = _write(tmp_path, "routing.yaml", text)
    assert _problems(path, lambda path: load_routing(path, ("office1", "office-2"))) == [
        "5:51: managers[1].pbx: no PBX is named 'office3': leadrouter.yaml's `pbxes:` are office1, office-2",
    ]
    # Same extension twice on one PBX; a scenario on a PBX none of its pool is on.
    text = ROUTING.replace("extension: 102", "extension: 101").replace(
        "{name: moscow, match: {sources: moscow}, pool: {managers: anna}}",
        "{name: moscow, match: {sources: moscow}, pool: {managers: anna}, pbx: office-2}",
    )
    path = _write(tmp_path, "routing.yaml", text)
    assert _problems(path, lambda path: load_routing(path, ("office1", "office-2"))) == [
        "6:39: managers[2].extension: duplicate extension '101 on PBX office-2': managers[1] already has it",
        "8:75: scenarios[0].pbx: no manager of this scenario's pools is on PBX 'office-2': "
        "its clients would wait for nobody",
    ]
    # With one PBX (`ami:`) there is nothing to name.
    path = _write(tmp_path, "routing.yaml", ROUTING)
    problems = _problems(path, RoutingSource.load)
    assert any(
        problem.startswith("5:51: managers[1].pbx: no PBX is named 'office-2': leadrouter.yaml speaks to one")
        for problem in problems
    )
