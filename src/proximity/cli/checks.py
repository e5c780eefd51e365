"""How checks read in a terminal: a table of every check, then each problem as a block under it.

A narrow table column cut the most useful fix at 80 columns. Here the table holds only short
cells; what was observed is wrapped at word boundaries under the table, and each fix is printed
as one line that the terminal wraps, so it is never cut and a copied command stays whole. Text
goes in as ``Text`` (no markup, no emoji codes): a rule such as ``[0:0]`` or a MAC with ``:cd:``
prints as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from proximity.network.health import Check


def _result(check: Check) -> tuple[str, str]:
    if check.ok:
        return "pass", "green"
    return ("warn", "yellow") if check.severity == "warning" else ("FAIL", "red")


def render_doctor(checks: Sequence[Check], console: Any, title: str = "proximity doctor") -> None:
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    problems = [check for check in checks if not check.ok]
    table = Table(title=title)
    table.add_column("check", overflow="fold")
    table.add_column("result", no_wrap=True)
    table.add_column("observed", overflow="fold")
    for check in checks:
        word, style = _result(check)
        note = check.observed if check.ok else f"see [{problems.index(check) + 1}] below"
        table.add_row(Text(check.name), Text(word, style=style), Text(note))
    console.print(table, soft_wrap=False)
    for number, check in enumerate(problems, start=1):
        word, style = _result(check)
        console.print(Text.assemble(f"[{number}] ", (word, f"bold {style}"), f" {check.name} ({check.id})"),
                      soft_wrap=False)
        console.print(Padding(Text(check.observed), (0, 0, 0, 4), expand=False), soft_wrap=False)
        if check.fix:
            console.print(Text.assemble("    ", ("fix: ", "bold"), check.fix), soft_wrap=True)


def render_problems(checks: Sequence[Check], style: str, console: Any) -> None:
    """Status's failing checks (and, while down, why), one bullet each: what was seen, then the whole fix."""
    from rich.text import Text

    from proximity.cli.common import Fetched

    for check in checks:
        check = Fetched(check) if isinstance(check, dict) else check  # the service's answer (--api)
        if not check.ok or check.id == "intent":
            console.print(Text.assemble(("• ", style), check.observed), soft_wrap=True)
            if check.fix:
                console.print(Text.assemble("  ", ("fix: ", "bold"), check.fix), soft_wrap=True)
