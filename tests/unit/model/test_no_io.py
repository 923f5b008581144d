"""model/ is a pure PyTorch library: it never imports Kafka, a database or the object store, nor the packages that do."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

MODEL = Path(__file__).resolve().parents[3] / "model"
FORBIDDEN = ("aiokafka", "faust", "kafka", "sqlalchemy", "asyncpg", "aiosqlite", "minio", "httpx",
             "agents", "events", "gateway", "infra")


def _modules() -> list[str]:
    paths = (path.relative_to(MODEL.parent).with_suffix("") for path in MODEL.rglob("*.py"))
    return sorted(".".join(p.parts[:-1] if p.name == "__init__" else p.parts) for p in paths)


def test_no_module_of_model_imports_io_or_the_service_packages():
    imported = []
    for path in MODEL.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            imported += [(path.name, name) for name in names if name.split(".")[0] in FORBIDDEN]
    assert imported == []


def test_importing_every_module_of_model_loads_none_of_them():
    # Also catches an import made indirectly, through a third-party package.
    code = (f"import importlib, json, sys\nfor name in {_modules()!r}: importlib.import_module(name)\n"
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({FORBIDDEN!r}))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=MODEL.parent)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
