"""The architecture contract beyond import-linter's layers (checked in `.ci/run` by `lint-imports`):
short functions, private names kept private, no module importing the package's own facade, and
every design-note reference resolving to a file in `docs/`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from deconvnet.data.paths import REPO_ROOT

LIBRARY = REPO_ROOT / "deconvnet"
CODE_FOLDERS = ("deconvnet", "experiments", "scripts")
MAX_FUNCTION_LINES = 60


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO_ROOT / folder).rglob("*.py"))


def _functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _own_imports(path: Path) -> list[ast.ImportFrom]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom)
        and n.module
        and n.module.split(".")[0] in ("deconvnet", "experiments")
    ]


def test_library_functions_are_at_most_60_lines() -> None:
    long = [
        f"{path.relative_to(REPO_ROOT)}:{fn.lineno} {fn.name} ({fn.end_lineno - fn.lineno + 1} lines)"
        for path in _python_files("deconvnet", "experiments")
        for fn in _functions(path)
        if fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_no_private_name_is_imported_across_modules() -> None:
    crossing = [
        f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.module}.{alias.name}"
        for path in _python_files(*CODE_FOLDERS)
        for node in _own_imports(path)
        for alias in node.names
        if alias.name.startswith("_")
    ]
    assert crossing == []


def test_no_library_module_imports_the_package_facade() -> None:
    """`deconvnet/__init__.py` re-exports the public API; a module importing it would close a cycle
    through the facade (import-linter sees sub-packages, not the root)."""
    facade = [
        f"{path.relative_to(REPO_ROOT)}:{node.lineno}"
        for path in _python_files("deconvnet")
        if path != LIBRARY / "__init__.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if (isinstance(node, ast.ImportFrom) and node.module == "deconvnet")
        or (isinstance(node, ast.Import) and any(a.name == "deconvnet" for a in node.names))
    ]
    assert facade == []


DOC_REFERENCE = re.compile(r"docs/([\w./-]+\.md)(?:#([\w-]+))?")


def _doc_references() -> list[tuple[str, str, str | None]]:
    sources = _python_files(*CODE_FOLDERS, "tests") + [REPO_ROOT / "README.md"]
    sources += sorted((REPO_ROOT / "docs").glob("*.md")) + sorted((REPO_ROOT / "conf").rglob("*.yaml"))
    found = []
    for path in sources:
        for match in DOC_REFERENCE.finditer(path.read_text()):
            found.append((str(path.relative_to(REPO_ROOT)), match.group(1), match.group(2)))
    return found


def test_design_notes_exist_and_are_cited() -> None:
    notes = {p.name for p in (REPO_ROOT / "docs").glob("*.md")}
    assert {"README.md", "stages.md", "mirror.md", "fig2.md", "methods.md", "hed.md"} <= notes
    cited = {name for _, name, _ in _doc_references()}
    assert notes - {"README.md"} <= cited, f"notes no code or README points to: {notes - cited}"


@pytest.mark.parametrize("where, note, anchor", _doc_references())
def test_every_design_note_reference_resolves(where: str, note: str, anchor: str | None) -> None:
    target = REPO_ROOT / "docs" / note
    assert target.is_file(), f"{where} cites docs/{note}, which does not exist"
    if anchor:
        headings = {
            re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in target.read_text().splitlines()
            if line.startswith("#")
        }
        assert anchor in headings, f"{where} cites docs/{note}#{anchor}; headings: {sorted(headings)}"


def test_no_reference_to_a_design_file_outside_the_repository() -> None:
    stray = [
        f"{path.relative_to(REPO_ROOT)}"
        for path in _python_files(*CODE_FOLDERS, "tests") + [REPO_ROOT / "README.md"]
        if "DESIGN" + ".md" in path.read_text()  # spelled apart so this file does not match itself
    ]
    assert stray == []
