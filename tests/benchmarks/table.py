"""The benchmark table: rows of figures, ratios and notes, printed and kept as JSON."""

from __future__ import annotations

from typing import Any


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:,.{digits}f}"


class Table:
    """Rows of the one table, also kept for the JSON."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        section: str,
        what: str,
        value: float | None,
        unit: str = "inputs/s",
        ratio: float | None = None,
        ratio_of: str = "",
        note: str = "",
    ) -> None:
        self.rows.append(
            {
                "section": section,
                "what": what,
                "value": value,
                "unit": unit,
                "ratio": ratio,
                "ratio_of": ratio_of,
                "note": note,
            }
        )
        print(f"  [{section}] {what}: {fmt(value)} {unit} {note}", flush=True)

    def render(self) -> str:
        head = f"| {'#':<2} | {'what':<58} | {'value':>10} | {'unit':<10} | {'ratio':>16} | note"
        lines = [head, "|" + "---|" * 6]
        for row in self.rows:
            ratio = "" if row["ratio"] is None else f"{row['ratio']:.2f}x {row['ratio_of']}"
            lines.append(
                f"| {row['section']:<2} | {row['what']:<58} | {fmt(row['value']):>10} | "
                f"{row['unit']:<10} | {ratio:>16} | {row['note']}"
            )
        return "\n".join(lines)


def met(ok: bool) -> str:
    return "MET" if ok else "MISSED"
