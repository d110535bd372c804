"""The sizes CONTRIBUTING holds src/ to: no module over 450 lines, no function over 80."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "lossyds"
MODULE_LINES = 450
FUNCTION_LINES = 80


def oversized() -> list[str]:
    """Every module and function under src/lossyds past its yardstick, as 'path[:name] N lines'."""
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(SOURCE.parent)
        lines = text.count("\n")
        if lines > MODULE_LINES:
            found.append(f"{where} {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > FUNCTION_LINES:
                    found.append(f"{where}:{node.name} {length} lines")
    return found


def test_the_source_scan_sees_every_module() -> None:
    assert len(list(SOURCE.rglob("*.py"))) > 50


def test_no_module_or_function_past_its_yardstick() -> None:
    assert oversized() == []
