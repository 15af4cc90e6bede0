"""Throwaway PostgreSQL and Redis servers of a test's own, for chaos tests that stop and restart
them: they may do that only to servers they started, never to the shared ones.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user from a
directory that user owns (pytest's ``tmp_path`` is private to root).

Both listen on loopback unless given another ``host`` (the multi-host test binds them to a bridge
that network namespaces reach)."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from app.core.migrate import upgrade


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pg_bindir() -> Path | None:
    if env := os.environ.get("LETHE_TEST_PG_BINDIR"):
        return Path(env)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PrivatePostgres:
    """A throwaway PostgreSQL server of this test's own. PostgreSQL refuses to run as root, so
    as root it runs as the ``postgres`` user from a directory that user owns (pytest's
    ``tmp_path`` is private to root); otherwise from ``workdir``.

    It listens on ``host`` only; ``clients`` (a CIDR such as ``10.231.0.0/24``) may connect
    without a password as loopback may (initdb's trust lines cover loopback only)."""

    def __init__(
        self, bindir: Path, workdir: Path, host: str = "127.0.0.1", clients: str | None = None
    ) -> None:
        self.bindir = bindir
        self.host = host
        self.clients = clients
        self.port = free_port(host)
        self._as_root = os.geteuid() == 0
        if self._as_root:
            self.root = Path(tempfile.mkdtemp(prefix="lethe-pg-"))
            shutil.chown(self.root, "postgres")
        else:
            self.root = workdir / "pg"
            self.root.mkdir()
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self.url = f"postgresql+psycopg://postgres@{host}:{self.port}/lethe"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")
        if self.clients:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {self.clients} trust\n")
        self.start()
        self._run("createdb", "-h", self.host, "-p", str(self.port), "-U", "postgres", "lethe")

    def running(self) -> bool:
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0

    def start(self) -> None:
        if self.running():
            return
        options = f"-p {self.port} -k {self.root} -c listen_addresses={self.host} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options, "-w",
                  "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        # -l: the new server must not inherit our pipes (run() would wait for it to exit).
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-m", "fast", "-w",
                  "restart")  # fmt: skip

    def destroy(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def private_postgres(
    workdir: Path, host: str = "127.0.0.1", clients: str | None = None
) -> Iterator[PrivatePostgres]:
    """A migrated private server for the duration of the block (skips when PostgreSQL's server
    binaries are not installed), removed after."""
    bindir = pg_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    server = PrivatePostgres(bindir, workdir, host, clients)
    try:
        server.init()
        upgrade(server.url)
        yield server
    finally:
        server.destroy()


class RedisServer:
    """A private, non-persistent Redis: restarting it loses every queued message. Off loopback
    (``host``) its protected mode is off, or it would refuse every client there."""

    def __init__(self, port: int, workdir: Path, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--protected-mode",
                "yes" if self.host == "127.0.0.1" else "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host=self.host, port=self.port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None
