#!/usr/bin/env python3
"""Print the configuration reference (a Markdown table) from the typed config models.

README.md embeds this output between the `config-keys` markers; `make docs` rewrites it there and
a test fails when the two differ, so the README never drifts from the code.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path

from enrich.config import iter_keys

START, END = "<!-- config-keys:start -->", "<!-- config-keys:end -->"


def _type_name(annotation: object) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + " (optional)"
    if origin is dict:
        return "map of " + " to ".join(_type_name(a) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    name = getattr(annotation, "__name__", str(annotation))
    return "date (YYYY-MM-DD)" if name == "date" else name


def table() -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, field in iter_keys():
        default = field.get_default(call_default_factory=True)
        shown = "—" if default is None else f"`{default}`"
        doc = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{key}` | {_type_name(field.annotation)} | {shown} | {doc} |")
    return "\n".join(rows)


def render_into(readme: str) -> str:
    before, _, rest = readme.partition(START)
    _, _, after = rest.partition(END)
    return f"{before}{START}\n{table()}\n{END}{after}"


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    if path is None:
        print(table())
    else:
        path.write_text(render_into(path.read_text()))
