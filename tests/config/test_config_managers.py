"""Edits of routing.yaml's managers (config.managers), apart from the daemon that applies them."""

from __future__ import annotations

import pytest

from config.managers import Change, edited


def test_an_edit_keeps_the_files_comments() -> None:
    text = "version: 1\nmanagers:\n  - id: anna  # her desk\n    name: Anna\n    extension: '101'\n"
    changed, change = edited(text, "anna", {"name": "Anna P."})
    assert change is Change.CHANGED
    assert "# her desk" in changed and "name: Anna P." in changed


def test_an_edit_of_a_file_that_is_no_yaml_is_refused_as_a_value_error() -> None:
    # The API answers a ValueError with 422 invalid_manager, without importing ruamel.yaml itself.
    with pytest.raises(ValueError, match="while parsing a flow mapping"):
        edited("version: 1\nmanagers: [{id: anna\n", "anna", {"name": "A"})
