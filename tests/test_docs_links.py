"""The Markdown files' relative links resolve: a moved or renamed page, or a renamed heading,
breaks a link the guide depends on, and nothing else would notice."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _checker():
    path = ROOT / "docs" / "tools" / "check_links.py"
    spec = importlib.util.spec_from_file_location("check_links", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_relative_link_of_the_docs_resolves():
    assert _checker().broken_links(set()) == []


def test_the_command_reference_is_generated_from_the_current_parsers():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "docs" / "tools" / "commands.py"),
                           "--check"], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr  # stale: run the tool


def test_the_checker_reports_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "a.md").write_text(
        "# Title here\n\n[ok](#title-here) [gone](b.md) [bad](a.md#nope)\n"
        "```\n[in code](ignored.md)\n```\n")
    problems = _checker().broken_links(set(), root=tmp_path)
    assert problems == ["a.md: b.md: no such file", "a.md: a.md#nope: no heading gives #nope"]
