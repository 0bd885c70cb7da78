"""The code's shape against issue 21's goals, measured from the source.

  .venv/bin/python scripts/shape.py

Prints: modules over 400 lines, functions over 60 lines, launch.py and
README.md lengths, import cycles, imports that run against the layering of
../shared/DESIGN.md, and how many package modules have a test file of their
name (tests/<package path>/test_<module>.py; modules that define no function
are not counted). Exits 1 while a goal is missed.
"""

import ast
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_MODULE, MAX_FUNCTION, MAX_LAUNCH, MAX_README = 400, 60, 80, 200
# Declarative tables, allowed to run long.
TABLES = {("configs/default.py", "get_config")}
# Which layers a layer must not import (../shared/DESIGN.md).
FORBIDDEN = {
    "base": {"data", "models", "weighting", "training", "outputs", "experiments"},
    "models": {"data", "training", "outputs", "experiments"},
    "weighting": {"data", "training", "outputs", "experiments"},
    "data": {"training", "outputs", "experiments"},
    "training": {"outputs", "experiments"},
    "outputs": {"experiments"},
    "experiments": set(),
    "configs": set(),
}
EXPERIMENTS = {"cv", "sweeps", "paired", "ensemble", "rescore"}


def python_files(root):
    """Repository-relative paths of the package, configs and launch.py."""
    out = ["launch.py"]
    for top in ("mtl_ser", "configs"):
        for folder, _, files in os.walk(os.path.join(root, top)):
            out += [
                os.path.relpath(os.path.join(folder, f), root)
                for f in files
                if f.endswith(".py")
            ]
    return sorted(out)


def module_name(path):
    name = path[:-3].replace(os.sep, ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def layer(module):
    parts = module.split(".")
    if parts[0] == "configs":
        return "configs"
    if parts[0] != "mtl_ser" or len(parts) == 1:
        return "experiments"  # launch
    if parts[1] in ("tasks", "errors", "files", "layout"):
        return "base"
    if parts[1] in EXPERIMENTS or parts[1] == "experiments":
        return "experiments"
    if parts[1] in ("predict", "prediction_io"):
        return "outputs"
    return parts[1]


def imports(tree, module, is_package, known):
    """Modules of `known` that `tree` imports (anywhere, late imports too)."""
    found = set()
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from a import b`: module a.b if there is one, else a name of a.
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                for a in node.names
            ]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def measure(root=ROOT):
    """Everything the report prints, as plain data, for the checkout at root."""
    files = python_files(root)
    trees = {}
    for path in files:
        with open(os.path.join(root, path)) as f:
            text = f.read()
        trees[path] = (text, ast.parse(text))
    known = {module_name(p) for p in files}
    long_modules, long_functions, graph = [], [], {}
    for path, (text, tree) in trees.items():
        lines = text.count("\n")
        if path.startswith("mtl_ser") and lines > MAX_MODULE:
            long_modules.append((path, lines))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION and (path, node.name) not in TABLES:
                    long_functions.append((path, node.name, length))
        is_package = path.endswith("__init__.py")
        graph[module_name(path)] = imports(tree, module_name(path), is_package, known)
    upward = sorted(
        (a, b)
        for a, targets in graph.items()
        for b in targets
        if layer(b) in FORBIDDEN[layer(a)] or b == "launch"
    )
    package = [p for p in files if p.startswith("mtl_ser") and "__init__" not in p]
    # A module without a function (exception classes, a plain record) has no
    # behaviour of its own for a test to check.
    no_code = sorted(p for p in package if not _has_function(trees[p][1]))
    package = [p for p in package if p not in no_code]
    tested = [
        p
        for p in package
        if os.path.exists(
            os.path.join(
                root,
                "tests",
                os.path.dirname(os.path.relpath(p, "mtl_ser")),
                "test_" + os.path.basename(p),
            )
        )
    ]
    with open(os.path.join(root, "README.md")) as f:
        readme = f.read().count("\n")
    return {
        "long_modules": sorted(long_modules, key=lambda x: -x[1]),
        "long_functions": sorted(long_functions, key=lambda x: -x[2]),
        "launch_lines": trees["launch.py"][0].count("\n"),
        "readme_lines": readme,
        "cycles": cycles(graph),
        "upward": upward,
        "tested": (len(tested), len(package)),
        "no_code": no_code,
    }


def _has_function(tree) -> bool:
    return any(
        isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(tree)
    )


def main():
    m = measure()
    print(f"modules over {MAX_MODULE} lines: {len(m['long_modules'])}")
    for path, lines in m["long_modules"]:
        print(f"  {path}: {lines}")
    print(f"functions over {MAX_FUNCTION} lines: {len(m['long_functions'])}")
    for path, name, lines in m["long_functions"]:
        print(f"  {path}:{name}: {lines}")
    print(f"launch.py: {m['launch_lines']} lines (goal <= {MAX_LAUNCH})")
    print(f"README.md: {m['readme_lines']} lines (goal <= {MAX_README})")
    print(f"import cycles: {len(m['cycles'])}")
    for component in m["cycles"]:
        print("  " + " <-> ".join(component))
    print(f"imports against the layering: {len(m['upward'])}")
    for a, b in m["upward"]:
        print(f"  {a} -> {b}")
    done, total = m["tested"]
    print(f"package modules with a test file of their name: {done} of {total}")
    if m["no_code"]:
        print(f"  not counted, as they define no function: {', '.join(m['no_code'])}")
    met = not (
        m["long_modules"]
        or m["long_functions"]
        or m["cycles"]
        or m["upward"]
        or m["launch_lines"] > MAX_LAUNCH
        or m["readme_lines"] > MAX_README
        or done < total
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
