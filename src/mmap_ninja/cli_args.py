"""What every sub-command of ``mmap-ninja`` shares (``cli.py``, ``cli_convert.py``): the error
it reports on one line, and the types of its numeric arguments."""

from __future__ import annotations

import argparse


class CommandError(Exception):
    """A failure to report on one line, with exit code 1."""


def count_text(n: int, singular: str, plural: str = "") -> str:
    """``n`` things in words: "1 file", "3 files"."""
    return f"{n:,} {singular if n == 1 else (plural or singular + 's')}"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value}")
    return value


def non_negative_int(text: str) -> int:
    if text.strip() == "0":
        return 0
    return positive_int(text)


def jobs(text: str) -> int:
    if text.strip() == "-1":
        return -1
    return positive_int(text)
