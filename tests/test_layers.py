"""The package's layers, read from its source: which module may import which.

- no import cycle between modules (imports at module level, ``TYPE_CHECKING`` aside);
- a dialect (``dask_jobqueue/dialects/<name>.py``) imports the standard library and the
  package's pure modules only, never the engine, the job, the cluster or distributed;
- the engine's operations (``engine/submit.py``, ``arrays.py``, ``query.py``, ``cancel.py``)
  share only ``engine/context.py``; only the submission uses the others; the rest of the
  package uses the engine through ``dask_jobqueue.engine`` (``BatchSystem``) alone;
- the registry lists every dialect, and every batch system of the registry has one;
- no module outside a scheduler's own place (its dialect, its public module, the registry)
  names its commands;
- job-script headers are directive tables: one function renders them and is the only code
  that reads ``job_directives_skip`` and ``job_extra_directives``; no module writes a header
  method of its own.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from dask_jobqueue import registry

PACKAGE = Path(__file__).parent.parent / "dask_jobqueue"
#: What a dialect may import from the package.
DIALECT_MAY_IMPORT = {
    "dask_jobqueue._shell",
    "dask_jobqueue._values",
    "dask_jobqueue.dialect",
    "dask_jobqueue.tags",
    "dask_jobqueue.tracker",
    "dask_jobqueue.tracking",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> set[str]:
    """Modules ``path`` imports when it is imported (not under ``if TYPE_CHECKING``, not
    inside functions)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        nodes = ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]
        for item in nodes:
            if isinstance(item, ast.Import):
                found.update(alias.name for alias in item.names)
            elif isinstance(item, ast.ImportFrom):
                if item.level:
                    base = package.split(".")[: len(package.split(".")) - (item.level - 1)]
                    target = ".".join(base + ([item.module] if item.module else []))
                else:
                    target = item.module or ""
                if item.module is None:
                    found.update(f"{target}.{alias.name}" for alias in item.names)
                else:
                    found.add(target)
    return found


GRAPH = {_module_name(p): _top_level_imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph.get(node, ()):
            if dep not in graph:
                continue
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


DIALECTS = sorted(m for m in GRAPH if m.startswith("dask_jobqueue.dialects."))


@pytest.mark.parametrize("module", DIALECTS)
def test_a_dialect_imports_only_the_pure_modules(module):
    ours = {m for m in GRAPH[module] if m.split(".")[0] == "dask_jobqueue"}
    other_dialects = {m for m in ours if m.startswith("dask_jobqueue.dialects.")}
    assert ours - other_dialects <= DIALECT_MAY_IMPORT
    foreign = {m.split(".")[0] for m in GRAPH[module]} - {"dask_jobqueue", "__future__"}
    assert foreign <= set(sys.stdlib_module_names), foreign


PURE = DIALECT_MAY_IMPORT
#: What each module of the engine may import from the package (besides the pure modules).
ENGINE_MAY_IMPORT = {
    "dask_jobqueue.engine.context": set(),
    "dask_jobqueue.engine.arrays": {"dask_jobqueue.engine.context"},
    "dask_jobqueue.engine.query": {"dask_jobqueue.engine.context"},
    "dask_jobqueue.engine.cancel": {"dask_jobqueue.engine.context"},
    "dask_jobqueue.engine.submit": {
        "dask_jobqueue.engine.context",
        "dask_jobqueue.engine.arrays",
        "dask_jobqueue.engine.query",
        "dask_jobqueue.engine.cancel",
    },
    "dask_jobqueue.engine.system": {
        "dask_jobqueue.engine.context",
        "dask_jobqueue.engine.arrays",
        "dask_jobqueue.engine.query",
        "dask_jobqueue.engine.cancel",
        "dask_jobqueue.engine.submit",
    },
}


def test_the_engine_modules_are_the_listed_ones():
    engine = {m for m in GRAPH if m.startswith("dask_jobqueue.engine.")}
    assert engine == set(ENGINE_MAY_IMPORT)


@pytest.mark.parametrize("module", sorted(ENGINE_MAY_IMPORT))
def test_an_engine_operation_imports_the_context_and_pure_modules_only(module):
    ours = {m for m in GRAPH[module] if m.split(".")[0] == "dask_jobqueue"}
    assert ours - PURE <= ENGINE_MAY_IMPORT[module], ours - PURE - ENGINE_MAY_IMPORT[module]


def test_the_rest_of_the_package_uses_the_engine_through_its_facade():
    inside = set(ENGINE_MAY_IMPORT) | {"dask_jobqueue.engine"}
    reaching_in = {
        module: sorted(dep for dep in deps if dep in ENGINE_MAY_IMPORT)
        for module, deps in GRAPH.items()
        if module not in inside and deps & set(ENGINE_MAY_IMPORT)
    }
    assert reaching_in == {}


def test_the_registry_and_the_dialects_are_the_same_list():
    batch = {s.name for s in registry.BATCH_SCHEDULERS}
    assert {m.rsplit(".", 1)[1] for m in DIALECTS} == batch
    for scheduler in registry.BATCH_SCHEDULERS:
        job_cls = scheduler.job_class()
        assert job_cls.dialect is not None and job_cls.dialect.name == scheduler.name
        assert job_cls.dialect.submit_command == job_cls.submit_command


def _string_constants(path: Path) -> set[str]:
    return {
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


@pytest.mark.parametrize("scheduler", registry.BATCH_SCHEDULERS, ids=lambda s: s.name)
def test_no_other_module_names_a_schedulers_commands(scheduler):
    dialect = scheduler.job_class().dialect
    commands = {dialect.submit_command, dialect.cancel_command}
    # its own place, and that of a scheduler with a command of the same name (PBS and
    # Grid Engine both submit with qsub) or of which it is a flavour (Moab of PBS)
    sharing = [
        other
        for other in registry.BATCH_SCHEDULERS
        if other is scheduler
        or commands
        & {other.job_class().dialect.submit_command, other.job_class().dialect.cancel_command}
        or (scheduler.name, other.name) == ("moab", "pbs")
    ]
    own = {PACKAGE / "registry.py"}
    for other in sharing:
        own |= {
            PACKAGE / "dialects" / f"{other.name}.py",
            PACKAGE / f"{other.module.rsplit('.', 1)[1]}.py",
        }
    elsewhere = {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path not in own and commands & _string_constants(path)
    }
    assert elsewhere == set()


def _attribute_reads(path: Path, names: set[str]) -> set[str]:
    return {
        node.attr
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr in names
    }


def _functions(path: Path) -> set[str]:
    return {
        node.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }


def test_one_function_renders_every_header():
    header_options = {"job_directives_skip", "job_extra_directives"}
    readers = {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if _attribute_reads(path, header_options)
    }
    assert readers == {"dialect.py"}
    # the old per-scheduler header code, by name, anywhere but in the renderer's caller
    writers = {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if _functions(path) & {"header_directives", "header_items", "generated_job_header"}
    }
    assert writers == {"job.py"}


@pytest.mark.parametrize("scheduler", registry.BATCH_SCHEDULERS, ids=lambda s: s.name)
def test_every_batch_system_declares_a_header_table(scheduler):
    job_cls = scheduler.job_class()
    assert job_cls.dialect is not None and job_cls.dialect.header_table.directives
    assert job_cls.header_table is job_cls.dialect.header_table
