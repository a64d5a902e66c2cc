"""The import direction of DESIGN.md §2: commands sit on the library, never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _is_command(path: Path) -> bool:
    text = path.read_text()
    return "def main(" in text and 'if __name__ == "__main__"' in text


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, also inside functions (``from nas import train`` counts
    as ``nas.train``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_no_library_module_imports_a_command():
    files = [p for pkg in ("nas", "genome", "search_spaces", "defenses")
             for p in (ROOT / pkg).rglob("*.py")]
    commands = {_module(p) for p in files if _is_command(p)}
    assert {"nas.evolve", "nas.train", "nas.export", "nas.report"} <= commands
    offenders = {_module(p): sorted(_imports(p) & commands) for p in files
                 if _module(p) not in commands and _imports(p) & commands}
    assert offenders == {}


def test_no_package_reaches_into_another_packages_private_modules():
    offenders = []
    for pkg in ("nas", "genome", "search_spaces", "defenses"):
        for path in (ROOT / pkg).rglob("*.py"):
            for name in _imports(path):
                parts = name.split(".")
                if parts[0] != pkg and any(p.startswith("_") and p != "__future__"
                                           for p in parts[1:]):
                    offenders.append((_module(path), name))
    assert offenders == []


def test_python_m_nas_lists_every_command_once_verbs_first():
    from nas.__main__ import INSTRUMENTS, VERBS, usage

    listed = [name for name, _ in VERBS + INSTRUMENTS]
    commands = {p.stem for p in (ROOT / "nas").glob("*.py") if _is_command(p)} - {"__main__"}
    assert sorted(listed) == sorted(commands)
    text = usage()
    assert max(text.index(f"  {v} ") for v, _ in VERBS) < text.index("lab instruments")
    assert min(text.index(f"  {i} ") for i, _ in INSTRUMENTS) > text.index("lab instruments")


def test_no_test_module_imports_another():
    """Shared test code lives in tests/helpers and conftest.py, never in a test module."""
    offenders = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p) if n.startswith("test_"))
                 for p in (ROOT / "tests").rglob("test_*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}
