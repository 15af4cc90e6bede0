"""What the Docker images and the compose stack promise, checked from their files (no Docker
engine runs on these machines; `.ci/run` also validates the compose file with docker-compose).

The one behavioural check runs the code the way the images do: from a copied source tree on
PYTHONPATH, not from an installed package, and migrates a database with it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, inspect

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [a for i, a in self.instructions if i == instruction]


def dockerfile_stages() -> dict[str, Stage]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            base, _, name = rest.partition(" AS ")
            current = stages[name.strip()] = Stage(name.strip(), base.strip())
        elif current is not None:
            current.instructions.append((instruction, rest.strip()))
    return stages


def lineage(stages: dict[str, Stage], name: str) -> list[Stage]:
    chain = [stages[name]]
    while chain[-1].base in stages:
        chain.append(stages[chain[-1].base])
    return chain


def test_two_targets_non_root_with_healthchecks_and_no_torch_in_the_api() -> None:
    stages = dockerfile_stages()
    for target in ("api", "worker"):
        chain = lineage(stages, target)
        users = [u for s in chain for u in s.args("USER")]
        assert users and users[0] not in ("root", "0"), f"{target} runs as root"
        assert stages[target].args("HEALTHCHECK"), f"{target} has no healthcheck"
        assert stages[target].args("CMD")
    # Multi-stage: the runtime images copy a prepared venv from a builder stage.
    api_from = [a for a in stages["api"].args("COPY") if "/opt/venv" in a]
    worker_from = [a for a in stages["worker"].args("COPY") if "/opt/venv" in a]
    assert api_from == ["--from=deps-api /opt/venv /opt/venv"]
    assert worker_from == ["--from=deps-worker /opt/venv /opt/venv"]
    api_installs = " ".join(r for s in lineage(stages, "deps-api") for r in s.args("RUN"))
    assert "[worker]" not in api_installs and "torch" not in api_installs
    assert '".[worker]"' in " ".join(stages["deps-worker"].args("RUN"))


def test_build_context_leaves_out_secrets_and_local_state() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for pattern in (".git", ".venv", ".env", "*.pem", ".lethe"):
        assert pattern in ignored


def test_compose_stack() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"postgres", "redis", "migrate", "api", "worker-gpu", "worker-cpu"}
    assert "--appendonly" in services["redis"]["command"]  # queued messages survive a restart
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"] and services[name]["volumes"]
    # The owner migrates and grants; everything else connects as the application role.
    migrate = services["migrate"]
    assert migrate["command"][-1].startswith("lethe db upgrade && lethe audit grant-app-role")
    assert migrate["environment"]["LETHE_DATABASE_URL"].startswith("postgresql+psycopg://lethe:")
    for name in ("api", "worker-gpu", "worker-cpu"):
        url = services[name]["environment"]["LETHE_DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://lethe_app:")
    assert services["worker-cpu"]["profiles"] == ["cpu"]
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    # The shared volume unless .env names a bucket (LETHE_ARTIFACT_URI=s3://...).
    artifact_uri = services["api"]["environment"]["LETHE_ARTIFACT_URI"]
    assert artifact_uri.startswith("${LETHE_ARTIFACT_URI:-file://")
    artifact_dir = artifact_uri.removeprefix("${LETHE_ARTIFACT_URI:-file://").removesuffix("}")
    for name in ("api", "worker-gpu", "worker-cpu"):
        svc = services[name]
        assert svc["build"]["target"] == ("api" if name == "api" else "worker")
        assert f"artifacts:{artifact_dir}" in svc["volumes"]  # one shared artifact store
        assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name in ("worker-gpu", "worker-cpu"):
        env = services[name]["environment"]
        assert services[name]["secrets"] == ["signing_key"]
        assert env["LETHE_SIGNING_KEY_PATH"] == "/run/secrets/signing_key"
        assert env["LETHE_WORKER_QUEUE"] == name.removeprefix("worker-")
    # Every variable the stack reads is documented in .env.example.
    used = set(re.findall(r"\$\{(\w+)", (ROOT / "docker-compose.yml").read_text()))
    documented = set(re.findall(r"^(\w+)=", (ROOT / ".env.example").read_text(), re.M))
    assert used <= documented, used - documented


def test_code_runs_and_migrates_from_a_source_tree_as_in_the_images(tmp_path: Path) -> None:
    tree = tmp_path / "srv"
    tree.mkdir()
    for part in ("app", "worker", "migrations"):
        shutil.copytree(ROOT / part, tree / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "alembic.ini", tree)
    db = tmp_path / "image.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env.update(PYTHONPATH=str(tree), LETHE_DATABASE_URL=f"sqlite:///{db}")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    run = subprocess.run(
        [sys.executable, "-c", "import app, sys; print(app.__file__); "
         "from app.cli import main; sys.exit(main(['db', 'upgrade']))"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(str(tree))  # the copied tree, not this checkout
    tables = set(inspect(create_engine(f"sqlite:///{db}")).get_table_names())
    assert {"jobs", "model_versions", "audit_events", "alembic_version"} <= tables


def test_every_setting_is_documented_and_reaches_the_containers() -> None:
    from app.core.config import Settings

    variables = {f"LETHE_{name.upper()}" for name in Settings.model_fields}
    documented = set(re.findall(r"^(\w+)=", (ROOT / ".env.example").read_text(), re.M))
    assert variables <= documented, variables - documented
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    passed = set(compose["x-lethe-env"])
    # The migrate service migrates; workers get the signing key path next to their secret.
    assert variables - passed == {"LETHE_AUTO_MIGRATE", "LETHE_SIGNING_KEY_PATH"}


def test_an_empty_variable_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """`${VAR:-}` in compose hands the container an empty string for every unset tunable."""
    from app.core.config import Settings

    monkeypatch.setenv("LETHE_TORCH_THREADS", "")
    monkeypatch.setenv("LETHE_AUTH_CACHE_SECONDS", "")
    settings = Settings()
    assert settings.torch_threads is None and settings.auth_cache_seconds == 2


def test_a_compose_env_file_does_not_reconfigure_local_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cp .env.example .env` for compose must not turn `lethe demo` into production mode."""
    from app.core.config import Mode, get_settings

    (tmp_path / ".env").write_text(
        "LETHE_ENVIRONMENT=production\nLETHE_SECRET_KEY=s3cret-for-test\nLETHE_JOB_QUEUE=gpu\n"
    )
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("LETHE_")]:
        monkeypatch.delenv(var)
    get_settings.cache_clear()
    try:
        settings = get_settings()
        assert settings.mode is Mode.embedded and settings.job_queue == "cpu"
        monkeypatch.setenv("LETHE_ENV_FILE", str(tmp_path / ".env"))
        get_settings.cache_clear()
        assert get_settings().job_queue == "gpu"  # only when asked for
    finally:
        get_settings.cache_clear()
