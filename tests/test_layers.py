"""The house's layering, enforced: who may import whom (docs/design.md, "The house").

* ``connectors/`` speaks vendor protocols and never imports ``agent/``;
* ``agent/core/`` is pure: no I/O library, no snapshot, no engine;
* nothing in ``agent/`` imports the SCIM implementation's internals, and only the wiring
  module (``agent/app.py``) builds the SCIM target at all;
* nothing in ``agent/`` speaks SCIM on the wire (no SCIM schema URNs in its code).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IO_LIBRARIES = {"httpx", "ldap3", "msal", "sqlite3", "sqlite_utils", "socket", "requests",
                "urllib3", "http", "ssl", "subprocess", "apscheduler", "prometheus_client"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)
    return found


def python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def offenders(folder: str, forbidden) -> list[str]:
    return [f"{path.relative_to(ROOT)} imports {name}"
            for path in python_files(folder) for name in sorted(imports_of(path))
            if forbidden(path, name)]


def test_the_checker_sees_relative_and_absolute_imports(tmp_path):
    sample = ROOT / "agent" / "engine" / "apply.py"
    names = imports_of(sample)
    assert "agent.core.plan" in names and "connectors.base" in names


def test_connectors_never_import_the_engine():
    assert offenders("connectors", lambda p, name: name.split(".")[0] == "agent") == []


def test_the_core_imports_no_io_library_and_nothing_above_it():
    def forbidden(path, name):
        top = name.split(".")[0]
        if top in IO_LIBRARIES:
            return True
        if name.startswith("agent.") and not name.startswith("agent.core"):
            return True
        return name.startswith("connectors.") and not name.startswith("connectors.base")
    assert offenders("agent/core", forbidden) == []


def test_only_the_wiring_module_builds_the_scim_target():
    def forbidden(path, name):
        if not name.startswith("connectors.scim"):
            return False
        return path != ROOT / "agent" / "app.py" or name not in ("connectors.scim",
                                                                 "connectors.scim.ScimTarget")
    assert offenders("agent", forbidden) == []


@pytest.mark.parametrize("vendor", ["ldap", "okta", "entra", "files", "http"])
def test_the_engine_never_reaches_into_a_vendor_connector(vendor):
    # Sources are found through the registry (connectors/__init__.py) by [source] type; the
    # HTTP policy is built by the wiring module alone.
    allowed = {ROOT / "agent" / "app.py"} if vendor == "http" else set()
    assert offenders("agent", lambda p, name: name.startswith(f"connectors.{vendor}")
                     and p not in allowed) == []


def test_no_scim_wire_format_in_the_engine():
    speaking = [str(p.relative_to(ROOT)) for p in python_files("agent")
                if "urn:ietf:params:scim" in p.read_text(encoding="utf-8")]
    assert speaking == []
