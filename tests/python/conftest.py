"""Runs the real memd binary on free loopback ports and points AWS's client libraries at it
only through the standard environment variables, exactly as a user would:

    AWS_ENDPOINT_URL_BEDROCK_AGENTCORE          the data plane
    AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL  the control plane
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY   a memd API key (id / whole key)
    AWS_REGION

./dev.sh test runs these with MEMD_BIN and MEMCTL_BIN set to the binaries it built.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

ADMIN_KEY = "python-tests-admin-key"
REGION = "eu-west-1"


def _binary(var: str, name: str) -> str:
    path = os.environ.get(var)
    if path:
        return path
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/memd/target"))
    candidate = Path(target) / "debug" / name
    if not candidate.exists():
        pytest.exit(f"{name} not built: run ./dev.sh test (or set {var})", returncode=2)
    return str(candidate)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Key:
    key_id: str
    secret: str


class Memd:
    """A memd process with its own data directory; restartable on the same ports."""

    def __init__(self, extra_env: dict[str, str] | None = None, metrics: bool = False):
        self.data_dir = tempfile.mkdtemp(prefix="memd-py-")
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.metrics_port = free_port() if metrics else None
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def grpc(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        env = dict(os.environ, MEMD_ADMIN_KEY=ADMIN_KEY, **self.extra_env)
        self.process = subprocess.Popen(
            [
                _binary("MEMD_BIN", "memd"),
                "--listen", f"127.0.0.1:{self.grpc_port}",
                "--http-listen", f"127.0.0.1:{self.http_port}",
                "--metrics-listen", f"127.0.0.1:{self.metrics_port}" if self.metrics_port else "off",
                "--log-format", "json",
                "--data-dir", self.data_dir,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def drain(stream):
            for line in stream:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=drain, args=(self.process.stderr,), daemon=True).start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError("memd exited before serving")
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("fields", {}).get("message") == "memd serving":
                return
        raise RuntimeError("memd did not start within 60 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def memctl(self, *args: str) -> str:
        result = subprocess.run(
            [_binary("MEMCTL_BIN", "memctl"), "--endpoint", self.grpc, "--api-key", ADMIN_KEY, *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout

    def create_key(self, *, memories="*", actors="*", namespaces="*", actions=("read", "write", "admin")) -> Key:
        args = ["keys", "create", "--json", f"key-{time.monotonic_ns()}"]
        for flag, values in (("--memory", memories), ("--actor", actors), ("--namespace", namespaces)):
            for value in [values] if isinstance(values, str) else values:
                args += [flag, value]
        for action in actions:
            args += ["--action", action]
        created = json.loads(self.memctl(*args))
        return Key(created["keyId"], created["secret"])

    def environment(self, key: Key | None) -> dict[str, str]:
        env = {
            "AWS_ENDPOINT_URL_BEDROCK_AGENTCORE": self.http,
            "AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL": self.http,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
        }
        if key:
            env["AWS_ACCESS_KEY_ID"] = key.key_id
            env["AWS_SECRET_ACCESS_KEY"] = key.secret
        return env


@pytest.fixture(autouse=True)
def _no_aws_config(monkeypatch):
    """Nothing from the machine's own AWS set-up (profiles, instance metadata) leaks in."""
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    # boto3's default session keeps the credentials it resolved first; each test starts
    # with a new one so that it sees its own environment (a new process would).
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


@pytest.fixture(scope="session")
def memd():
    server = Memd()
    yield server
    server.close()


@pytest.fixture(scope="session")
def admin_key(memd) -> Key:
    return memd.create_key()


@pytest.fixture
def aws_env(memd, admin_key, monkeypatch):
    """The environment of an agent pointed at memd with an all-powerful key."""
    for name, value in memd.environment(admin_key).items():
        monkeypatch.setenv(name, value)
    return admin_key


@pytest.fixture
def data(aws_env):
    return boto3.client("bedrock-agentcore")


@pytest.fixture
def control(aws_env):
    return boto3.client("bedrock-agentcore-control")


def wait_for(check, timeout=60.0, interval=0.2):
    """Polls `check` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def unique(prefix: str) -> str:
    return f"{prefix}{time.monotonic_ns() % 10**12}"
