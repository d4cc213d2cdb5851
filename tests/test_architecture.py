"""Dependencies run one way: plugins import the core, the core never imports a plugin, and the
core's modules import each other without circles (imports inside functions count: a lazy
import hides a circle, it does not break it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"eligen_bench": ROOT / "eligen_bench", "eligen_bench.generators": ROOT / "generators",
            "eligen_bench.metrics": ROOT / "metrics"}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    # eligen_bench's own folder does not hold the plugin packages
    return found


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Project modules `module` imports anywhere in its body (type-checking-only imports aside)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    names: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name in known and name != module}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _is_plugin(module: str) -> bool:
    return module.startswith(("eligen_bench.generators", "eligen_bench.metrics"))


def test_the_core_never_imports_a_plugin() -> None:
    offenders = {module: sorted(filter(_is_plugin, deps)) for module, deps in _graph().items()
                 if not _is_plugin(module) and any(map(_is_plugin, deps))}
    assert offenders == {}


def test_no_import_circles() -> None:
    graph = _graph()
    cycles = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    # A package's __init__ importing its own submodules is not a circle of behaviour.
    cycles = [c for c in cycles if not all(m.startswith(c[0]) or c[0].startswith(m) for m in c)]
    assert cycles == []


def test_argument_namespaces_stay_in_the_command_layer() -> None:
    """Executors, stages and the report take typed configuration, never argparse's namespace."""
    below = [path for folder in ("stages", "executors", "report")
             for path in (ROOT / "eligen_bench" / folder).rglob("*.py") if "argparse" in path.read_text()]
    assert below == []


def test_run_config_is_built_once_from_the_arguments() -> None:
    import dataclasses

    from eligen_bench.cli import build_parser
    from eligen_bench.config import ExecutorConfig, RunConfig

    args = build_parser().parse_args(["run", "--profile", "tiny", "--seeds", "3", "--no-progress",
                                      "--compare", "a", "--compare", "b", "--executor", "ray", "--workers", "2"])
    config = RunConfig.from_args(args)
    assert (config.profile, config.seeds, config.progress, config.compare) == ("tiny", 3, False, (Path("a"), Path("b")))
    assert config.executor == ExecutorConfig(name="ray", workers=2)
    score = RunConfig.from_args(build_parser().parse_args(["score", "--out", "r"]))
    # seeds None: 1, or the seeds the suite lists
    assert score.profile is None and score.seeds is None and score.out == Path("r")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seeds = 4  # type: ignore[misc]
