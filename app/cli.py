"""The ``lethe`` command: run the service, administer tenants and keys, import datasets, demo.

Exit codes: 0 success, 1 the service refused or a check failed, 2 usage error, 3 could not reach
the service.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from app.client import LetheClient
    from app.core.config import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class UsageError(Exception):
    """Bad local input (a file that is not there, JSON that does not parse): exit 2."""


def _settings() -> Settings:
    from app.core.config import get_settings

    return get_settings()


def cmd_api(args: argparse.Namespace) -> int:
    import shutil

    import uvicorn

    from app.core.config import get_settings
    from app.core.observability import logging_config

    settings = get_settings()
    workers = args.workers or settings.api_workers
    common: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        # Our middleware writes the access lines; uvicorn's loggers go through the JSON handler.
        "log_config": logging_config(args.log_level),
        "access_log": False,
        "log_level": args.log_level,
    }
    if workers == 1:
        from app.main import create_app

        uvicorn.run(create_app(), **common)
        return EXIT_OK
    # Several processes: migrate and publish the signing key once here, not in N racing
    # lifespans, and give them a shared folder for their metrics (unless the operator did).
    from app.main import prepare_database

    prepare_database(settings)
    os.environ["LETHE_AUTO_MIGRATE"] = "false"
    own_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_dir = tempfile.mkdtemp(prefix="lethe-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    try:
        uvicorn.run("app.main:create_app", factory=True, workers=workers, **common)
    finally:
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    # The worker is its own program: exec Celery rather than importing it into the API package.
    from app.core.tasks import worker_command

    argv = worker_command(
        args.queue, pool=args.pool, concurrency=args.concurrency, loglevel=args.log_level
    )
    os.execv(sys.executable, argv)  # noqa: S606 - fixed argv, no shell
    return EXIT_OK  # pragma: no cover


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from app.core.migrate import upgrade

    settings = _settings()
    upgrade(settings.resolved_database_url, args.revision)
    print(f"database at {args.revision}")
    return EXIT_OK


def _admin_session() -> AbstractContextManager[Session]:
    from app.core.db import make_engine, make_sessionmaker, session_scope

    settings = _settings()
    return session_scope(make_sessionmaker(make_engine(settings.resolved_database_url)))


def cmd_create_tenant(args: argparse.Namespace) -> int:
    from app.tenants import service

    with _admin_session() as session:
        tenant, key, plaintext = service.create_tenant(session, args.name)
        tenant_id, key_id = tenant.id, key.id
    print(f"tenant_id: {tenant_id}\nkey_id:    {key_id}\nrole:      admin")
    print(f"api_key:   {plaintext}\n(the key is shown once; store it now)")
    return EXIT_OK


def cmd_create_key(args: argparse.Namespace) -> int:
    from app.tenants import repository, service
    from app.tenants.schemas import Role

    with _admin_session() as session:
        tenant = repository.get_tenant(session, args.tenant) or repository.get_tenant_by_name(
            session, args.tenant
        )
        if tenant is None:
            print(f"error: no tenant {args.tenant!r}", file=sys.stderr)
            return EXIT_FAILED
        key, plaintext = service.create_key(session, tenant.id, Role(args.role), args.name)
        key_id = key.id
    print(f"key_id:  {key_id}\nrole:    {args.role}\napi_key: {plaintext}")
    print("(the key is shown once; store it now)")
    return EXIT_OK


def cmd_revoke_key(args: argparse.Namespace) -> int:
    from app.tenants import repository
    from app.tenants import service as tenants

    with _admin_session() as session:
        key = repository.get_key(session, args.key_id)
        if key is None:
            print(f"error: no key {args.key_id}", file=sys.stderr)
            return EXIT_FAILED
        tenants.revoke_key(session, key.tenant_id, key.id)
    print(f"revoked {args.key_id}")
    return EXIT_OK


def cmd_list_tenants(args: argparse.Namespace) -> int:
    from app.tenants import repository

    with _admin_session() as session:
        for t in repository.list_tenants(session):
            print(f"{t.id}  {t.name}")
    return EXIT_OK


def _client(args: argparse.Namespace) -> LetheClient:
    from app.client import LetheClient

    key = args.api_key or os.environ.get("LETHE_API_KEY")
    if not key:
        print("error: pass --api-key or set LETHE_API_KEY", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    return LetheClient(args.url, key)


def _progress_bar(label: str) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        width = 30
        frac = done / total if total else 1.0
        bar = "#" * int(frac * width)
        sys.stderr.write(f"\r{label} [{bar:<{width}}] {frac * 100:5.1f}%")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def cmd_import_dataset(args: argparse.Namespace) -> int:
    from app.datasets import sources

    try:
        arrays: dict[str, Any] = (
            sources.fashion_mnist(Path(args.path) if args.path else sources.FASHION_MNIST_DIR)
            if args.source == "fashion-mnist"
            else sources.digits()
        )
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    with tempfile.TemporaryDirectory() as tmp:
        path = sources.write_manifest(arrays, Path(tmp) / f"{args.source}.safetensors")
        with _client(args) as client:
            ds = client.upload_dataset(
                path, name=args.name or args.source, on_progress=_progress_bar("upload")
            )
    print(f"dataset_id: {ds['id']}  samples: {ds['num_samples']}  classes: {ds['num_classes']}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    """Offline: signature, model digest and verdict. Needs no service and no database."""
    import hashlib
    import json

    from app.certificates.signing import load_public_key, verify_envelope

    try:
        envelope = json.loads(Path(args.certificate).read_text())
    except (OSError, ValueError) as exc:
        print(f"FAILED: cannot read the certificate: {exc}", file=sys.stderr)
        return EXIT_FAILED
    keys = {}
    raw = Path(args.key).read_text()
    try:
        if raw.lstrip().startswith("{"):
            # The JSON of GET /v1/signing-keys, saved as it came.
            for item in json.loads(raw)["items"]:
                keys[item["key_id"]] = load_public_key(item["public_key_pem"])
        else:
            from app.certificates.signing import key_id_of

            key = load_public_key(raw)
            keys[key_id_of(key)] = key
    except (ValueError, KeyError) as exc:
        print(f"FAILED: cannot read the public key: {exc}", file=sys.stderr)
        return EXIT_FAILED
    digest = None
    if args.model:
        h = hashlib.sha256()
        with open(args.model, "rb") as fh:
            while chunk := fh.read(1024 * 1024):
                h.update(chunk)
        digest = h.hexdigest()
    result = verify_envelope(envelope, keys, model_bytes_digest=digest, require_pass=True)
    if not result.ok:
        print("FAILED:", file=sys.stderr)
        for problem in result.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_FAILED
    pred = (result.statement or {}).get("predicate", {})
    forgotten = pred.get("forgotten", {})
    print(f"OK: signed by key {result.key_id}")
    if digest:
        print(f"    model file sha256 {digest} is the certified subject")
    print(
        f"    verdict {pred.get('policy', {}).get('verdict')}; method"
        f" {pred.get('method', {}).get('name')}; forgotten this job"
        f" {forgotten.get('this_job', {}).get('count')}, cumulative"
        f" {forgotten.get('cumulative', {}).get('count')}"
    )
    print(f"    guarantee: {pred.get('guarantee')} ({pred.get('guarantee_meaning', '')[:80]}...)")
    return EXIT_OK


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from app.certificates.signing import generate_key_file, public_pem

    try:
        signer = generate_key_file(Path(args.path))
    except FileExistsError:
        print(f"error: {args.path} exists; refusing to overwrite a signing key", file=sys.stderr)
        return EXIT_FAILED
    print(f"key_id: {signer.key_id}\nprivate key written to {args.path} (mode 0600)")
    print(public_pem(signer.public), end="")
    return EXIT_OK


def _read_ids(path: str) -> list[int]:
    """Sample IDs from a file: whitespace- or comma-separated integers, or a JSON list."""
    import json

    text = Path(path).read_text() if path != "-" else sys.stdin.read()
    if text.lstrip().startswith("["):
        try:
            return [int(x) for x in json.loads(text)]
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{path}: not a JSON list of integers ({exc})") from None
    return _ints(text.replace(",", " ").replace("\n", " "), path, sep=None)


def _ints(text: str, what: str, sep: str | None = ",") -> list[int]:
    try:
        return [int(tok) for tok in text.split(sep) if tok.strip()]
    except ValueError as exc:
        raise UsageError(f"{what}: expected integers ({exc})") from None


def _print_json(value: Any) -> None:
    import json

    print(json.dumps(value, indent=2, default=str))


def cmd_forget(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"reason": args.reason or "", "method": args.method}
    if args.subject:
        body["subject_ref"] = args.subject
    if args.config:
        body["config"] = _load_json_arg(args.config, "--config")
    if args.reference:
        body["reference_eval"] = True
    classes = _ints(args.classes, "--classes") if args.classes else None
    samples = _read_ids(args.samples_file) if args.samples_file else None
    if args.samples:
        samples = (samples or []) + _ints(args.samples, "--samples")
    with _client(args) as client:
        fr = client.forget(
            args.model_id,
            class_ids=classes,
            sample_ids=samples,
            idempotency_key=args.idempotency_key,
            **body,
        )
        print(f"request_id: {fr['id']}\njob_id:     {fr['job_id']}\ndue_at:     {fr['due_at']}")
        if not args.wait:
            return EXIT_OK
        return _watch(client, fr["job_id"])


def _watch(client: Any, job_id: str) -> int:
    """Follow a job until it ends; exit 0 when it succeeded, 1 otherwise."""
    last: tuple[Any, ...] = ()

    def show(job: dict[str, Any]) -> None:
        nonlocal last
        p = job.get("progress") or {}
        now = (job["state"], p.get("phase"), p.get("step"))
        if now != last:
            eta = f" eta {p['eta_seconds']:.0f}s" if p.get("eta_seconds") else ""
            step = f" {p.get('step')}/{p.get('total')}" if p.get("total") else ""
            print(f"{job['state']:<10} {p.get('phase') or '':<22}{step}{eta}", file=sys.stderr)
            last = now

    job = client.wait_for_job(job_id, timeout=7 * 24 * 3600, on_update=show)
    out = job.get("outcome") or {}
    if job["state"] == "succeeded":
        print(f"succeeded: new version {job.get('result_model_id')} (verdict {out.get('verdict')})")
        return EXIT_OK
    print(f"{job['state']}: {job.get('error') or ''}", file=sys.stderr)
    return EXIT_FAILED


def cmd_jobs_watch(args: argparse.Namespace) -> int:
    with _client(args) as client:
        return _watch(client, args.job_id)


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.cancel_job(args.job_id)
    print(f"{job['state']}{' (stop requested)' if job['cancel_requested'] else ''}")
    return EXIT_OK


def cmd_models_download(args: argparse.Namespace) -> int:
    with _client(args) as client:
        out = client.download_weights(
            args.model_id, args.out, allow_uncertified=args.allow_uncertified
        )
        print(f"weights: {out}")
        if args.certificate:
            import json

            Path(args.certificate).write_text(json.dumps(client.certificate(args.model_id)))
            print(f"certificate: {args.certificate}")
    return EXIT_OK


def cmd_models_lineage(args: argparse.Namespace) -> int:
    with _client(args) as client:
        lineage = client.lineage(args.model_id)
    print("version  status       forgotten  id")
    for v in lineage["versions"]:
        print(f"{v['version']:>7}  {v['status']:<11}  {v['forgotten_count']:>9}  {v['id']}")
    return EXIT_OK


def cmd_requests_overdue(args: argparse.Namespace) -> int:
    with _client(args) as client:
        late = list(client.overdue_requests())
    for r in late:
        print(f"{r['id']}  due {r['due_at']}  model {r['model_id']}  job {r['job_id']}")
    print(f"{len(late)} overdue request(s)", file=sys.stderr)
    return EXIT_OK


def cmd_audit_verify(args: argparse.Namespace) -> int:
    with _client(args) as client:
        report = client.verify_audit_log()
    if report["ok"]:
        print(f"OK: {report['checked']} events, chain intact")
        return EXIT_OK
    print(
        f"BROKEN at event seq {report['first_broken_seq']} (id {report['first_broken_id']}):"
        f" {report['reason']}; {report['checked']} events before it are intact",
        file=sys.stderr,
    )
    return EXIT_FAILED


def _table(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    """Rows as aligned columns for people, or as one JSON list for scripts (``--json``)."""
    if as_json:
        _print_json(rows)
        return
    cells = [[str(r.get(c) if r.get(c) is not None else "-") for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _load_json_arg(value: str, what: str) -> Any:
    """Inline JSON, ``@file``, or ``-`` for standard input."""
    import json

    try:
        if value == "-":
            return json.loads(sys.stdin.read())
        if value.startswith("@"):
            return json.loads(Path(value[1:]).read_text())
        return json.loads(value)
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}") from None


Fetch = Callable[["LetheClient", argparse.Namespace], Any]


def _show(fetch: Fetch) -> Callable[[argparse.Namespace], int]:
    """A command that prints one resource as JSON."""

    def command(args: argparse.Namespace) -> int:
        with _client(args) as client:
            _print_json(fetch(client, args))
        return EXIT_OK

    return command


def _listing(fetch: Fetch, columns: list[str]) -> Callable[[argparse.Namespace], int]:
    """A command that prints rows as columns, or as JSON with ``--json``."""

    def command(args: argparse.Namespace) -> int:
        with _client(args) as client:
            rows = list(fetch(client, args))
        _table(rows, columns, args.json)
        return EXIT_OK

    return command


def cmd_datasets_upload(args: argparse.Namespace) -> int:
    with _client(args) as client:
        ds = client.upload_dataset(
            args.train, name=args.name, test=args.test, on_progress=_progress_bar("upload")
        )
    print(f"dataset_id: {ds['id']}  samples: {ds['num_samples']}  classes: {ds['num_classes']}")
    return EXIT_OK


def cmd_models_upload(args: argparse.Namespace) -> int:
    spec = _load_json_arg(args.spec, "--spec")
    with _client(args) as client:
        model = client.upload_model(args.weights, spec, on_progress=_progress_bar("upload"))
        print(f"model_id: {model['id']}  status: {model['status']}")
        if not args.wait:
            return EXIT_OK
        # The worker's deep check decides: ready, or rejected with the reason.
        client.wait_for_job(model["validation_job_id"], timeout=args.timeout)
        model = client.get_model(model["id"])
    reason = model.get("status_reason")
    print(f"status: {model['status']}{'  (' + reason + ')' if reason else ''}")
    return EXIT_OK if model["status"] == "ready" else EXIT_FAILED


def cmd_api_keys_create(args: argparse.Namespace) -> int:
    with _client(args) as client:
        key = client.create_api_key(args.role, args.name)
    print(f"key_id:  {key['id']}\nrole:    {key['role']}\napi_key: {key['key']}")
    print("(shown once; store it now)", file=sys.stderr)
    return EXIT_OK


def cmd_api_keys_revoke(args: argparse.Namespace) -> int:
    with _client(args) as client:
        key = client.revoke_api_key(args.key_id)
    print(f"revoked {key['id']} at {key['revoked_at']}")
    return EXIT_OK


def cmd_settings_set(args: argparse.Namespace) -> int:
    """Change some of the tenant's settings: ``fallback_retrain=true policy.class_fa_max=0.5``.

    Values are JSON (``true``, ``0.5``, ``null`` to return to the service default)."""
    import json

    with _client(args) as client:
        current = client.tenant_settings()
        for assignment in args.assignments:
            dotted, sep, raw = assignment.partition("=")
            if not sep or not dotted:
                print(f"error: expected KEY=VALUE, got {assignment!r}", file=sys.stderr)
                return EXIT_USAGE
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
            *parents, leaf = dotted.split(".")
            node = current
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        _print_json(client.put_tenant_settings(current))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

    return run_demo(data_dir=Path(args.data_dir), port=args.port, dataset=args.dataset)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lethe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("api", help="run the HTTP API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--workers", type=int, default=None, help="API processes (default: $LETHE_API_WORKERS, 1)"
    )
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("worker", help="run a Celery worker (needs the [worker] extra)")
    p.add_argument("--queue", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--pool", choices=["solo", "prefork", "threads"], default="solo")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_worker)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    p = db.add_parser("upgrade", help="apply Alembic migrations")
    p.add_argument("revision", nargs="?", default="head")
    p.set_defaults(func=cmd_db_upgrade)

    admin = sub.add_parser("admin", help="tenants and keys (talks to the database directly)")
    asub = admin.add_subparsers(dest="admin", required=True)
    p = asub.add_parser("create-tenant", help="create a tenant and print its first admin key")
    p.add_argument("name")
    p.set_defaults(func=cmd_create_tenant)
    p = asub.add_parser("create-key", help="create an API key and print it once")
    p.add_argument("--tenant", required=True, help="tenant ID or name")
    p.add_argument("--role", required=True, choices=["admin", "member", "auditor"])
    p.add_argument("--name", default="")
    p.set_defaults(func=cmd_create_key)
    p = asub.add_parser("revoke-key", help="revoke an API key by its ID")
    p.add_argument("key_id")
    p.set_defaults(func=cmd_revoke_key)
    p = asub.add_parser("list-tenants")
    p.set_defaults(func=cmd_list_tenants)

    def client_args(parser: argparse.ArgumentParser, listing: bool = False) -> None:
        parser.add_argument("--url", default=os.environ.get("LETHE_URL", "http://127.0.0.1:8000"))
        parser.add_argument("--api-key", help="default: $LETHE_API_KEY")
        if listing:
            parser.add_argument("--json", action="store_true", help="print JSON for scripts")

    ds = sub.add_parser("datasets", help="datasets").add_subparsers(dest="datasets", required=True)
    p = ds.add_parser("import", help="register a dataset that ships offline")
    p.add_argument("source", choices=["fashion-mnist", "digits"])
    p.add_argument("--path", help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--name")
    client_args(p)
    p.set_defaults(func=cmd_import_dataset)

    p = sub.add_parser("whoami", help="the tenant and role of the API key")
    client_args(p)
    p.set_defaults(func=_show(lambda c, a: c.whoami()))

    p = ds.add_parser("upload", help="upload a training manifest (safetensors)")
    p.add_argument("train", help="safetensors: images, labels, optional sample_ids and test split")
    p.add_argument("--test", help="a separate safetensors test split")
    p.add_argument("--name", required=True)
    client_args(p)
    p.set_defaults(func=cmd_datasets_upload)
    p = ds.add_parser("list", help="the tenant's datasets")
    client_args(p, listing=True)
    p.set_defaults(
        func=_listing(
            lambda c, a: c.list_datasets(),
            ["id", "name", "num_samples", "num_classes", "created_at"],
        )
    )

    p = sub.add_parser("forget", help="ask a model to forget classes or samples")
    p.add_argument("model_id")
    p.add_argument("--classes", help="comma-separated class IDs")
    p.add_argument("--samples", help="comma-separated sample IDs")
    p.add_argument(
        "--samples-file", help="file of sample IDs (one per line, or a JSON list; - is stdin)"
    )
    p.add_argument("--method", default="sfr_on")
    p.add_argument("--config", help="the method's hyperparameters as JSON")
    p.add_argument("--reference", action="store_true", help="also retrain and report the gap")
    p.add_argument("--reason")
    p.add_argument("--subject", help="opaque data-subject reference")
    p.add_argument("--idempotency-key")
    p.add_argument("--wait", action="store_true", help="follow the job until it ends")
    client_args(p)
    p.set_defaults(func=cmd_forget)

    jobs = sub.add_parser("jobs", help="jobs").add_subparsers(dest="jobs", required=True)
    p = jobs.add_parser("watch", help="follow a job until it ends (exit 1 unless it succeeded)")
    p.add_argument("job_id")
    client_args(p)
    p.set_defaults(func=cmd_jobs_watch)
    p = jobs.add_parser("cancel", help="cancel a queued or running job")
    p.add_argument("job_id")
    client_args(p)
    p.set_defaults(func=cmd_jobs_cancel)
    p = jobs.add_parser("show", help="a job's state, progress and history (JSON)")
    p.add_argument("job_id")
    client_args(p)
    p.set_defaults(func=_show(lambda c, a: c.get_job(a.job_id)))

    models = sub.add_parser("models", help="models").add_subparsers(dest="models", required=True)
    p = models.add_parser("download", help="download a version (and its certificate)")
    p.add_argument("model_id")
    p.add_argument("--out", required=True)
    p.add_argument("--certificate", help="also save the certificate to this file")
    p.add_argument("--allow-uncertified", action="store_true")
    client_args(p)
    p.set_defaults(func=cmd_models_download)
    p = models.add_parser("lineage", help="the chain of versions")
    p.add_argument("model_id")
    client_args(p)
    p.set_defaults(func=cmd_models_lineage)
    p = models.add_parser("upload", help="upload weights (safetensors) with their JSON spec")
    p.add_argument("weights")
    p.add_argument("--spec", required=True, help="the spec as JSON, @file, or - for stdin")
    p.add_argument(
        "--wait", action="store_true", help="wait for the worker's check (exit 1 if rejected)"
    )
    p.add_argument("--timeout", type=float, default=3600)
    client_args(p)
    p.set_defaults(func=cmd_models_upload)
    p = models.add_parser("list", help="the tenant's model versions, newest first")
    client_args(p, listing=True)
    p.set_defaults(
        func=_listing(
            lambda c, a: c.list_models(),
            ["id", "name", "version", "status", "architecture", "created_at"],
        )
    )
    p = models.add_parser("show", help="one model version (JSON)")
    p.add_argument("model_id")
    client_args(p)
    p.set_defaults(func=_show(lambda c, a: c.get_model(a.model_id)))

    reqs = sub.add_parser("requests", help="forget requests").add_subparsers(
        dest="requests", required=True
    )
    p = reqs.add_parser("overdue", help="pending requests past their due date")
    client_args(p)
    p.set_defaults(func=cmd_requests_overdue)
    p = reqs.add_parser("list", help="forget requests, newest first")
    p.add_argument("--lineage", help="only this lineage (a model's lineage_id)")
    p.add_argument("--status", choices=["pending", "completed", "failed", "cancelled"])
    client_args(p, listing=True)
    p.set_defaults(
        func=_listing(
            lambda c, a: c.list_requests(lineage_id=a.lineage, status=a.status),
            ["id", "status", "model_id", "job_id", "due_at", "created_at"],
        )
    )

    ak = sub.add_parser("api-keys", help="the tenant's API keys, through the API (admin key)")
    aksub = ak.add_subparsers(dest="api_keys", required=True)
    p = aksub.add_parser("list")
    client_args(p, listing=True)
    p.set_defaults(
        func=_listing(
            lambda c, a: c.list_api_keys(), ["id", "role", "name", "created_at", "revoked_at"]
        )
    )
    p = aksub.add_parser("create", help="create a key and print it once")
    p.add_argument("--role", required=True, choices=["admin", "member", "auditor"])
    p.add_argument("--name", default="")
    client_args(p)
    p.set_defaults(func=cmd_api_keys_create)
    p = aksub.add_parser("revoke", help="revoke a key by its ID")
    p.add_argument("key_id")
    client_args(p)
    p.set_defaults(func=cmd_api_keys_revoke)

    st = sub.add_parser("settings", help="the tenant's unlearning policy settings")
    stsub = st.add_subparsers(dest="settings", required=True)
    p = stsub.add_parser("show")
    client_args(p)
    p.set_defaults(func=_show(lambda c, a: c.tenant_settings()))
    p = stsub.add_parser("set", help="KEY=VALUE ... (JSON values; admin key)")
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    client_args(p)
    p.set_defaults(func=cmd_settings_set)

    p = sub.add_parser("verify", help="verify a certificate offline")
    p.add_argument("certificate", help="the DSSE envelope (JSON) from GET .../certificate")
    p.add_argument("--model", help="the downloaded weights; their SHA-256 must be the subject")
    p.add_argument("--key", required=True, help="a PEM public key, or the JSON of /v1/signing-keys")
    p.set_defaults(func=cmd_verify)

    keys = sub.add_parser("keys", help="signing keys").add_subparsers(dest="keys", required=True)
    p = keys.add_parser("generate", help="create an Ed25519 signing key (PEM)")
    p.add_argument("path")
    p.set_defaults(func=cmd_keys_generate)

    audit = sub.add_parser("audit", help="audit log").add_subparsers(dest="audit", required=True)
    p = audit.add_parser("verify", help="recompute the tenant's hash chain")
    client_args(p)
    p.set_defaults(func=cmd_audit_verify)
    p = audit.add_parser("list", help="the tenant's audit events, oldest first")
    p.add_argument("--action", help="e.g. job.succeeded")
    p.add_argument("--subject", help="a subject ID (model, job, request, key)")
    p.add_argument("--actor", help="a key ID, or worker:...")
    p.add_argument("--since", help="ISO 8601 time")
    client_args(p, listing=True)
    p.set_defaults(
        func=_listing(
            lambda c, a: c.audit_events(
                action=a.action, subject_id=a.subject, actor=a.actor, since=a.since
            ),
            ["seq", "at", "actor", "action", "subject_type", "subject_id"],
        )
    )

    p = sub.add_parser("demo", help="run the whole flow on the embedded default")
    p.add_argument("--data-dir", default=".lethe/demo")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--dataset", choices=["digits", "fashion-mnist"], default="digits")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except (UsageError, FileNotFoundError, IsADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        from app.core.errors import LetheError

        if isinstance(exc, LetheError):
            print(f"error: {exc.detail}", file=sys.stderr)
            return EXIT_FAILED
        from app.client import LetheAPIError, LetheTimeout

        if isinstance(exc, (LetheAPIError, LetheTimeout)):
            print(f"error: {exc}", file=sys.stderr)
            for err in getattr(exc, "problem", {}).get("errors", [])[:10]:
                print(f"  {err.get('field')}: {err.get('message')}", file=sys.stderr)
            return EXIT_FAILED
        import httpx

        if isinstance(exc, httpx.TransportError):
            print(f"error: cannot reach the service: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        raise


if __name__ == "__main__":
    raise SystemExit(main())
