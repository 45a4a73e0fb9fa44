"""leadrouter.yaml's webhooks section: refused where it is wrong, secrets kept out of sight."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.problems import ConfigError
from config.settings import load_settings
from tests.config.test_config_settings import SECRET_ENV, problems, write

GOOD = "https://crm.example.com/hook"


def test_subscribers_with_filters_and_a_secret_file(tmp_path: Path) -> None:
    (tmp_path / "amber.secret").write_text("from-a-file-0123456789\n")
    path = write(
        tmp_path,
        f"""\
        webhooks:
          retry_first: 2s
          dead_after: 6h
          subscribers:
            - name: amber
              url: {GOOD}
              secret_file: {tmp_path / "amber.secret"}
              events: [lead.*, call.ended]
            - name: all-of-it
              url: http://10.0.0.5:8099/
              secret: inline-secret-0123456789
            - name: floor
              url: {GOOD}
              secret: floor-secret-0123456789
              events: [manager.*]
        """,
    )
    webhooks = load_settings(path, SECRET_ENV).webhooks.webhook_settings()
    amber, everything, floor = webhooks.subscribers
    assert amber.events == {
        "lead.created",
        "lead.assigned",
        "lead.scheduled",
        "lead.failed",
        "lead.outcome",
        "lead.deferred",
        "lead.duplicate",
        "lead.reassigned",
        "call.ended",
    }
    assert amber.secret == b"from-a-file-0123456789"
    assert everything.events is None and everything.secret == b"inline-secret-0123456789"
    # The events about no lead can be chosen too: manager.changed as well as manager.state.
    assert floor.events == {"manager.state", "manager.changed"}
    assert (webhooks.retry_first, webhooks.dead_after) == (2, 6 * 3600)
    assert "0123456789" not in repr(webhooks)


def test_mistakes_are_refused_where_they_are(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        f"""\
        webhooks:
          subscribers:
            - name: Amber CRM
              url: ftp://crm.example.com
              secret: short
              events: [lead.won]
            - name: b
              url: {GOOD}
        """,
    )
    assert found == [
        "3:13: webhooks.subscribers[0].name: may contain only a-z 0-9 _ . - (found ' ' 'A' 'C' 'M' 'R')",
        "4:12: webhooks.subscribers[0].url: must be an http:// or https:// URL without spaces",
        "5:15: webhooks.subscribers[0].secret: must be at least 16 characters",
        "6:16: webhooks.subscribers[0].events[0]: matches no event; the events are lead.created, call.dialing, "
        "call.answered, lead.assigned, call.ended, lead.scheduled, lead.failed, lead.outcome, lead.deferred, "
        "lead.duplicate, lead.reassigned, manager.state, manager.changed (patterns like lead.* work)",
        "7:7: webhooks.subscribers[1]: set exactly one of secret and secret_file",
    ]
    twice = f"webhooks:\n  subscribers:\n    - {{name: a, url: {GOOD}, secret: s-0123456789abcdef}}\n"
    twice += f"    - {{name: a, url: {GOOD}, secret: s-0123456789abcdef}}\n"
    assert problems(tmp_path, twice) == ["2:3: webhooks: subscriber names used twice: a"]


def test_an_unreadable_secret_file_is_refused_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, f"webhooks:\n  subscribers:\n    - {{name: a, url: {GOOD}, secret_file: /nonexistent/x}}\n")
    settings = load_settings(path, SECRET_ENV)
    with pytest.raises(ConfigError, match="/nonexistent/x: cannot read: No such file"):
        settings.webhooks.webhook_settings()


def test_check_config_names_the_subscribers_and_refuses_a_missing_secret_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from leadrouter.cli import main

    routing = Path(__file__).parents[2] / "routing.yaml"
    subscriber = f"{{name: amber, url: {GOOD}, secret: inline-secret-0123456789, events: [lead.assigned]}}"
    path = write(
        tmp_path, f"ami: {{secret: x}}\nrouting_file: {routing}\nwebhooks:\n  subscribers:\n    - {subscriber}\n"
    )
    assert main(["check-config", "--config", str(path)]) == 0
    assert f"  webhook amber: {GOOD} (lead.assigned)" in capsys.readouterr().out.splitlines()

    path.write_text(path.read_text().replace("secret: inline-secret-0123456789", "secret_file: /nonexistent/s"))
    assert main(["check-config", "--config", str(path)]) == 1
    assert "/nonexistent/s: cannot read" in capsys.readouterr().err


def test_run_refuses_a_missing_secret_file_before_it_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # `leadrouter run` reads the secret files once the copy reading routing.yaml is forked
    # (leadrouter.cli._run): still before anything starts, with the same words.
    from leadrouter.cli import main

    routing = Path(__file__).parents[2] / "routing.yaml"
    subscriber = f"{{name: amber, url: {GOOD}, secret_file: /nonexistent/s}}"
    path = write(
        tmp_path, f"ami: {{secret: x}}\nrouting_file: {routing}\nwebhooks:\n  subscribers:\n    - {subscriber}\n"
    )
    assert main(["run", "--config", str(path)]) == 2
    assert "/nonexistent/s: cannot read" in capsys.readouterr().err
