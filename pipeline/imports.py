"""The code a stage runs: its module and every pipeline module that one imports, read from the
source (ast), function-level imports included, plus the data files those modules read.

configure digests these files into each stage's code manifest, its jobs' code dependency under
both tools; resume.py keys a saved training state by them. This module knows no stage.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(__file__).resolve().parent
# Files the code reads that are not Python modules, by the module that reads them.
DATA_FILES = {"pipeline.params": ["pipeline/params.schema.yaml"],
              "pipeline.report": ["pipeline/templates/report.html.j2"]}


def imported(module: str) -> set[str]:
    """pipeline.* modules imported anywhere in `module` (function-level imports too). A package
    that is only the parent of what is imported is not counted (code_deps adds parents)."""
    found = set()
    for node in ast.walk(ast.parse(source(module).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module
            if base == "pipeline" or base.startswith("pipeline."):
                for a in node.names:   # `from pipeline.x import y`: module y, or a name of module x
                    found.add(f"{base}.{a.name}" if source(f"{base}.{a.name}") else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pipeline."))
    return {m for m in found if source(m) is not None and m != module}


def source(module: str) -> Path | None:
    """The file of a pipeline module or package (None: not one, e.g. a name a module defines)."""
    rel = Path(*module.split("."))
    for cand in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


@functools.cache
def code_deps(module: str) -> tuple[str, ...]:
    """Source files of `module` and of every pipeline module it imports, transitively, plus the
    data files they read (the schema, the report template)."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(imported(m))
        parts = m.split(".")
        todo.extend(".".join(parts[:i]) for i in range(2, len(parts)))   # parent packages run first
    files = {str(source(m).relative_to(ROOT)) for m in seen if m != "pipeline"}
    files.update(f for m in seen for f in DATA_FILES.get(m, []))
    return tuple(sorted(files))


@functools.cache
def model_families() -> dict[str, str]:
    """Registry name -> the file of pipeline/models that registers it (`@register("name")`), read
    from the source: a job that builds one model depends on its family's file, not every family's."""
    found = {}
    for path in sorted((PACKAGE / "models").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            for d in getattr(node, "decorator_list", []):
                if (isinstance(d, ast.Call) and getattr(d.func, "id", None) == "register" and d.args
                        and isinstance(d.args[0], ast.Constant)):
                    found[d.args[0].value] = str(path.relative_to(ROOT))
    return found
