"""Write docs/reference/commands.md from the commands' own argument parsers, so the flag
reference says exactly what ``--help`` says.

    PYTHONPATH=. python docs/tools/commands.py            # rewrite the page
    PYTHONPATH=. python docs/tools/commands.py --check    # exit 1 when the page is stale

Each command module exposes ``build_parser()``; a module listed here that cannot be imported
(renamed, moved) is reported and left out, so the page is regenerated after such a change.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "reference" / "commands.md"

def _listed() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(module, what it does) of the verbs, then of the lab instruments, as ``python -m nas``
    lists them (one list for both, so neither goes stale)."""
    sys.path.insert(0, str(ROOT))
    from nas.__main__ import INSTRUMENTS, VERBS

    return ([(f"nas.{n}", w) for n, w in VERBS], [(f"nas.{n}", w) for n, w in INSTRUMENTS])


PRODUCT, INSTRUMENTS = _listed()

HEADER = """# Command reference

Generated from the commands' argument parsers by `docs/tools/commands.py` (do not edit by
hand: run `PYTHONPATH=. python docs/tools/commands.py` after changing a flag). Every command
prints the same under `--help`. Bad input exits with code 2 and one line on stderr saying what
to do. The product's commands come first, then the lab instruments.
"""


def flag_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| flag | meaning |", "| --- | --- |"]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        names = ", ".join(action.option_strings) or action.dest
        if action.metavar and action.option_strings and action.nargs != 0:
            names += f" {action.metavar}"
        text = (action.help or "").replace("%(default)s", str(action.default))
        text = " ".join(text.replace("%%", "%").split()).replace("|", "\\|")
        rows.append(f"| `{names}` | {text} |")
    return rows if len(rows) > 2 else []


def usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().split())


def section(module: str, question: str) -> list[str]:
    parser = importlib.import_module(module).build_parser()
    out = [f"### `python -m {module}`", "", question[0].upper() + question[1:] + ".", ""]
    if parser.description:
        out += [" ".join(parser.description.split()), ""]
    out += ["```", usage(parser).removeprefix("usage: "), "```", ""]
    rows = flag_rows(parser)
    if rows:
        out += rows + [""]
    if parser.epilog:
        out += [" ".join(parser.epilog.split()), ""]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [f"#### `python -m {module} {name}`", ""]
                if sub.description:
                    out += [" ".join(sub.description.split()), ""]
                out += ["```", usage(sub).removeprefix("usage: "), "```", ""]
                out += flag_rows(sub) + [""]
    return out


def render() -> tuple[str, list[str]]:
    lines, missing = [HEADER], []
    for title, group in (("The product", PRODUCT), ("Lab instruments", INSTRUMENTS)):
        lines += [f"## {title}", ""]
        for module, question in group:
            try:
                lines += section(module, question)
            except ImportError:
                missing.append(module)
    return "\n".join(lines).rstrip() + "\n", missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the page is stale")
    args = parser.parse_args()
    text, missing = render()
    for module in missing:
        print(f"{module}: not importable, left out", file=sys.stderr)
    if args.check:
        stale = not PAGE.exists() or PAGE.read_text(encoding="utf-8") != text
        print(f"{PAGE.relative_to(ROOT)} is {'stale' if stale else 'up to date'}")
        return 1 if stale else 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
