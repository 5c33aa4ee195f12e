"""The README documents every setting, and names no setting that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

from streams.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme_settings_table() -> None:
    table = {
        name
        for line in README.read_text().splitlines()
        if line.startswith("| `KINFER_")
        for name in re.findall(r"`(KINFER_[A-Z0-9_]+)`", line.split("|")[1])
    }
    declared = {f"KINFER_{name.upper()}" for name in Settings.model_fields}
    assert declared - table == set(), "settings missing from the README table"
    assert table - declared == set(), "the README table names settings that do not exist"
