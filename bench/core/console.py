"""What commands print: lines of at most LINE_WIDTH columns, so that a terminal or a CI log never wraps them."""

from __future__ import annotations

import textwrap

LINE_WIDTH = 100


def fit(text: str, width: int = LINE_WIDTH, indent: str = "    ") -> str:
    """One message wrapped to `width` columns at spaces, continuation lines indented under its own indentation.
    Hyphens never break a line (run ids are joined with them); only a word wider than a line (a path) is cut."""
    lead = " " * (len(text) - len(text.lstrip(" ")))
    return "\n".join(textwrap.wrap(text, width, subsequent_indent=lead + indent, break_on_hyphens=False))
