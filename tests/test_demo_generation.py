"""``lethe demo --generation`` end to end, as a user runs it: its own API and worker on the
embedded default, a tiny denoiser forgets class 3, the grids are saved and the certificate
verifies offline (about a minute and a half on two shared cores)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_the_generation_demo_forgets_a_class_and_saves_the_grids(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    data = tmp_path / "demo"
    res = subprocess.run(
        [sys.executable, "-m", "app.cli", "demo", "--generation", "--data-dir", str(data),
         "--port", str(_free_port())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert res.returncode == 0, (res.stdout, res.stderr)
    out = res.stdout
    assert "OK: signed by key" in out, out
    rows = dict(re.findall(r"^\| (original|new \(sfr_on\)) \| ([\d.]+) \|", out, re.M))
    assert float(rows["new (sfr_on)"]) <= float(rows["original"]) - 30, out
    for name in ("before-all", "after-all", "before-class3", "after-class3"):
        path = data / f"{name}.png"
        assert str(path.resolve()) in out
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (data / "before-class3.png").read_bytes() != (data / "after-class3.png").read_bytes()
