"""A real MLflow tracking server for the tests: `mlflow server` with a SQLite store and a
local artifact folder, on 127.0.0.1 at a free port, read back through its REST API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MlflowServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> None:
        command = [
            str(Path(sys.executable).with_name("mlflow")), "server",
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        log = open(self.root / "server.log", "wb")  # noqa: SIM115 (the server's lifetime)
        # A session of its own: stopping it by its pid reaches the workers it starts.
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError((self.root / "server.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server not up after {timeout} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def get(self, path: str, **query: Any) -> dict[str, Any]:
        url = f"{self.uri}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=30) as reply:
            return json.load(reply)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.uri}/api/2.0/mlflow/{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.load(reply)

    def runs_of(self, experiment: str) -> list[dict[str, Any]]:
        """The runs of the experiment named `experiment`."""
        found = self.get("experiments/get-by-name", experiment_name=experiment)
        body = {"experiment_ids": [found["experiment"]["experiment_id"]], "max_results": 100}
        return self.post("runs/search", body).get("runs", [])

    def history(self, run_id: str) -> dict[str, list[tuple[int, float]]]:
        """Every metric of the run: its (step, value) pairs, by step."""
        run = self.get("runs/get", run_id=run_id)["run"]
        keys = [metric["key"] for metric in run["data"].get("metrics", [])]
        return {
            key: sorted(
                (int(m.get("step", 0)), m["value"])
                for m in self.get(
                    "metrics/get-history", run_id=run_id, metric_key=key, max_results=25000
                )["metrics"]
            )
            for key in keys
        }

    def artifacts(self, run_id: str) -> list[str]:
        files = self.get("artifacts/list", run_id=run_id).get("files", [])
        return sorted(f["path"] for f in files)
