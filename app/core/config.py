"""Typed settings, read from ``LETHE_*`` environment variables (and the file named by
``LETHE_ENV_FILE``, if any).

The defaults are the *embedded* mode: one data directory holding a SQLite database, the artifact
folder and the broker's spool, so nothing needs to be installed or started. Setting both
``LETHE_DATABASE_URL`` (PostgreSQL) and ``LETHE_REDIS_URL`` switches to the *production* mode.
"""

from __future__ import annotations

import functools
import os
from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Secrets that ship in docs and examples; a deployment that still uses one is misconfigured.
PLACEHOLDER_SECRETS = frozenset({"", "changethis", "change-me", "changeme", "secret", "lethe-dev"})


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class Mode(StrEnum):
    embedded = "embedded"
    production = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LETHE_",
        # No implicit ./.env: the one docker compose reads (production values, a GPU queue) would
        # otherwise silently reconfigure `lethe demo` and the tests run from the same folder.
        env_file=None,
        env_file_encoding="utf-8",
        extra="ignore",
        # An empty variable (`LETHE_TORCH_THREADS=` in .env, or `${VAR:-}` in compose) means
        # "use the default", not "parse an empty string".
        env_ignore_empty=True,
    )

    environment: Environment = Environment.development
    data_dir: Path = Field(default=Path(".lethe"), description="Root of embedded-mode state.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default is a SQLite file in data_dir."
    )
    redis_url: str | None = Field(
        default=None, description="Celery broker; default is a filesystem spool in data_dir."
    )
    artifact_uri: str | None = Field(
        default=None,
        description="Artifact store URI (file://... or s3://bucket/prefix); default"
        " data_dir/artifacts.",
    )
    # The S3 backend (LETHE_ARTIFACT_URI=s3://bucket/prefix). Unset credentials fall back to
    # boto3's own chain (AWS_* variables, a shared profile, an instance role).
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint (a self-hosted server's URL); default AWS for the region.",
    )
    s3_region: str | None = Field(
        default=None, max_length=64, description="S3 region; default boto3's own choice."
    )
    s3_access_key_id: SecretStr | None = Field(default=None, description="S3 access key ID.")
    s3_secret_access_key: SecretStr | None = Field(default=None, description="S3 secret key.")
    s3_path_style: bool = Field(
        default=False,
        description="Address buckets as endpoint/bucket/key (most self-hosted servers need it)"
        " instead of bucket.endpoint/key.",
    )
    s3_part_size_bytes: int = Field(
        default=8 * 1024**2,
        ge=5 * 1024**2,
        le=512 * 1024**2,
        description="Multipart upload part: the upload bytes an S3 writer holds in memory.",
    )
    s3_presigned_downloads: bool = Field(
        default=False,
        description="Downloads answer 307 to a short-lived presigned S3 URL instead of passing"
        " the bytes through the API (the digest headers stay on the redirect).",
    )
    s3_presign_seconds: int = Field(
        default=300, ge=1, le=7 * 86400, description="How long a presigned download URL works."
    )
    s3_presign_endpoint_url: str | None = Field(
        default=None,
        description="The store's address as clients reach it, when not LETHE_S3_ENDPOINT_URL"
        " (an internal name such as http://seaweedfs:8333): presigned URLs are signed for it.",
    )
    secret_key: SecretStr = Field(
        default=SecretStr("changethis"),
        description="Signs pagination cursors. Must be changed outside development.",
    )
    max_upload_bytes: int = Field(default=4 * 1024**3, gt=0, description="Per-file upload cap.")
    # Bodies the API reads whole into memory (JSON, anything not a multipart upload) are cut off
    # at this size, before authentication. The default carries max_forget_samples (100,000)
    # sample IDs even at int64's widest, 20 digits and sign plus ", " each (2.2 MB), with room
    # for the rest of the request; typical 7-digit IDs (9 bytes each) would fit ~930,000. At
    # 22 bytes per ID it holds ~380,000: raising max_forget_samples past that needs this too.
    max_json_body_bytes: int = Field(
        default=8 * 1024**2,
        ge=1024,
        le=1024**3,
        description="Largest non-multipart request body (413 above it).",
    )
    upload_buffer_bytes: int = Field(
        default=1024**2, gt=0, le=64 * 1024**2, description="Write buffer for streamed uploads."
    )
    max_header_bytes: int = Field(
        default=16 * 1024**2, gt=0, description="Largest safetensors JSON header accepted."
    )
    api_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="API processes `lethe api` starts; their HTTP metrics are summed at scrape.",
    )
    auth_cache_seconds: float = Field(
        default=2,
        ge=0,
        le=300,
        description="How long an API process trusts a key it has checked; a key revoked through "
        "another process stops working within this time. 0 checks every request.",
    )
    job_queue: str = Field(
        default="cpu",
        pattern="^(cpu|gpu|auto)$",
        description="Queue new jobs go to: cpu, gpu, or auto (by the model's size; needs workers"
        " on both queues). A tenant's or a request's `device` overrides it.",
    )
    gpu_min_parameters: int = Field(
        default=2_000_000,
        ge=0,
        le=10**12,
        description="Under `auto`, models with at least this many parameters go to the gpu queue.",
    )
    job_timeout_seconds: int = Field(
        default=6 * 3600, gt=0, description="Longest a job may run; sets the broker timeout."
    )
    forget_deadline_days: int = Field(
        default=30, gt=0, description="A forget request is due this many days after receipt."
    )
    max_forget_samples: int = Field(default=100_000, gt=0, description="Largest sample list.")
    retention_days: float = Field(
        default=0,
        ge=0,
        le=30,
        description="Days a superseded version's bytes are kept after a certified version forgot"
        " its samples (0: destroyed at certification). Tenants may set their own.",
    )
    heartbeat_timeout_seconds: int = Field(
        default=120, gt=0, description="A running job silent this long is presumed dead."
    )
    resend_after_seconds: int = Field(
        default=30, gt=0, description="Re-send a queued job's task when it has not started."
    )
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="CPU threads a worker's torch may use (default: torch's own choice).",
    )
    heartbeat_interval_seconds: float = Field(
        default=5, gt=0, description="How often a running job proves its worker is alive."
    )
    sweep_interval_seconds: float = Field(
        default=15, ge=0, description="How often each worker sweeps; 0 turns its sweeper off."
    )
    store_orphan_grace_seconds: float = Field(
        default=3600,
        ge=60,
        description="A stored file no row names is deleted by the store sweep (and `lethe store"
        " check --repair`) once it is this old by mtime; longer than any transaction.",
    )
    signing_key_path: Path | None = Field(
        default=None,
        description="Ed25519 private key (PEM) for certificates; embedded mode creates one.",
    )
    # Policy gate defaults (points of accuracy, 0-100); tenants may override in their settings.
    policy_class_fa_max: float = Field(default=1.0, ge=0, le=100)
    policy_class_ta_drop_max: float = Field(default=3.0, ge=0, le=100)
    policy_sample_fa_gap_max: float = Field(default=5.0, ge=0, le=100)
    policy_sample_ra_drop_max: float = Field(default=3.0, ge=0, le=100)
    # ... and for class forgetting on a diffusion model, judged on generated images: the
    # forgotten class's share among its own generated images (points), the drop of the kept
    # classes' accuracy (points), and the pooled Frechet distance's ratio to the original's.
    policy_gen_fa_max: float = Field(
        default=10.0, ge=0, le=100, description="FA limit when no retrained reference ran."
    )
    policy_gen_fa_margin: float = Field(
        default=5.0, ge=0, le=100, description="FA allowed above the retrained reference's."
    )
    policy_gen_kept_drop_max: float = Field(default=5.0, ge=0, le=100)
    policy_gen_fd_ratio_max: float = Field(default=1.5, ge=1, le=100)
    # How a diffusion job evaluates (see shared/spec/generation.md): images generated per
    # forgotten class and per kept class, DDIM steps and guidance, images kept per class for
    # the samples endpoint's grids, and the epochs of the evaluator classifier the service
    # trains when a request names none. Small defaults suit a CPU; raise them on a GPU.
    generation_forget_samples: int = Field(default=64, ge=8, le=100_000)
    generation_kept_samples: int = Field(default=16, ge=4, le=100_000)
    generation_sampling_steps: int = Field(default=25, ge=1, le=1000)
    generation_guidance: float = Field(default=2.0, ge=0, le=20)
    generation_grid_samples: int = Field(default=16, ge=1, le=64)
    generation_evaluator_epochs: int = Field(default=10, ge=1, le=200)
    auto_migrate: bool | None = Field(
        default=None,
        description="Run Alembic migrations when the API starts; default on in embedded mode.",
    )

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Self:
        if (
            self.environment is not Environment.development
            and self.secret_key.get_secret_value() in PLACEHOLDER_SECRETS
        ):
            raise ValueError(
                "LETHE_SECRET_KEY is unset or a placeholder; set a random value "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`) "
                f"before running with LETHE_ENVIRONMENT={self.environment.value}"
            )
        return self

    @model_validator(mode="after")
    def _s3_credentials_in_pairs(self) -> Self:
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError(
                "set both LETHE_S3_ACCESS_KEY_ID and LETHE_S3_SECRET_ACCESS_KEY, or neither"
                " (to use boto3's own credentials)"
            )
        return self

    @property
    def mode(self) -> Mode:
        db = self.database_url or ""
        if db.startswith(("postgresql", "postgres://")) and self.redis_url:
            return Mode.production
        return Mode.embedded

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return normalise_database_url(self.database_url)
        return f"sqlite:///{(self.data_dir / 'lethe.db').resolve()}"

    @property
    def resolved_artifact_uri(self) -> str:
        if self.artifact_uri:
            return self.artifact_uri
        return (self.data_dir / "artifacts").resolve().as_uri()

    @property
    def broker_url(self) -> str:
        return self.redis_url or "filesystem://"

    @property
    def broker_spool_dir(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def resolved_signing_key_path(self) -> Path:
        return self.signing_key_path or (self.data_dir / "signing-key.pem").resolve()

    @property
    def should_auto_migrate(self) -> bool:
        if self.auto_migrate is not None:
            return self.auto_migrate
        return self.mode is Mode.embedded


def normalise_database_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever spelling the operator wrote."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class SettingsError(ValueError):
    """A ``LETHE_*`` setting that cannot be used. The message is one line for a person: the
    variable, what is wrong with it and (unless it is a secret) the value that was given."""


def describe_settings_error(exc: ValidationError, env_file: str | None = None) -> str:
    """pydantic's multi-line report as one line: ``LETHE_X: what is wrong (got 'value')``."""
    parts = []
    for err in exc.errors():
        message = str(err.get("msg") or "invalid value").removeprefix("Value error, ")
        message = " ".join(message.split())
        loc = err.get("loc") or ()
        if not loc:  # a check across fields: its message names the variables itself
            parts.append(message)
            continue
        field = str(loc[0])
        var = f"LETHE_{field.upper()}"
        given = err.get("input")
        shown = ""
        if field not in _SECRET_FIELDS and isinstance(given, str | int | float):
            shown = f" (got {given!r})"
        where = ""
        if env_file and not any(k.upper() == var for k in os.environ):
            where = f" in {env_file}"
        parts.append(f"{var}{where}: {message[:1].lower()}{message[1:]}{shown}")
    return "; ".join(parts) or "invalid settings"


# Values never echoed in an error: secrets, and URLs (which may carry a password).
_SECRET_FIELDS = frozenset(
    name
    for name, field in Settings.model_fields.items()
    if field.annotation in (SecretStr, SecretStr | None) or name.endswith(("_url", "_uri"))
)


@functools.cache
def get_settings() -> Settings:
    """The process's settings; a value that cannot be used raises :class:`SettingsError`."""
    env_file = os.environ.get("LETHE_ENV_FILE") or None
    try:
        return Settings(_env_file=env_file)
    except ValidationError as exc:
        raise SettingsError(describe_settings_error(exc, env_file)) from None
