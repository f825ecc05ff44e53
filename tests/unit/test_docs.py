"""The docs name what the code has: every setting, every close code, every error code."""

from __future__ import annotations

from pathlib import Path

from roomcast.codes import CLOSE_MEANINGS, ErrorCode
from roomcast.settings import FIELDS

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_setting_is_in_the_configuration_doc() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [name for name in FIELDS
               if f"`{name}`" not in text or f"ROOMCAST_{name.upper()}" not in text
               or f"--{name.replace('_', '-')}" not in text]
    assert missing == []


def test_every_close_code_is_in_the_protocol_doc() -> None:
    text = (DOCS / "protocol.md").read_text()
    assert [code for code in CLOSE_MEANINGS if f"| {int(code)} |" not in text] == []


def test_every_error_code_is_in_the_protocol_doc() -> None:
    text = (DOCS / "protocol.md").read_text()
    assert [code for code in ErrorCode if f"`{code.value}`" not in text] == []
