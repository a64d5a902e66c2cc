"""Check that every relative link of the Markdown files resolves: the file exists and, for a
``#anchor``, one of its headings gives that anchor (GitHub's rule: lower case, punctuation
dropped, spaces to hyphens, a ``-N`` suffix for repeats).

    python docs/tools/check_links.py [--allow-missing docs/extending.md ...]

Prints one line per broken link and exits 1 if there is any. Links to web addresses and
links inside code blocks are not checked.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*```")


def markdown_files(root: Path) -> list[Path]:
    skip = {".git", ".venv", "runs", "node_modules"}
    return sorted(p for p in root.rglob("*.md") if not skip & set(p.relative_to(root).parts))


def prose_lines(path: Path) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(path):
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda g: g.group(1) or "", m.group(1))
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(allow_missing: set[Path], root: Path = ROOT) -> list[str]:
    """One line per link under ``root`` whose file or anchor does not exist."""
    problems = []
    for md in markdown_files(root):
        for line in prose_lines(md):
            for target in LINK.findall(line):
                if re.match(r"[a-z]+:", target):
                    continue
                file_part, _, anchor = target.partition("#")
                dest = (md.parent / file_part).resolve() if file_part else md
                where = md.relative_to(root)
                if not dest.exists():
                    if dest not in allow_missing:
                        problems.append(f"{where}: {target}: no such file")
                elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                    problems.append(f"{where}: {target}: no heading gives #{anchor}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--allow-missing", nargs="*", default=[],
                        help="files (relative to the repository) another change adds")
    args = parser.parse_args()
    problems = broken_links({(ROOT / p).resolve() for p in args.allow_missing})
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
