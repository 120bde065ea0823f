"""The documentation site builds with warnings as errors (`make docs`; CI runs this test)."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def cli_options() -> dict[str, set[str]]:
    """Every command of the CLI with its option names."""
    import typer

    from lfpdistill.cli import app

    group = typer.main.get_command(app)
    return {name: {o for p in c.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
            for name, c in group.commands.items()}


def shown_commands(path: Path) -> list[tuple[str, list[str]]]:
    """(page line, tokens) of every `lfpdistill ...` call in the page's bash blocks."""
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", path.read_text(), flags=re.DOTALL | re.MULTILINE):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if "lfpdistill " not in line or line.startswith("#"):
                continue
            try:
                tokens = shlex.split(line)
            except ValueError:
                tokens = line.split()
            while tokens and tokens[0] != "lfpdistill":
                tokens.pop(0)
            if tokens:
                out.append((line, tokens))
    return out


def test_every_command_and_option_the_docs_show_exists():
    opts = cli_options()
    seen = 0
    for page in PAGES:
        for line, tokens in shown_commands(page):
            assert len(tokens) > 1 and tokens[1] in opts, f"{page.name}: no command in `{line}`"
            for tok in tokens[2:]:
                if tok.startswith("--"):
                    assert tok.split("=")[0] in opts[tokens[1]], (
                        f"{page.name}: `lfpdistill {tokens[1]}` has no option {tok} (`{line}`)")
            seen += 1
    assert seen > 30


def test_readme_command_table_lists_every_command():
    table = re.findall(r"^\| `([a-z-]+)`(?:, `([a-z-]+)`)? \|", (ROOT / "README.md").read_text(),
                       flags=re.MULTILINE)
    listed = {c for row in table for c in row if c}
    commands = set(cli_options())
    assert listed == commands, (f"README's command table misses {commands - listed}, "
                                f"lists unknown {listed - commands}")


def test_every_docs_page_is_in_the_nav():
    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = {next(iter(item.values())) for item in cfg["nav"]}
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert pages == nav, f"pages not in mkdocs.yml's nav: {pages - nav}; nav without page: {nav - pages}"


@pytest.mark.slow
def test_mkdocs_build_is_strict_and_clean(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed: pip install -e '.[docs]' (the dev extra has it)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                          str(tmp_path / "site"), "--config-file", str(ROOT / "mkdocs.yml")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = res.stdout + res.stderr
    assert res.returncode == 0, f"mkdocs build --strict failed:\n{log[-4000:]}"
    assert not re.search(r"^WARNING", log, flags=re.MULTILINE), log[-4000:]
    site = tmp_path / "site"
    for page in ("index.html", "own_recordings/index.html", "studies/index.html",
                 "realtime/index.html", "api/index.html"):
        assert (site / page).is_file(), page
    api = (site / "api" / "index.html").read_text()
    # the reference is generated from the docstrings, not written by hand
    assert 'id="lfpdistill.data.open_store"' in api and 'id="lfpdistill.models.load_model"' in api
