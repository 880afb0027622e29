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


GATEWAY_ROUTES = sorted([*(ROOT / "services" / "gateway" / "routes").rglob("*.py"),
                         *(ROOT / "services" / "gateway" / "web").rglob("*.py")])
ROUTES_MAY_NOT_IMPORT = ("sqlalchemy", "clusterflow.db", "clusterflow.layouts")


def route_sql(paths: list[Path]) -> list[str]:
    """Where route modules import a SQL toolkit, a table or a SQL helper, or take the
    repository's engine to run a query themselves."""
    wrong = [f"{path.name}:{line} imports {module}"
             for path in paths
             for line, module in imports(path)
             if any(module == m or module.startswith(m + ".") for m in ROUTES_MAY_NOT_IMPORT)]
    return wrong + [f"{path.name}:{node.lineno} uses {ast.unparse(node)}"
                    for path in paths
                    for node in ast.walk(ast.parse(path.read_text(), str(path)))
                    if isinstance(node, ast.Attribute) and node.attr == "engine"]


def test_the_gateway_routes_build_no_sql():
    """Queries live in services/gateway/repository.py as named methods; routes call them."""
    assert len(GATEWAY_ROUTES) >= 5, "the route modules moved: point this test at them"
    wrong = route_sql(GATEWAY_ROUTES)
    assert not wrong, "move the query into GatewayRepository and call it by name:\n" + "\n".join(wrong)


def test_the_route_check_sees_a_query_in_a_route(tmp_path):
    route = tmp_path / "bad.py"
    route.write_text("from sqlalchemy import select\nfrom clusterflow.db.schema import tasks\n"
                     "async def f(gw):\n    async with gw.repo.engine.connect():\n        pass\n")
    assert route_sql([route]) == ["bad.py:1 imports sqlalchemy", "bad.py:2 imports clusterflow.db.schema",
                                  "bad.py:4 uses gw.repo.engine"]


# The ObjectStore port's methods (clusterflow/storage.py) and the helpers that call
# them: blocking S3 round trips, never made on the event loop.
STORE_METHODS = {"put_parquet", "get_parquet", "exists", "delete_prefix", "download", "upload", "ends",
                 "presigned_url", "put_bytes", "get_bytes", "ensure_bucket"}
STORE_HELPERS = {"load_manifest", "put_json", "get_json"}


def _own_calls(fn: ast.AsyncFunctionDef) -> Iterator[ast.Call]:
    """The calls in an async function's own body (not in functions defined inside it)."""
    todo = list(fn.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Call):
            yield node
        todo.extend(ast.iter_child_nodes(node))


def blocking_store_calls(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        for fn in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(fn, ast.AsyncFunctionDef):
                continue
            for call in _own_calls(fn):
                if (isinstance(call.func, ast.Attribute) and call.func.attr in STORE_METHODS) or \
                        (isinstance(call.func, ast.Name) and call.func.id in STORE_HELPERS):
                    found.append(f"{path.name}:{call.lineno} {fn.name} calls {ast.unparse(call.func)}")
    return found


def test_no_async_function_calls_s3_on_the_event_loop():
    """Object store calls from `async def` go through asyncio.to_thread or
    run_in_threadpool (passed as a function, not called); tests/fakes'
    OffLoopObjectStore checks the same at run time."""
    wrong = blocking_store_calls(sorted((ROOT / "services").rglob("*.py")))
    assert not wrong, "run these in a thread (asyncio.to_thread / run_in_threadpool):\n" + "\n".join(wrong)


def test_the_blocking_call_check_sees_one(tmp_path):
    code = tmp_path / "bad.py"
    code.write_text("import asyncio\nasync def f(gw):\n    def inner():\n        return gw.store.exists('k')\n"
                    "    await asyncio.to_thread(gw.store.get_parquet, 'k')\n    await asyncio.to_thread(inner)\n"
                    "    return gw.store.delete_prefix('p/')\n")
    assert blocking_store_calls([code]) == ["bad.py:7 f calls gw.store.delete_prefix"]


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
