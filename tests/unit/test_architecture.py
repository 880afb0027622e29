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


# What the client may import: the standard library, its own pinned dependencies
# (pyproject's `dependencies`, what `pip install clusterflow` brings) and contracts/.
CLIENT_MAY_IMPORT = {"contracts", "clusterflow", "pydantic", "pydantic_core", "polars", "pyarrow", "httpx", "typer",
                     "rich", "__future__"} | set(sys.stdlib_module_names)
# The client's few ways into the server side, each inside the function that needs it
# (so the rest of the CLI works without the `server` extra): `up`/`down`, and the demo's
# own services and scoring when it is not given a running gateway.
CLIENT_LAZY_SERVER_IMPORTS = {("cli.py", "clusterflow"), ("demo.py", "clusterflow.stack"),
                              ("demo.py", "sklearn.cluster"), ("demo.py", "sklearn.metrics")}


def _module_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_client_imports_nothing_of_the_server():
    client = ROOT / "clusterflow" / "client"
    wrong = []
    for path in sorted(client.rglob("*.py")):
        top = _module_level_imports(path)
        for line, module in imports(path):
            lazy = (path.name, module) in CLIENT_LAZY_SERVER_IMPORTS and module not in top
            ours = module.split(".")[0] != "clusterflow" or module.startswith("clusterflow.client")
            if not lazy and (module.split(".")[0] not in CLIENT_MAY_IMPORT or not ours):
                wrong.append(f"{_where(path, line)} imports {module}")
    assert not wrong, ("clusterflow/client/ is installed without the server (pyproject's `dependencies`):\n"
                       + "\n".join(wrong))


def test_the_clients_dependencies_are_what_it_may_import():
    import tomllib

    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {p.split("==")[0].split("[")[0] for p in pins}
    assert names == {"pydantic", "polars", "pyarrow", "httpx", "typer", "rich"}
    assert names <= CLIENT_MAY_IMPORT
