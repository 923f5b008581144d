"""The layers of the house (pyproject.toml, [tool.importlinter]): model and events at the bottom, then infra, then
agents and gateway side by side, then cli, then bench; no import runs up, no two modules import each other."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
LAYERS = ["model", "events", "infra", "agents", "gateway", "cli", "bench"]  # bottom up


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})


def test_every_contract_is_kept():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_the_contracts_cover_every_package_of_the_project():
    """A new top-level package outside the contracts would be outside the layers without anyone noticing."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    assert set(config["root_packages"]) == packages == set(LAYERS)


def test_an_import_that_runs_up_breaks_the_contract(tmp_path):
    """The same contracts over a copy of the tree with one upward import added (model importing the agents)."""
    for package in LAYERS:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "model" / "upward.py").write_text("import agents.app\n", encoding="utf-8")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert "model.upward -> agents.app" in result.stdout, result.stdout[-3000:]


def test_the_gateway_and_the_cli_never_load_torch():
    """Only the agents (and the model benchmarks) need PyTorch: a gateway that imported it held 660 MiB instead of
    130 MiB, and every `lfz` command would start a second slower."""
    script = ("import sys, gateway.app, gateway.__main__, cli.main; "
              "print(sorted(m for m in sys.modules if m == 'torch'))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
