"""The package's shape: no import cycle, every module imports in a fresh interpreter, the config
module stays free of torch, and the README's layout lists every top-level module."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "lfpdistill"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """lfpdistill modules that ``name`` imports anywhere in its file (also inside functions)."""
    is_pkg = path.name == "__init__.py"
    pkg = name if is_pkg else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            # a module's own packages are already being imported when it runs ('from . import x')
            if t in known and t != name and not name.startswith(t + "."):
                found.add(t)
                # importing a.b.c runs a and a.b first, unless they contain the importer
                parts = t.split(".")
                for i in range(1, len(parts)):
                    parent = ".".join(parts[:i])
                    if parent in known and not name.startswith(parent + ".") and parent != name:
                        found.add(parent)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {n: _imports(n, p, set(mods)) for n, p in mods.items()}


def _topological(graph: dict[str, set[str]]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, stack: list[str]) -> None:
        if state.get(n) == 2:
            return
        assert state.get(n) != 1, "import cycle: " + " -> ".join(stack[stack.index(n):] + [n])
        state[n] = 1
        for m in sorted(graph[n]):
            visit(m, stack + [n])
        state[n] = 2
        order.append(n)

    for n in sorted(graph):
        visit(n, [])
    return order


def test_no_import_cycle():
    order = _topological(_graph())
    assert order.index("lfpdistill.config") < order.index("lfpdistill.models")
    assert order.index("lfpdistill.evaluation.metrics") < order.index("lfpdistill.evaluation.decoders")


def test_known_cycle_is_detected():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    try:
        _topological(graph)
    except AssertionError as e:
        assert "a -> b -> c -> a" in str(e)
    else:
        raise AssertionError("the cycle a -> b -> c -> a was not found")


def test_every_module_imports_in_a_fresh_interpreter_in_dependency_order():
    order = _topological(_graph())
    code = f"import importlib\nfor m in {order!r}:\n    importlib.import_module(m)\n"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]


def test_config_imports_neither_torch_nor_lightning():
    code = ("import sys, lfpdistill.config\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning'))\n"
            "print(','.join(bad))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "", f"lfpdistill.config pulled in: {res.stdout.strip()[:200]}"


def test_commands_that_train_nothing_load_no_lightning():
    """embed, probe, classic, export and decode start without Lightning (about 5 s of imports
    on a 2-core CPU); the training functions still load on first use."""
    code = ("import sys\n"
            "import lfpdistill.cli.evaluate, lfpdistill.commands.evaluate, lfpdistill.commands.realtime\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'lightning')\n"
            "import lfpdistill.commands as c\n"
            "assert c.distill_run.__module__ == 'lfpdistill.commands.distill'\n"
            "assert c.probe_run.__module__ == 'lfpdistill.commands.evaluate'\n"
            "assert not hasattr(c, 'no_such_run')\n"
            "print(len(loaded), 'lightning' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["0", "True"]


def _top_level() -> set[str]:
    names = {p.name for p in PKG.glob("*.py") if p.name != "__init__.py"}
    names |= {p.name + "/" for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    return names


def test_readme_layout_lists_every_top_level_module():
    """The layout section of the getting-started page (the README links to it)."""
    readme = (ROOT / "docs" / "getting_started.md").read_text()
    layout = readme[readme.index("## Layout"):]
    block = layout[layout.index("```"):layout.index("```", layout.index("```") + 3)]
    listed = set(re.findall(r"^  (\S+)", block, flags=re.M))
    missing = sorted(_top_level() - listed)
    assert not missing, f"add {', '.join(missing)} to docs/getting_started.md's layout section"
    stale = sorted(n for n in listed if n.endswith((".py", "/")) and n not in _top_level())
    assert not stale, f"docs/getting_started.md's layout lists {', '.join(stale)}, which no longer exist"


def test_design_doc_maps_every_top_level_module():
    design = (ROOT / "docs" / "design.md").read_text()
    missing = sorted(n for n in _top_level() - {"__main__.py"} if f"`{n}`" not in design)
    assert not missing, f"docs/design.md's package map does not mention {', '.join(missing)}"


def test_every_named_project_document_is_in_the_repository():
    """Upper-case document names (README.md, ...) in code, tests and docs must name a file of
    this repository: nothing may send the reader to a design note kept elsewhere."""
    named: dict[str, list[str]] = {}
    files = [ROOT / "README.md"] + [p for d in ("src", "docs", "tests", "benchmarks")
                                    for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".md")]
    for p in files:
        for name in re.findall(r"\b([A-Z][A-Z_]+\.md)\b", p.read_text()):
            named.setdefault(name, []).append(str(p.relative_to(ROOT)))
    missing = {n: where for n, where in named.items()
               if not ((ROOT / n).exists() or (ROOT / "docs" / n).exists())}
    assert not missing, f"documents named but not in the repository: {missing}"
