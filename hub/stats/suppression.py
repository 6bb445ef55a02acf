"""Small-cell suppression of a published table, with complementary suppression.

A cell is primarily suppressed when one of its counts is from 1 to below the threshold (0 is shown). Then,
so that no suppressed cell can be recovered by subtraction from a published total or subtotal, every line
of the table (the cells that agree on all dimensions but one: a row or a column, whose marginal is a
subtotal someone can ask for) must hold no suppressed cell or at least two: a line with exactly one gets its
smallest other non-zero cell suppressed as well, until no such line is left. A table of one dimension is one
line whose marginal is the published total; when no second cell can be taken the total is suppressed.
The table is complete (every combination of the values seen, zeros included: ``hub.stats.query``), so a
line with one hidden cell and only zeros beside it hides a zero. (A line of a single cell needs nothing:
its subtotal is that cell's own count, which any other table suppresses in the same way.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Cell:
    key: tuple[Any, ...]  # the values of the table's dimensions
    counts: tuple[int, ...]  # the counts behind the published value (the first one orders the cells)
    suppressed: bool = False
    primary: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def small(count: int, threshold: int) -> bool:
    return 0 < count < threshold


def suppress(cells: Sequence[Cell], dims: int, threshold: int, total: Sequence[int] | None = None) -> bool:
    """Mark the suppressed cells in place; returns whether the total must be suppressed too."""
    if threshold <= 1:
        return False
    for cell in cells:
        if any(small(c, threshold) for c in cell.counts):
            cell.suppressed = cell.primary = True
    total_hidden = total is not None and any(small(c, threshold) for c in total)
    changed = True
    while changed:
        changed = False
        for axis in range(max(dims, 1)):
            lines: dict[tuple[Any, ...], list[Cell]] = {}
            for cell in cells:
                lines.setdefault(cell.key[:axis] + cell.key[axis + 1 :], []).append(cell)
            for line in lines.values():
                hidden = [c for c in line if c.suppressed]
                if len(hidden) != 1:
                    continue
                others = [c for c in line if not c.suppressed]
                if others:
                    # The smallest non-zero cell; a zero only when the line has no other (an empty cell
                    # then hides the one beside it).
                    min(others, key=lambda c: (c.counts[0] == 0, c.counts[0], str(c.key))).suppressed = True
                    changed = True
                elif dims <= 1:
                    total_hidden = True
    if dims <= 1 and total is not None and sum(1 for c in cells if c.suppressed) == 1:
        total_hidden = True
    return total_hidden


def round_to(value: int, base: int) -> int:
    if base <= 1:
        return value
    return int(base * round(value / base))
