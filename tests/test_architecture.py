"""The module map of docs/architecture.md holds: who may import whom, module size, one-line roles.

Static reads of the source tree (milliseconds), plus one subprocess that imports the sweeper package
the way Hydra's plugin scan does and checks nothing heavy comes with it.
"""
from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from conftest import ROOT

CORE = ROOT / "mfexp"
PLUGINS = ROOT / "plugins"
SWEEPER = PLUGINS / "hydra_plugins" / "mfexp_sweeper"
MAX_LINES = 350


def _modules(*folders):
    return sorted(p for folder in folders for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_the_core_never_imports_a_plugin():
    bad = {str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.split(".")[0] in ("mfexp_plugins", "hydra_plugins"))
           for p in _modules(CORE)}
    assert not {k: v for k, v in bad.items() if v}


def test_the_sweeper_never_imports_the_report():
    bad = {str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m == "mfexp.report" or m.startswith("mfexp.report."))
           for p in _modules(SWEEPER)}
    assert not {k: v for k, v in bad.items() if v}
    assert not (CORE / "sweep_run.py").exists()


def test_no_module_is_over_the_size_limit():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in _modules(CORE, PLUGINS)}
    assert not {k: n for k, n in sizes.items() if n > MAX_LINES}


@pytest.mark.parametrize("path", _modules(CORE, PLUGINS), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_opens_with_its_role(path):
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert doc and doc.splitlines()[0].strip(), f"{path.relative_to(ROOT)} has no docstring"


def test_the_plugin_scan_imports_nothing_heavy():
    """Hydra imports every module under ``hydra_plugins`` with every app start (even ``--help``)."""
    code = ("import sys, pkgutil, importlib\n"
            f"for m in pkgutil.walk_packages([{str(PLUGINS / 'hydra_plugins')!r}], 'hydra_plugins.'):\n"
            "    importlib.import_module(m.name)\n"
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mlflow', 'matplotlib', 'timm'))))\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('mfexp'))))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    heavy, ours = p.stdout.splitlines()
    assert heavy == ""
    assert ours.split() == ["mfexp", "mfexp.errors", "mfexp.keys", "mfexp_plugins", "mfexp_plugins.gan",
                            "mfexp_plugins.gan.settings"]
