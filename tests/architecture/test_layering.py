"""Imports point one way, the API stays light, and no code unpickles uploads."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_engine_imports_nothing_from_the_service() -> None:
    for path in _files("app/unlearning"):
        bad = {
            m for m in _imports(path)
            if m.startswith(("app.", "worker", "fastapi", "sqlalchemy", "celery", "starlette"))
            and not m.startswith("app.unlearning")
        }  # fmt: skip
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_app_never_imports_the_worker() -> None:
    for path in _files("app"):
        bad = {m for m in _imports(path) if m.startswith("worker")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_api_process_does_not_load_torch() -> None:
    code = (
        "import sys; from app.main import create_app; import app.cli; create_app(); "
        "from app.unlearning import config, spec; "
        "bad = [m for m in ('torch', 'worker', 'sklearn') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    env = {"LETHE_DATA_DIR": "/tmp/lethe-layering-check", "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True)
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()


def test_no_unsafe_deserialisation() -> None:
    offenders = []
    for folder in ("app", "worker", "bench"):
        for path in _files(folder):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                owner = getattr(getattr(func, "value", None), "id", "")
                if owner == "torch" and name == "load":
                    weights_only = any(
                        k.arg == "weights_only" and getattr(k.value, "value", None) is True
                        for k in node.keywords
                    )
                    if not weights_only:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} torch.load")
                if owner in ("pickle", "dill", "cloudpickle") and name in ("load", "loads"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {owner}.{name}")
                if name == "load" and owner == "np":
                    allow = [k for k in node.keywords if k.arg == "allow_pickle"]
                    if any(getattr(k.value, "value", None) is not False for k in allow):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} np.load")
    assert not offenders, offenders
