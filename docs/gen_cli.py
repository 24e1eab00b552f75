"""MkDocs hook: writes the CLI reference page (cli.md) from typer's own command objects, so it never drifts from --help.

Each command gets its usage line, its help text and a table of its options, as `--help` prints them (defaults and
`[required]` included); groups list their commands in the order the CLI registers them.
"""

from __future__ import annotations

import html
import inspect
import re

import typer
from mkdocs.structure.files import File, Files

from personactl.cli import app

PAGE = "cli.md"


def _text(help_text: str) -> str:
    """Help text as Markdown: HTML and table characters escaped outside `code` spans, which stay as written."""
    parts = re.split(r"(`[^`]*`)", help_text)
    return "".join(p if p.startswith("`") else html.escape(p, quote=False).replace("|", "\\|").replace("*", "\\*") for p in parts)


def _command(cmd, ctx, path: list[str], depth: int) -> list[str]:
    """The section of one command (and, for a group, of each of its commands)."""
    doc = inspect.cleandoc(cmd.help or "").split("\f")[0]
    lines = [f"{'#' * min(depth, 6)} {' '.join(path)}", ""]
    lines += [_text(doc), ""] if doc else []
    lines += ["```", cmd.get_usage(ctx).removeprefix("Usage: ").strip(), "```", ""]
    records = [r for p in cmd.get_params(ctx) if p.name != "help" and (r := p.get_help_record(ctx))]
    if records:
        lines += ["| option | what it does |", "|---|---|"]
        lines += [f"| `{names}` | {_text(help_text.replace(chr(10), ' '))} |" for names, help_text in records]
        lines.append("")
    for name in getattr(cmd, "list_commands", lambda _: [])(ctx):
        sub = cmd.get_command(ctx, name)
        if sub is not None and not sub.hidden:
            lines += _command(sub, sub.context_class(sub, info_name=name, parent=ctx), [*path, name], depth + 1)
    return lines


def render() -> str:
    """The whole CLI reference, from `typer.main.get_command(app)`."""
    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="personactl")
    intro = ["# CLI reference", "", "Generated from the commands' own help (`personactl COMMAND --help` prints the same).", ""]
    return "\n".join(intro + _command(root, ctx, ["personactl"], 1)[2:])


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, PAGE, content=render()))
    return files
