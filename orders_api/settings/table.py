"""``python -m orders_api.settings.table``: the table of every variable, generated from the settings classes.

Printed, or with ``--write FILE`` put between the markers of docs/configuration.md (``make
settings-table``); a unit test fails while the committed table differs from the generated one.
"""

from __future__ import annotations

import argparse
import tempfile
import types
import typing
from collections.abc import Sequence
from pathlib import Path

from pydantic.fields import FieldInfo

from orders_api.settings.roles import ROLES

START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"
#: Names of the types as the table gives them.
TYPE_NAMES = {int: "integer", float: "number", bool: "boolean", str: "text", Path: "path"}
#: Units by a variable's suffix.
UNITS = {"_S": "s", "_MS": "ms"}
#: Where a default's temporary directory is, as the table writes it: it differs by machine.
TEMPORARY_DIRECTORY = "$TMPDIR"


def render() -> str:
    """The table, one row per variable in alphabetical order, and the roles' commands under it."""
    fields: dict[str, FieldInfo] = {}
    readers: dict[str, list[str]] = {}
    for role in ROLES:
        for name, field in role.settings.model_fields.items():
            fields.setdefault(name, field)
            readers.setdefault(name, []).append(role.name)
    lines = [
        "| Variable | Type | Default | Read by | Description |",
        "|---|---|---|---|---|",
    ]
    for name in sorted(fields):
        field = fields[name]
        variable = name.upper()
        cells = (
            f"`{variable}`",
            _type(field.annotation, variable),
            _default(field),
            _roles(readers[name]),
            _cell(field.description or ""),
        )
        lines.append(f"| {' | '.join(cells)} |")
    lines += ["", "Roles, by the commands that start them:", ""]
    lines += [f"- {role.name}: {', '.join(f'`{command}`' for command in role.commands)}" for role in ROLES]
    return "\n".join(lines)


def _type(annotation: object, variable: str) -> str:
    """``integer, ms``; a choice as its values; an optional value as its type (its default is unset)."""
    arguments = [argument for argument in typing.get_args(annotation) if argument is not types.NoneType]
    if typing.get_origin(annotation) is typing.Literal:
        named = " or ".join(f"`{value}`" for value in arguments)
    else:
        if isinstance(annotation, types.UnionType):
            [annotation] = arguments
        named = TYPE_NAMES[typing.cast(type, annotation)]
    unit = next((unit for suffix, unit in UNITS.items() if variable.endswith(suffix)), None)
    return f"{named}, {unit}" if unit else named


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, Path) and value.is_relative_to(tempfile.gettempdir()):
        text = f"{TEMPORARY_DIRECTORY}/{value.relative_to(tempfile.gettempdir())}"
    else:
        text = str(value)
    return f"`{text}`"


def _roles(names: Sequence[str]) -> str:
    """The roles reading a variable; ``all``, or ``all but ...`` when that is shorter."""
    others = [role.name for role in ROLES if role.name not in names]
    if not others:
        return "all"
    if len(others) < len(names):
        return f"all but {', '.join(others)}"
    return ", ".join(names)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def rewritten(document: str, table: str) -> str:
    """``document`` with ``table`` between its markers, which must each be there once."""
    before, start, rest = document.partition(START)
    _, end, after = rest.partition(END)
    if not start or not end or START in rest or END in after:
        raise ValueError(f"the document needs one {START} line and one {END} line after it")
    return f"{before}{START}\n{table}\n{END}{after}"


def between_markers(document: str) -> str:
    """What ``document`` holds between its markers, as :func:`rewritten` puts it there."""
    return document.partition(START)[2].partition(END)[0].strip("\n")


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table, or write it between the markers of ``--write FILE``."""
    parser = argparse.ArgumentParser(prog="python -m orders_api.settings.table", description=main.__doc__)
    parser.add_argument("--write", type=Path, metavar="FILE", help="the Markdown file to update in place")
    arguments = parser.parse_args(argv)
    table = render()
    if arguments.write is None:
        print(table)
        return
    path: Path = arguments.write
    path.write_text(rewritten(path.read_text(encoding="utf-8"), table), encoding="utf-8")


if __name__ == "__main__":
    main()
