"""The one-way architecture, kept true by walking every module's imports (ast).

Floors, lowest first; each may import only from the floors below it (and itself):

    featurestore < extractors < heads < llm < workflows < commands < cli

Also: no circle between packages, no import of another module's ``_private`` name (in
the library, the CLI and the benches), and no module over 600 lines (cli.py under 400).
Imports inside functions count as much as top-level ones: a lazy import is still an edge.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ("featurestore", "extractors", "heads", "llm", "workflows", "commands", "cli")
#: Code that reaches into the floors without being one of them: privacy rules only.
CLIENTS = ("bench",)
MAX_LINES = 600
MAX_CLI_LINES = 400


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, e.g. "extractors.pipeline"
    target: str  # imported module, e.g. "featurestore.features"
    names: tuple[str, ...]  # names taken from it (empty for `import x`)
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def python_files(root: Path, tops: tuple[str, ...]) -> list[Path]:
    files = []
    for top in tops:
        single = root / f"{top}.py"
        if single.is_file():
            files.append(single)
        folder = root / top
        if folder.is_dir():
            files.extend(p for p in sorted(folder.rglob("*.py")) if "__pycache__" not in p.parts)
    return files


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, root: Path) -> list[Edge]:
    """Every import of one of our top-level names in ``path``, wherever it appears."""
    module = module_name(path, root)
    tree = ast.parse(path.read_text(), filename=str(path))
    ours = set(FLOORS) | set(CLIENTS)
    edges = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _absolute(module, path.name == "__init__.py", node)
            if target.split(".")[0] in ours:
                edges.append(Edge(module, target, tuple(a.name for a in node.names), node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ours:
                    edges.append(Edge(module, alias.name, (), node.lineno))
    return edges


def _floor(module: str) -> int:
    return FLOORS.index(module.split(".")[0])


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def violations(root: Path) -> list[str]:
    """Every broken rule under ``root``, one line each (empty: the house is in order)."""
    problems = []
    package_edges: set[tuple[str, str]] = set()
    for path in python_files(root, FLOORS + CLIENTS):
        for edge in imports_of(path, root):
            source_top, target_top = edge.source.split(".")[0], edge.target.split(".")[0]
            where = f"{path.relative_to(root)}:{edge.line}"
            if source_top in FLOORS and target_top in FLOORS and source_top != target_top:
                package_edges.add((source_top, target_top))
                if _floor(edge.target) > _floor(edge.source):
                    problems.append(f"{where}: {edge.source} imports {edge.target}, a higher floor")
            private = [n for n in edge.names if _is_private(n)]
            if private:
                problems.append(f"{where}: {edge.source} imports private {', '.join(private)} "
                                f"from {edge.target}")
    problems.extend(_circles(package_edges))
    return problems


def _circles(edges: set[tuple[str, str]]) -> list[str]:
    """Package-level import circles (depth-first search for a back edge)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append("import circle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found


# ----------------------------------------------------------------------------- tests
def test_floors_import_only_downward_and_no_private_names():
    problems = violations(ROOT)
    assert not problems, "architecture broken:\n" + "\n".join(problems)


def test_no_module_is_too_long():
    too_long = []
    for path in python_files(ROOT, FLOORS):
        limit = MAX_CLI_LINES if path.name == "cli.py" and path.parent == ROOT else MAX_LINES
        lines = len(path.read_text().splitlines())
        if lines > limit:
            too_long.append(f"{path.relative_to(ROOT)}: {lines} lines (limit {limit})")
    assert not too_long, "split these by concern:\n" + "\n".join(too_long)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        # the storage floor reaching up to the encoders, lazily inside a function
        ({"featurestore/__init__.py": "", "extractors/__init__.py": "",
          "featurestore/similar.py": "def f():\n    from extractors import extract_file\n"},
         "featurestore.similar imports extractors, a higher floor"),
        # a relative import of another module's private helper
        ({"extractors/__init__.py": "", "extractors/pipeline.py": "def _full_spec(): pass\n",
          "extractors/ray_engine.py": "from .pipeline import _full_spec\n"},
         "extractors.ray_engine imports private _full_spec from extractors.pipeline"),
        # a bench reaching into a private name
        ({"featurestore/__init__.py": "", "bench/b.py": "from featurestore.index import _tune\n"},
         "imports private _tune"),
    ],
)
def test_checker_catches_what_it_guards(tmp_path, files, expected):
    problems = violations(_tree(tmp_path, files))
    assert any(expected in p for p in problems), problems


def test_checker_reports_package_circles():
    assert _circles({("heads", "llm"), ("llm", "heads")}) == ["import circle: heads -> llm -> heads"]
    assert _circles({("heads", "featurestore"), ("llm", "heads")}) == []


def test_checker_accepts_downward_imports(tmp_path):
    tree = _tree(tmp_path, {
        "featurestore/__init__.py": "", "heads/__init__.py": "",
        "heads/data.py": "from featurestore.store import Store\nfrom . import models\n",
        "heads/models.py": "", "cli.py": "from heads.data import Store\n",
    })
    assert violations(tree) == []
