"""Lethe as separate hosts on one machine, to try by hand: the API and N workers, each in a network
namespace of its own with its own folder, sharing only PostgreSQL, Redis and a SeaweedFS bucket
that listen on a bridge's address (the layout of ``tests/hosts/test_netns_hosts.py``, from
``tests/hosts/layout.py``). Needs root, iproute2, util-linux, PostgreSQL's server binaries,
redis-server and the dev extra (SeaweedFS's ``weed``).

    sudo .venv/bin/python bench/netns_hosts.py up              # API + 2 workers; Ctrl-C ends it
    sudo .venv/bin/python bench/netns_hosts.py up --workers 3 --production-timeouts
    sudo .venv/bin/python bench/netns_hosts.py down            # what a killed `up` left behind

``up`` prints each host's settings, a tenant's key and commands to try (a request from the root
namespace, a shell on a host, killing a host mid-job); it tears everything down on Ctrl-C or
SIGTERM. It writes ``state.json`` in its folder first, so ``down`` can undo a run whose ``up`` was
killed: it removes only the namespaces, bridge, servers and folder that file names.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hosts.layout import (  # noqa: E402
    Cluster,
    down_from_state,
    missing_requirements,
)


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_up(args: argparse.Namespace) -> int:
    if why := missing_requirements():
        print(f"error: {why}", file=sys.stderr)
        return 2
    root = Path(args.root or tempfile.mkdtemp(prefix="lethe-hosts-"))
    cluster = Cluster(root, workers=args.workers, fast_failover=not args.production_timeouts)
    # Both, explicitly: a shell that starts `up` in the background leaves SIGINT ignored.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        print(f"starting in {root} ...", flush=True)
        cluster.up()  # writes root/state.json as it goes, for `down`
        key = cluster.create_tenant(args.tenant)
        _describe(cluster, key)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\ntearing down ...", flush=True)
    finally:
        cluster.down()
        shutil.rmtree(cluster.servers_dir, ignore_errors=True)
        (root / "signing-key.pem").unlink(missing_ok=True)  # a secret, like its copies below
        for host in cluster.hosts.values():
            shutil.rmtree(host.etc, ignore_errors=True)
        print(f"down; logs kept under {root}/hosts/*/*.log")
    return 0


def _describe(cluster: Cluster, key: str) -> None:
    print("\nhosts (each: own netns, hostname, folder; only TCP to the bridge address):")
    print(f"  bridge {cluster.bridge}  {cluster.gateway}/24 (root namespace)")
    assert cluster.pg and cluster.redis and cluster.s3
    print(f"    PostgreSQL {cluster.gateway}:{cluster.pg.port}, Redis :{cluster.redis.port},")
    print(f"    S3 {cluster.s3.endpoint} bucket {cluster.artifact_uri}")
    for host in cluster.hosts.values():
        print(f"  {host.name:<9} {host.ip:<14} netns {host.netns}  folder {host.root}")
    print("\nthe API host's settings (workers: the same, plus LETHE_SIGNING_KEY_PATH):")
    for k, v in cluster.settings_env(cluster.api).items():
        secret = "SECRET" in k and "PATH" not in k
        print(f"  {k}={'<hidden>' if secret else v}")
    worker = cluster.workers[0]
    enter = " ".join(shlex.quote(a) for a in cluster.host_argv(worker, ["bash"]))
    print(f"\ntenant key: {key}\n\ntry:")
    print(f"  export LETHE_URL={cluster.api_url} LETHE_API_KEY={key}")
    print("  .venv/bin/lethe datasets import digits        # from the root namespace, over TCP")
    print(f"  curl -s {cluster.api_url}/readyz")
    print(f"  {enter}    # a shell on {worker.name}")
    print(f"  ip netns pids {worker.netns} | xargs -r kill -9   # {worker.name} loses power")
    print(f"  tail -f {worker.log('worker')}")
    print("\nCtrl-C tears everything down.", flush=True)


def _alive(pid: int) -> bool:
    try:  # a zombie (killed, not yet reaped) is not running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def cmd_down(args: argparse.Namespace) -> int:
    stale = glob.glob(os.path.join(tempfile.gettempdir(), "lethe-hosts-*", "state.json"))
    paths = [args.state] if args.state else stale
    done = 0
    for path in paths:
        state = json.loads(Path(path).read_text())
        owner = int(state.get("owner_pid") or 0)
        if not args.state and owner and _alive(owner):
            print(f"skipping {path}: its `up` (pid {owner}) is still running; Ctrl-C it")
            continue
        down_from_state(state)
        print(f"removed {state.get('root')}")
        done += 1
    if not done:
        print("nothing to remove")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="start the hosts and wait (Ctrl-C tears down)")
    p.add_argument("--workers", type=int, default=2, choices=range(1, 9))
    p.add_argument("--root", help="folder for the hosts' disks and logs (default: a new /tmp one)")
    p.add_argument("--tenant", default="acme", help="the tenant to create (its key is printed)")
    p.add_argument(
        "--production-timeouts",
        action="store_true",
        help="the default heartbeat/sweeper timings (a dead host is noticed after 2 min, not"
        " ~10 s)",
    )
    p.set_defaults(func=cmd_up)
    p = sub.add_parser("down", help="undo a run whose `up` was killed")
    p.add_argument("state", nargs="?", help="its state.json (default: every stale one)")
    p.set_defaults(func=cmd_down)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
