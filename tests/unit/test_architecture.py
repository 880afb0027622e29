"""The layering rules, checked on the source (issue 15): services talk through Kafka and
`contracts/`, never by importing each other; `contracts/` depends on nothing of ours
but itself (the standard library and pydantic only); the shared kernel `clusterflow/`
imports no service."""
from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists())
CONTRACTS_MAY_IMPORT = {"contracts", "pydantic", "pydantic_core", "__future__"} | set(sys.stdlib_module_names)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every absolute import in a file, wherever it sits (a function
    body's lazy import counts as much as a top-level one)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_the_services_are_the_ones_the_architecture_names():
    assert SERVICES == ["clusterer", "gateway", "labeler", "preparer", "status"]


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_imports_another(service):
    wrong = [f"{_where(path, line)} imports {module}"
             for path in sorted((ROOT / "services" / service).rglob("*.py"))
             for line, module in imports(path)
             if module.split(".")[0] == "services" and module.split(".")[1:2] not in ([service], [])]
    assert not wrong, "a service imports another service; move the shared part to contracts/:\n" + "\n".join(wrong)


def test_contracts_import_only_the_standard_library_and_pydantic():
    wrong = [f"{_where(path, line)} imports {module}"
             for path in sorted((ROOT / "contracts").rglob("*.py"))
             for line, module in imports(path)
             if module.split(".")[0] not in CONTRACTS_MAY_IMPORT]
    assert not wrong, "contracts/ must stay importable by every service and client:\n" + "\n".join(wrong)


def test_the_kernel_imports_no_service():
    wrong = [f"{_where(path, line)} imports {module}"
             for path in sorted((ROOT / "clusterflow").rglob("*.py"))
             for line, module in imports(path)
             if module.split(".")[0] == "services"]
    assert not wrong, "clusterflow/ is below the services:\n" + "\n".join(wrong)


def test_the_checks_see_a_violation(tmp_path):
    """The walker finds lazy and dotted imports (otherwise the tests above prove nothing)."""
    sample = tmp_path / "x.py"
    sample.write_text("import os\n\ndef f():\n    from services.clusterer.engine import params\n"
                      "    import services.preparer.handler as h\n")
    assert list(imports(sample)) == [(1, "os"), (4, "services.clusterer.engine"), (5, "services.preparer.handler")]


# The processes' own entry points, which may read the settings from the environment:
# the services' composition roots, and the Ray job's task processes (their settings come
# from the job's env vars, services/clusterer/app.py ray_engine).
READS_SETTINGS = {"app.py", "__main__.py", "settings.py", "ray_job.py"}


def settings_reads(path: Path) -> Iterator[tuple[int, str]]:
    """(line, call) of every `get_settings()`, `Settings()` or `LabelerSettings` used as a
    factory in a file."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        target = node.func if isinstance(node, ast.Call) else node.value if isinstance(node, ast.keyword) else None
        name = getattr(target, "id", None) or getattr(target, "attr", None)
        if name in {"get_settings", "Settings", "LabelerSettings"}:
            yield node.lineno if hasattr(node, "lineno") else target.lineno, name


@pytest.mark.parametrize("service", SERVICES)
def test_below_the_composition_root_settings_are_passed_in_not_read(service):
    wrong = [f"{_where(path, line)} reads {name}"
             for path in sorted((ROOT / "services" / service).rglob("*.py")) if path.name not in READS_SETTINGS
             for line, name in settings_reads(path)]
    assert not wrong, ("handlers, pipelines and engines get what they need from app.py (e.g. the thread "
                       "count), they do not read the settings:\n" + "\n".join(wrong))


def test_the_settings_check_sees_a_read(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("from clusterflow.settings import get_settings\n\ndef f():\n    return get_settings().a\n"
                      "\n@dataclass\nclass C:\n    s: S = field(default_factory=LabelerSettings)\n")
    assert list(settings_reads(sample)) == [(4, "get_settings"), (8, "LabelerSettings")]
