"""Every import in src/microtrain (function-level ones too) points down the layer order, so no folder-level
cycle can hide behind an import placed inside a function. docs/architecture.md explains the layers."""
from __future__ import annotations

import ast
from pathlib import Path

import microtrain

SRC = Path(microtrain.__file__).parent

# Low to high. A module may import a module of a lower layer, or of its own group; nothing else.
LAYERS = [
    {"base": ["microtrain", "microtrain.errors", "microtrain.budget", "microtrain.labels", "microtrain.progress",
              "microtrain.persist", "microtrain.cache"]},
    {"ir data": ["microtrain.ir.program", "microtrain.ir.training"],
     "int8 arithmetic": ["microtrain.quant.arith", "microtrain.quant.qas", "microtrain.quant.update",
                         "microtrain.quant"]},
    {"ops": ["microtrain.ops"]},
    {"graph": ["microtrain.ir"]},
    {"schemes": ["microtrain.sparse"],
     "graph transforms": ["microtrain.quant.dequantize", "microtrain.quant.head"],
     "step kinds": ["microtrain.steps"],
     "arena": ["microtrain.arena"], "patching": ["microtrain.patching"]},
    {"autodiff": ["microtrain.autodiff"]},
    {"passes": ["microtrain.passes"]},
    {"runtime": ["microtrain.runtime"], "codegen": ["microtrain.codegen"]},
    {"ptq": ["microtrain.quant.ptq"], "frontends": ["microtrain.frontends"], "reference": ["microtrain.reference"],
     "scheme search": ["microtrain.scheme_search"], "targets": ["microtrain.targets"]},
    {"models": ["microtrain.models"], "cli checks": ["microtrain.cli_checks"]},
    {"demo": ["microtrain.demo"], "fleet": ["microtrain.fleet"]},
    {"commands": ["microtrain.commands", "microtrain.cli"]},
]


def place(module: str) -> tuple[int, str]:
    """(layer, group) of a module: its longest listed prefix ("microtrain" itself only exactly)."""
    best = None
    for layer, groups in enumerate(LAYERS):
        for group, prefixes in groups.items():
            for p in prefixes:
                hit = module == p or (p != "microtrain" and module.startswith(p + "."))
                if hit and (best is None or len(p) > best[0]):
                    best = (len(p), layer, group)
    assert best is not None, f"module {module} is in no layer: add it to LAYERS"
    return best[1], best[2]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path):
    """(target module, line, inside a function) of every microtrain import in a file."""
    mod = module_name(path)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for t in names:
            if t == "microtrain" or t.startswith("microtrain."):
                yield resolve(t), node.lineno, node.col_offset > 0


def resolve(target: str) -> str:
    """`from . import __version__` names an attribute, not a module: keep the longest module prefix."""
    parts = target.split(".")
    while len(parts) > 1:
        p = SRC.parent.joinpath(*parts)
        if p.with_suffix(".py").exists() or (p / "__init__.py").exists():
            break
        parts.pop()
    return ".".join(parts)


def violations():
    out = []
    for path in sorted(SRC.rglob("*.py")):
        mod = module_name(path)
        layer, group = place(mod)
        for target, line, nested in imports(path):
            t_layer, t_group = place(target)
            if t_layer < layer or t_group == group:
                continue
            where = "inside a function" if nested else "at module level"
            out.append(f"{path.relative_to(SRC.parent)}:{line}: {mod} ({group}) imports {target} ({t_group}) {where}")
    return out


def test_every_import_points_down_the_layers():
    assert violations() == []


def test_the_check_sees_function_level_imports(tmp_path, monkeypatch):
    """A nested upward import (the kind that used to hide a cycle) is reported."""
    pkg = tmp_path / "microtrain"
    (pkg / "ops").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "ops" / "__init__.py").write_text("")
    (pkg / "ops" / "toy.py").write_text("def f():\n    from ..codegen import compile_model\n")
    (pkg / "codegen").mkdir()
    (pkg / "codegen" / "__init__.py").write_text("from ..ops import toy\n")
    monkeypatch.setattr(__import__(__name__), "SRC", pkg)
    found = violations()
    assert len(found) == 1 and "microtrain.ops.toy (ops) imports microtrain.codegen (codegen) inside a function" in found[0]


def test_every_module_has_a_layer():
    for path in SRC.rglob("*.py"):
        place(module_name(path))
