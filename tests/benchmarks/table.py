"""The benchmark table: rows of figures, ratios and notes, printed and kept as JSON."""

from __future__ import annotations

from typing import Any


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:,.{digits}f}"


class Table:
    """Rows of the one table, also kept for the JSON.

    ``phase`` names the part of the run that is measuring (rows are stamped with it, so that
    other processes' CPU share during that part can be put next to them).
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.phase = ""

    def add(
        self,
        section: str,
        what: str,
        value: float | None,
        unit: str = "inputs/s",
        ratio: float | None = None,
        ratio_of: str = "",
        note: str = "",
        padding: float | str | None = None,
    ) -> None:
        """One row; ``padding``: real / computed tokens (a share), "n/a", or None (blank)."""
        self.rows.append(
            {
                "section": section,
                "phase": self.phase,
                "what": what,
                "value": value,
                "unit": unit,
                "ratio": ratio,
                "ratio_of": ratio_of,
                "padding_efficiency": padding,
                "note": note,
            }
        )
        pad = "" if padding is None else f" padding {pad_text(padding)}"
        print(f"  [{section}] {what}: {fmt(value)} {unit}{pad} {note}", flush=True)

    def render(self) -> str:
        head = (
            f"| {'#':<2} | {'what':<62} | {'value':>10} | {'unit':<11} | {'ratio':>18} | "
            f"{'pad eff':>7} | note"
        )
        lines = [head, "|" + "---|" * 7]
        for row in self.rows:
            ratio = "" if row["ratio"] is None else f"{row['ratio']:.2f}x {row['ratio_of']}"
            pad = pad_text(row["padding_efficiency"])
            lines.append(
                f"| {row['section']:<2} | {row['what']:<62} | {fmt(row['value']):>10} | "
                f"{row['unit']:<11} | {ratio:>18} | {pad:>7} | {row['note']}"
            )
        return "\n".join(lines)


def pad_text(padding: float | str | None) -> str:
    """A padding efficiency for the table: "93%", "n/a", or blank."""
    if padding is None:
        return ""
    if isinstance(padding, str):
        return padding
    return f"{100 * padding:.0f}%"


def met(ok: bool) -> str:
    return "MET" if ok else "MISSED"
