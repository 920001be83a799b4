"""Reading the Markdown docs in tests: their tables and the code spans in them."""

from __future__ import annotations

import re
from typing import Final

#: A code span: the text between backquotes.
CODE: Final = re.compile(r"`([^`]+)`")


def table_rows(text: str, header: str) -> list[list[str]]:
    """The body rows of the first Markdown table whose header line starts with ``header``,
    as lists of cells (stripped). Raises StopIteration when there is no such table."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows
