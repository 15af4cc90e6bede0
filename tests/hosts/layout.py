"""Lethe on several "hosts" of one machine: the API and each worker in a network namespace of its
own, joined by a bridge in the root namespace, each with its own disk (a folder no other host can
see), sharing nothing but PostgreSQL, Redis and an S3 bucket reached over TCP at the bridge's
address. Used by ``tests/hosts/test_netns_hosts.py`` and by ``bench/netns_hosts.py`` (the same
layout, up by hand).

::

    root namespace: bridge lbr<tag> 10.231.N.1/24
       PostgreSQL :p1, Redis :p2, SeaweedFS S3 :p3   (listening on 10.231.N.1 only)
         |                |                 |
       api  10.231.N.10   worker-a 10.231.N.11   worker-b 10.231.N.12
       (netns + veth, own hostname, own folder; every other host's folder is hidden)

Each host process runs as ``ip netns exec <ns> unshare --uts --mount sh -c ...``: the shell sets
the host's name (so a job's ``claimed by worker-a:<pid>`` names the host), mounts an empty
read-only tmpfs over every other host's folder and the servers' folders, then ``exec``\\s the
command, so the pid the caller holds is the program's own, in a process group of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.private_servers import PrivatePostgres, RedisServer, free_port, pg_bindir
from tests.s3_server import S3Server, start_seaweedfs

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

ROOT = Path(__file__).resolve().parents[2]
API_PORT = 8000  # each namespace has its own ports: every API host may use the same one
BUCKET = "lethe"

# The shell that turns a process into a host's: its name, the folders it must not see, the
# program. Arguments: hostname, hidden folders..., "--", argv...
_ENTER = (
    'h="$1"; shift; '
    'while [ "$1" != "--" ]; do '
    'mount -t tmpfs -o ro,size=16k,mode=0555 lethe-hidden "$1" || exit 97; shift; done; '
    'shift; hostname "$h" || exit 97; exec "$@"'
)


def missing_requirements() -> str | None:
    """Why the layout cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root (ip netns, veth pairs, a bridge)"
    for tool in ("ip", "unshare", "nsenter", "runuser", "redis-server"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` on PATH"
    bindir = pg_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        return "needs PostgreSQL's server binaries (initdb, pg_ctl)"
    return None


class NotPermitted(RuntimeError):
    """Root without the capabilities namespaces need (an unprivileged container)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        if "Operation not permitted" in res.stderr:
            raise NotPermitted(f"ip {' '.join(args)}: {res.stderr.strip()}")
        raise RuntimeError(f"ip {' '.join(args)} exited {res.returncode}: {res.stderr.strip()}")
    return res


def _free_subnet(start: int) -> int:
    """A third octet N such that nothing on this machine uses 10.231.N.0/24."""
    used = _ip("-4", "-o", "addr", "show").stdout + _ip("-4", "route", "show").stdout
    for i in range(250):
        n = (start + i) % 250 + 1
        if f"10.231.{n}." not in used:
            return n
    raise RuntimeError("no free 10.231.N.0/24 subnet")


@dataclass
class Host:
    name: str
    netns: str
    ip: str
    root: Path  # the host's disk: data/, tmp/, home/, etc/ (its secrets), logs
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    def log(self, what: str) -> Path:
        return self.root / f"{what}.log"

    def pids(self) -> list[int]:
        """Every process in the host's network namespace: all that runs on this host."""
        out = _ip("netns", "pids", self.netns, check=False).stdout
        return [int(p) for p in out.split()]

    def files(self) -> list[Path]:
        """Every file on the host's disk except its own logs and the secrets it was given."""
        return sorted(
            p
            for sub in ("data", "tmp", "home")
            for p in (self.root / sub).rglob("*")
            if p.is_file()
        )


class Cluster:
    """The network, the shared servers and the hosts; :meth:`down` undoes all of it, whatever
    :meth:`up` got to."""

    def __init__(self, root: Path, *, workers: int = 2, fast_failover: bool = True) -> None:
        self.root = root
        self.tag = str(os.getpid())
        self.n_workers = workers
        self.fast_failover = fast_failover
        self.subnet = 0
        self.bridge = f"lbr{self.tag}"
        self.hosts: dict[str, Host] = {}
        self.pg: PrivatePostgres | None = None
        self.redis: RedisServer | None = None
        self.s3: S3Server | None = None
        self.secret_key = secrets.token_urlsafe(32)
        self.prefix = f"hosts-{secrets.token_hex(4)}"
        self._net_made: list[str] = []  # namespaces created, for down()

    # -- addresses ------------------------------------------------------------------------------

    @property
    def gateway(self) -> str:
        return f"10.231.{self.subnet}.1"

    @property
    def api(self) -> Host:
        return self.hosts["api"]

    @property
    def workers(self) -> list[Host]:
        return [h for n, h in self.hosts.items() if n != "api"]

    @property
    def api_url(self) -> str:
        return f"http://{self.api.ip}:{API_PORT}"

    @property
    def servers_dir(self) -> Path:
        return self.root / "servers"

    @property
    def artifact_uri(self) -> str:
        return f"s3://{BUCKET}/{self.prefix}"

    # -- up -------------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        """What was made so far, for ``bench/netns_hosts.py down`` should this process die."""
        return self.root / "state.json"

    def up(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._network()
        finally:
            write_state(self)
        try:
            self._servers()
        finally:
            write_state(self)
        self._configure_hosts()
        self.migrate()
        self.start_api()
        for w in self.workers:
            self.start_worker(w)
        self.wait_ready()

    def _network(self) -> None:
        names = ["api"] + [f"worker-{chr(ord('a') + i)}" for i in range(self.n_workers)]
        for _ in range(5):
            self.subnet = _free_subnet(os.getpid())
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            # Another run may have picked the same subnet at the same moment: then pick again.
            others = [
                line
                for line in _ip("-4", "-o", "addr", "show").stdout.splitlines()
                if f" {self.gateway}/" in line and f" {self.bridge} " not in line
            ]
            if not others:
                break
            _ip("link", "del", self.bridge)
        else:
            raise RuntimeError("could not claim a 10.231.N.0/24 subnet")
        _ip("link", "set", self.bridge, "up")
        for i, name in enumerate(names):
            netns = f"lethe-{self.tag}-{name}"
            outer, inner = f"lv{self.tag}x{i}", f"lp{self.tag}x{i}"
            _ip("netns", "add", netns)
            self._net_made.append(netns)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", netns)
            _ip("link", "set", outer, "master", self.bridge, "up")
            ip = f"10.231.{self.subnet}.{10 + i}"
            _ip("-n", netns, "link", "set", inner, "name", "eth0")
            _ip("-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            host = Host(name, netns, ip, self.root / "hosts" / name)
            for sub in ("data", "tmp", "home", "etc"):
                (host.root / sub).mkdir(parents=True, exist_ok=True)
            self.hosts[name] = host

    def _servers(self) -> None:
        self.servers_dir.mkdir(parents=True, exist_ok=True)
        bindir = pg_bindir()
        assert bindir is not None
        self.pg = PrivatePostgres(
            bindir, self.servers_dir, host=self.gateway, clients=f"10.231.{self.subnet}.0/24"
        )
        self.pg.init()
        redis_dir = self.servers_dir / "redis"
        redis_dir.mkdir(exist_ok=True)
        self.redis = RedisServer(free_port(self.gateway), redis_dir, host=self.gateway)
        self.redis.start()
        self.s3 = start_seaweedfs(self.servers_dir / "seaweedfs", host=self.gateway)
        self.s3.make_bucket(BUCKET)

    def _configure_hosts(self) -> None:
        """What an operator hands each host: the shared settings, and the workers' signing key
        (generated once, copied to each worker; the API needs none in production)."""
        key = self.root / "signing-key.pem"
        self.lethe_local("keys", "generate", str(key))
        for w in self.workers:
            shutil.copy2(key, w.etc / "signing-key.pem")

    # -- settings and processes -----------------------------------------------------------------

    def settings_env(self, host: Host) -> dict[str, str]:
        """The LETHE_* variables of one host: production mode, everything shared over TCP."""
        assert self.pg is not None and self.redis is not None and self.s3 is not None
        env = {
            "LETHE_ENVIRONMENT": "production",
            "LETHE_SECRET_KEY": self.secret_key,
            "LETHE_DATABASE_URL": self.pg.url,
            "LETHE_REDIS_URL": f"redis://{self.gateway}:{self.redis.port}/0",
            "LETHE_DATA_DIR": str(host.data_dir),
            "LETHE_ARTIFACT_URI": self.artifact_uri,
            "LETHE_S3_ENDPOINT_URL": self.s3.endpoint,
            "LETHE_S3_REGION": "us-east-1",
            "LETHE_S3_ACCESS_KEY_ID": self.s3.access_key,
            "LETHE_S3_SECRET_ACCESS_KEY": self.s3.secret_key,
            "LETHE_S3_PATH_STYLE": "true",
        }
        if host.name != "api":
            env["LETHE_SIGNING_KEY_PATH"] = str(host.etc / "signing-key.pem")
            # Two workers on two shared cores: one torch thread each.
            env["LETHE_TORCH_THREADS"] = "1"
            if self.fast_failover:
                # A host that dies is noticed in ~10 s instead of 2 min (defaults: 5 s, 120 s,
                # 30 s, 15 s); still several beats of slack on a loaded machine.
                env |= {
                    "LETHE_HEARTBEAT_INTERVAL_SECONDS": "1",
                    "LETHE_HEARTBEAT_TIMEOUT_SECONDS": "10",
                    "LETHE_RESEND_AFTER_SECONDS": "3",
                    "LETHE_SWEEP_INTERVAL_SECONDS": "1",
                }
        return env

    def process_env(self, host: Host) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LETHE_", "PROMETHEUS_", "AWS_", "TMPDIR"))
        }
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env["TMPDIR"] = str(host.tmp_dir)
        env["HOME"] = str(host.root / "home")
        env["PYTHONUNBUFFERED"] = "1"
        return env | self.settings_env(host)

    def hidden_from(self, host: Host) -> list[Path]:
        """The folders a host must not see: every other host's, and the servers'."""
        hidden = [h.root for h in self.hosts.values() if h is not host]
        hidden.append(self.servers_dir)
        if self.pg is not None and self.pg.root != self.servers_dir / "pg":
            hidden.append(self.pg.root)  # as root it lives in a folder the postgres user owns
        return hidden

    def host_argv(self, host: Host, argv: Sequence[str]) -> list[str]:
        hidden = [str(p) for p in self.hidden_from(host)]
        return [
            "ip", "netns", "exec", host.netns,
            "unshare", "--uts", "--mount", "--propagation", "private",
            "sh", "-c", _ENTER, "lethe-host", host.name, *hidden, "--", *argv,
        ]  # fmt: skip

    def spawn(self, host: Host, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        """Start ``argv`` on ``host``, in a process group of its own."""
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                self.host_argv(host, argv),
                cwd=host.root,
                env=self.process_env(host),
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        host.procs.append(proc)
        return proc

    def lethe_on(self, host: Host, *args: str, timeout: float = 120) -> str:
        """Run ``lethe <args>`` on ``host`` and return its stdout (raises on failure)."""
        res = subprocess.run(
            self.host_argv(host, [sys.executable, "-m", "app.cli", *args]),
            cwd=host.root,
            env=self.process_env(host),
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )
        if res.returncode != 0:
            raise RuntimeError(f"lethe {' '.join(args)} on {host.name}: {res.stderr[-2000:]}")
        return res.stdout

    def lethe_local(self, *args: str) -> str:
        """The operator's own ``lethe`` (root namespace), with no LETHE_* settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        res = subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            cwd=self.root, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if res.returncode != 0:
            raise RuntimeError(f"lethe {' '.join(args)}: {res.stderr[-2000:]}")
        return res.stdout

    def migrate(self) -> None:
        # The operator's one-shot step (compose's `migrate` service), run from the API host.
        self.lethe_on(self.api, "db", "upgrade")

    def start_api(self) -> None:
        argv = [sys.executable, "-m", "app.cli", "api", "--host", self.api.ip]
        self.spawn(self.api, [*argv, "--port", str(API_PORT)], self.api.log("api"))

    def start_worker(self, host: Host) -> None:
        argv = [sys.executable, "-m", "app.cli", "worker", "--queue", "cpu"]
        self.spawn(host, argv, host.log("worker"))

    def create_tenant(self, name: str) -> str:
        """``lethe admin create-tenant`` on the API host; returns the first admin key."""
        out = self.lethe_on(self.api, "admin", "create-tenant", name)
        found = re.search(r"api_key:\s+(\S+)", out)
        if found is None:
            raise RuntimeError(f"no key in: {out}")
        return found.group(1)

    def wait_ready(self, timeout: float = 240) -> None:
        """Until the API answers /readyz and every worker's Celery says it is ready."""
        deadline = time.monotonic() + timeout
        pending = {"api", *(w.name for w in self.workers)}
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                host = self.hosts[name]
                if any(p.poll() is not None for p in host.procs):
                    raise RuntimeError(f"{name} exited:\n{self.output(host)}")
                if name == "api":
                    try:
                        if httpx.get(f"{self.api_url}/readyz", timeout=2).status_code == 200:
                            pending.discard(name)
                    except httpx.HTTPError:
                        pass
                elif " ready." in host.log("worker").read_text(errors="replace"):
                    pending.discard(name)
            time.sleep(0.3)
        if pending:
            detail = "\n".join(f"--- {n}\n{self.output(self.hosts[n])}" for n in sorted(pending))
            raise RuntimeError(f"not ready after {timeout} s: {sorted(pending)}\n{detail}")

    def output(self, host: Host) -> str:
        return "\n".join(
            f"[{log.name}]\n" + log.read_text(errors="replace")[-3000:]
            for log in sorted(host.root.glob("*.log"))
        )

    def host_of(self, claimed_by: str) -> Host:
        """The host a ``claimed_by`` (``<hostname>:<pid>``) names."""
        return self.hosts[claimed_by.rsplit(":", 1)[0]]

    def kill_host(self, host: Host) -> list[int]:
        """SIGKILL every process on ``host`` (its network namespace's, its process groups'), as a
        machine that loses power; returns the pids killed."""
        killed = set(host.pids())
        for proc in host.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed.add(proc.pid)
                except ProcessLookupError:
                    pass
        for pid in killed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in host.procs:
            proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while host.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        return sorted(killed)

    def state(self) -> dict[str, object]:
        """What :func:`down_from_state` needs to undo this layout after its owner died."""
        return {
            "owner_pid": os.getpid(),
            "root": str(self.root),
            "bridge": self.bridge,
            "netns": list(self._net_made),
            "pg_data": str(self.pg.data) if self.pg else None,
            "pg_root": str(self.pg.root) if self.pg else None,
            "redis_pid": self.redis.proc.pid if self.redis and self.redis.proc else None,
            "weed_pid": self.s3.process.pid if self.s3 else None,
        }

    # -- down -----------------------------------------------------------------------------------

    def down(self) -> None:
        """Kill every host's processes, stop the servers, delete the namespaces (their veths go
        with them) and the bridge. Safe to call after a partial :meth:`up`."""
        for host in self.hosts.values():
            try:
                self.kill_host(host)
            except Exception as exc:  # keep tearing down the rest
                print(f"warning: killing {host.name}: {exc}", file=sys.stderr)
        if self.s3 is not None:
            self.s3.stop()
        if self.redis is not None:
            self.redis.kill()
        if self.pg is not None:
            self.pg.destroy()
        for netns in self._net_made:
            _ip("netns", "del", netns, check=False)
        _ip("link", "del", self.bridge, check=False)
        self._net_made.clear()
        self.state_file.unlink(missing_ok=True)


def down_from_state(state: Mapping[str, Any]) -> None:
    """Undo a layout whose owner process died (``bench/netns_hosts.py down``): only what it
    recorded, and a process only when it is still the one recorded."""
    namespaces = [str(n) for n in state.get("netns") or []]
    for netns in namespaces:
        out = _ip("netns", "pids", netns, check=False).stdout
        for found in out.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(found), signal.SIGKILL)
    for key, binary in (("redis_pid", "redis-server"), ("weed_pid", "weed")):
        pid = state.get(key)
        if isinstance(pid, int) and _cmd_of(pid).startswith(binary):
            os.kill(pid, signal.SIGKILL)
    pg_data, bindir = state.get("pg_data"), pg_bindir()
    if isinstance(pg_data, str) and bindir is not None and Path(pg_data).is_dir():
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D", pg_data, "-m",
             "immediate", "-w", "stop"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
    for netns in namespaces:
        _ip("netns", "del", netns, check=False)
    _ip("link", "del", str(state.get("bridge")), check=False)
    for key in ("pg_root", "root"):
        where = state.get(key)
        if isinstance(where, str):
            shutil.rmtree(where, ignore_errors=True)


def _cmd_of(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return Path(raw.split(b"\0", 1)[0].decode(errors="replace")).name


def write_state(cluster: Cluster) -> None:
    cluster.state_file.write_text(json.dumps(cluster.state(), indent=2))
