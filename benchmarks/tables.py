"""Plain-text tables for the benchmark scripts' reports."""

from __future__ import annotations

from typing import List


def table(header: List[str], rows: List[List[str]]) -> str:
    """Columns padded to width; the first and the last two (target, met?) left-aligned, figures right-aligned."""
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) if i in (0, len(r) - 2, len(r) - 1) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
              for r in rows]
    return "\n".join(lines)
