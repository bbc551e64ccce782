"""The import graph between objrec's packages, its cycles, and its longest functions.

    python scripts/import_graph.py                 # package -> package edges, with counts
    python scripts/import_graph.py --modules       # module -> module edges
    python scripts/import_graph.py --longest 15    # the 15 longest functions

Read from the source with `ast` (nothing is imported), so it runs without the dependencies.
Every import counts, including those inside functions. A package is a module's folder:
`trainer.train` is in `trainer`, `serving.client.cli` in `serving.client`.
"""

import argparse
import ast
import collections
import pathlib
from collections.abc import Container, Iterator

ROOT = pathlib.Path(__file__).resolve().parent.parent
PRODUCT_PACKAGES = ("objrec", "preprocessing", "trainer", "serving", "batch_predict")


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_modules() -> dict[str, pathlib.Path]:
    """Every product module by dotted name."""
    return {
        module_name(path): path
        for package in PRODUCT_PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def imported_names(tree: ast.Module, modules: Container[str]) -> Iterator[str]:
    """Dotted names a module imports: `from a import b` is `a.b` when that is a module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                yield submodule if submodule in modules else node.module


def module_graph() -> dict[str, set[str]]:
    """module -> the product modules it imports (a package's `__init__` counts as a module)."""
    modules = product_modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = {target for target in imported_names(tree, modules) if target in modules}
        graph[name] = targets - {name}
    return graph


def package_of(module: str, modules: dict[str, set[str]]) -> str:
    """The folder of a module: itself when it is a package (`__init__`), else its parent."""
    is_package = any(other.startswith(module + ".") for other in modules)
    return module if is_package else module.rpartition(".")[0] or module


def package_edges(graph: dict[str, set[str]]) -> collections.Counter:
    """(package, package) -> how many module imports cross between them."""
    edges = collections.Counter()
    for source, targets in graph.items():
        for target in targets:
            pair = (package_of(source, graph), package_of(target, graph))
            if pair[0] != pair[1]:
                edges[pair] += 1
    return edges


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or around a loop (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def longest_functions(count: int) -> list[tuple[int, str]]:
    """(lines, module:function) of the longest functions and methods, longest first."""
    sizes = []
    for name, path in product_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                sizes.append((node.end_lineno - node.lineno + 1, f"{name}:{node.name}"))
    return sorted(sizes, reverse=True)[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", action="store_true", help="module edges, not packages")
    parser.add_argument("--longest", type=int, default=0, metavar="N")
    args = parser.parse_args()
    graph = module_graph()
    if args.longest:
        for lines, where in longest_functions(args.longest):
            print(f"{lines:>4}  {where}")
        return
    if args.modules:
        for source in sorted(graph):
            for target in sorted(graph[source]):
                print(f"{source} -> {target}")
    else:
        for (source, target), count in sorted(package_edges(graph).items()):
            print(f"{source} -> {target}  ({count})")
    for group in cycles(graph):
        print("cycle: " + " <-> ".join(group))


if __name__ == "__main__":
    main()
