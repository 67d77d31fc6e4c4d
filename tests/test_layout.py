"""The import rules of docs/development.md, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _uses(names: set[str], top: str) -> bool:
    return any(n == top or n.startswith(top + ".") for n in names)


def test_libraries_never_import_the_service_or_web_and_orm_frameworks() -> None:
    for package in ("ins", "mssante", "fhir_profiles"):
        for path in _modules(package):
            names = _imports(path)
            for forbidden in ("dui", "flask", "sqlalchemy", "marshmallow"):
                assert not _uses(names, forbidden), f"{path.relative_to(ROOT)} imports {forbidden}"
            for other in {"ins", "mssante", "fhir_profiles"} - {package}:
                assert not _uses(names, other), f"{path.relative_to(ROOT)} imports {other}"


def test_flask_only_at_the_edges() -> None:
    allowed = ("dui/app.py", "dui/web/", "dui/cli/")
    for path in _modules("dui"):
        rel = path.relative_to(ROOT).as_posix()
        if _uses(_imports(path), "flask") or _uses(_imports(path), "werkzeug"):
            assert rel.startswith(allowed), f"{rel} imports Flask"


def test_fhir_resources_only_in_the_model_module() -> None:
    for path in _modules("dui"):
        rel = path.relative_to(ROOT).as_posix()
        if _uses(_imports(path), "fhir.resources"):
            assert rel == "dui/fhir/model.py", rel


def test_the_fhir_engine_does_not_import_the_edges() -> None:
    for path in _modules("dui/fhir"):
        names = _imports(path)
        for edge in ("dui.web", "dui.cli", "dui.app", "dui.services", "dui.demo"):
            assert not _uses(names, edge), f"{path.relative_to(ROOT)} imports {edge}"


def test_encryption_at_rest_sits_below_the_fhir_engine() -> None:
    for path in _modules("dui/crypto"):
        names = _imports(path)
        for upper in ("dui.fhir", "dui.residents", "dui.web", "dui.cli", "dui.app", "dui.services", "flask"):
            assert not _uses(names, upper), f"{path.relative_to(ROOT)} imports {upper}"


def test_the_outbox_never_imports_the_layers_that_give_it_handlers() -> None:
    for path in _modules("dui/outbox"):
        names = _imports(path)
        for upper in ("dui.documents", "dui.dmp", "dui.messaging", "dui.residents", "dui.web", "dui.cli", "dui.app",
                      "dui.services", "flask"):
            assert not _uses(names, upper), f"{path.relative_to(ROOT)} imports {upper}"
