"""The tables of a benchmark's markdown report as cells, so that tests check the numbers a report shows and
not its layout."""
from __future__ import annotations


def table_rows(text: str) -> list[list[str]]:
    """The cells of every table row in TEXT, stripped and with markdown emphasis removed; header rows (those
    followed by a |---| separator) and separators left out."""
    lines = [line.strip() for line in text.splitlines()]
    rows = []
    for i, line in enumerate(lines):
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        if i + 1 < len(lines) and lines[i + 1].startswith("|") and set(lines[i + 1]) <= set("|-: "):
            continue  # a header
        rows.append([cell.strip().replace("**", "") for cell in line.strip("|").split("|")])
    return rows


def row_of(text: str, *first: str) -> list[str]:
    """The one table row whose first cells are FIRST (an AssertionError when none or several match)."""
    found = [r for r in table_rows(text) if r[:len(first)] == list(first)]
    assert len(found) == 1, f"{len(found)} table rows start with {first}"
    return found[0]
