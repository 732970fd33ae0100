"""The helpers that turn exceptions into what a user reads."""

from __future__ import annotations

from zoo.errors import one_line


def test_one_line_names_the_type_and_collapses_lines() -> None:
    assert one_line(ValueError("bad\n  value\tthere")) == "ValueError: bad value there"


def test_one_line_without_a_message_is_the_type() -> None:
    assert one_line(KeyboardInterrupt()) == "KeyboardInterrupt"
    assert one_line(RuntimeError("  \n ")) == "RuntimeError"


def test_one_line_cuts_long_messages_and_drops_colour_codes() -> None:
    text = one_line(RuntimeError("\x1b[31mred\x1b[0m " + "x" * 500), limit=20)
    assert text == "RuntimeError: red " + "x" * 15 + "…"
    assert len(text.removeprefix("RuntimeError: ")) == 20
