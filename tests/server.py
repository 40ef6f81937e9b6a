"""A real uvicorn server in a subprocess, started the way users start it (`griddispatch serve`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, data_dir: Path, name: str = "server", **settings: Any) -> None:
        self.data_dir = data_dir
        self.name = name
        self.port = free_port()
        self.env = {
            **os.environ,
            "GRIDDISPATCH_DATA_DIR": str(data_dir),
            "GRIDDISPATCH_PORT": str(self.port),
            # Test servers deliver webhooks to loopback only, whatever URL a test (or schemathesis) registers.
            "GRIDDISPATCH_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1,localhost",
            **{f"GRIDDISPATCH_{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / f"{name}.log"  # several processes may share one data_dir

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/events"

    def start(self, timeout: float = 60) -> ServerProcess:
        return self.launch().wait_ready(timeout)

    def launch(self) -> ServerProcess:
        """Start the process without waiting (to start several at once)."""
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dispatch.cli", "serve"],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        return self

    def wait_ready(self, timeout: float = 60) -> ServerProcess:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready:\n" + self.log.read_text()[-3000:])

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushing; what was committed must survive."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Api:
    """A tiny client: one token per demo login."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url + "/api/v1", timeout=30)
        self.tokens: dict[str, str] = {}

    def token(self, user: str) -> str:
        if user not in self.tokens:
            r = self.http.post("/auth/token", data={"username": user, "password": "demo1234"})
            r.raise_for_status()
            self.tokens[user] = r.json()["access_token"]
        return self.tokens[user]

    def headers(self, user: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}", **extra}

    def report(self, user: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        extra = {"Idempotency-Key": key} if key else {}
        return self.http.post("/reports", json=body, headers=self.headers(user, **extra))

    def act(self, user: str, incident_id: str, action: str, **kw: Any) -> httpx.Response:
        return self.http.post(
            f"/incidents/{incident_id}/actions", json={"action": action, **kw}, headers=self.headers(user)
        )

    def get(self, user: str, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params, headers=self.headers(user))
