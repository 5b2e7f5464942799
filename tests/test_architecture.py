"""The layer order of DESIGN.md holds: every module imports only from its own layer or earlier ones.

core -> solvers -> datasets -> operators -> training -> learned | meshfree -> evaluation
-> workflow | sweep -> cli. Every import statement counts, including those inside function
bodies (a deferred import is still a dependency), so a cycle cannot hide in a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sciml

PACKAGE = Path(sciml.__file__).parent

# rank of each top-level part of the package; equal ranks with different names in the same
# tuple are siblings that must not import each other (learned and meshfree; workflow and sweep
# may: a sweep is made of workflow cells)
LAYERS: list[tuple[str, ...]] = [
    ("", "errors", "config", "registry", "io", "runtime", "runs", "plots", "distributed"),  # core
    ("solvers", "testing"),
    ("datasets",),
    ("operators",),
    ("training",),
    ("learned", "meshfree"),
    ("evaluation",),
    ("workflow", "sweep"),
    ("cli", "__main__"),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
SIBLINGS_APART = {("learned", "meshfree"), ("meshfree", "learned")}


def _module(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _part(module: str) -> str:
    """The top-level part of ``sciml.x.y`` (``x``); ``""`` for ``sciml`` itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(path: Path, root: Path = PACKAGE) -> list[tuple[str, int]]:
    """``(module, line)`` of every import of a sciml module in ``path``, at any depth, in line order."""
    module = _module(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "sciml"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module:
                    found.append((target, node.lineno))
                else:  # from .. import x: x may be a submodule
                    found += [(f"{target}.{a.name}" if target.count('.') == 0 else target, node.lineno) for a in node.names]
            elif node.module and node.module.split(".")[0] == "sciml":
                if node.module == "sciml":
                    found += [(f"sciml.{a.name}", node.lineno) for a in node.names]
                else:
                    found.append((node.module, node.lineno))
    return sorted(found, key=lambda item: item[1])


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_layer():
    unknown = sorted({_part(_module(p)) for p in _modules()} - set(RANK))
    assert not unknown, f"package parts with no layer in LAYERS: {unknown}; add them where they belong"


def test_imports_only_point_to_earlier_layers():
    bad = []
    for path in _modules():
        source = _part(_module(path))
        for target, line in imports(path):
            part = _part(target)
            if part not in RANK:  # sciml.__version__ and other attributes of the package
                part = ""
            if RANK[part] > RANK[source] or (source, part) in SIBLINGS_APART:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({source or 'sciml'}) imports {target} ({part})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_the_walker_sees_imports_inside_functions(tmp_path):
    """A deferred import (the way the old cycles hid) is found and resolved like a top-level one."""
    fake = tmp_path / "sciml" / "solvers" / "fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("import numpy\nfrom ..errors import SciMLError\n\n\ndef f():\n"
                    "    from ..learned import dcdm\n    import sciml.cli.app\n    from .. import training\n")
    assert imports(fake, root=tmp_path / "sciml") == [
        ("sciml.errors", 2), ("sciml.learned", 6), ("sciml.cli.app", 7), ("sciml.training", 8)]


@pytest.mark.parametrize("package", ["solvers", "datasets", "operators"])
def test_lower_layers_import_without_the_upper_ones(package):
    """Importing a lower layer loads nothing of the layers above it (checked in a fresh process)."""
    import subprocess
    import sys

    code = (f"import sys, sciml.{package}; "
            "print(' '.join(sorted({m.split('.')[1] for m in sys.modules if m.startswith('sciml.')})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    higher = [p for p in out if p in RANK and RANK[p] > RANK[package]]
    assert not higher, f"importing sciml.{package} loaded later layers: {higher}"
