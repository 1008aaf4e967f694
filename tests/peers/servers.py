"""Start camera servers (camera-pod, the aiortc baseline) on free loopback
ports, wait until they are ready, read their CPU and memory use from /proc,
and stop them by PID."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/p2pcamera/target"))
ORT_LIBRARY = Path.home() / ".cache/p2pcamera/onnxruntime-1.32.0/libonnxruntime.so.1.32.0"
BASELINE_SERVER = REPO / "tests/baseline/server.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def camera_pod_binary(profile: str = "debug") -> Path:
    """The camera-pod binary: $P2PCAMERA_CAMERA_POD_BIN, else the cargo target dir."""
    override = os.environ.get("P2PCAMERA_CAMERA_POD_BIN")
    return Path(override) if override else TARGET_DIR / profile / "camera-pod"


_HANDED_OUT: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _is_free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_loopback_port() -> int:
    """A port on 127.0.0.1, free for TCP and UDP, drawn from below the kernel's ephemeral range
    and not handed out before by this process. A port from bind(0) comes from the ephemeral range,
    where any outgoing connection (Chromium's, a server dialling itself) can take it before the
    child the port is meant for binds it; below that range only listeners take ports."""
    end = _ephemeral_start()
    start = 16384 if end >= 16384 + 4096 else max(1024, end - 4096)
    for _ in range(200):
        port = random.randrange(start, max(end, start + 1))
        if port not in _HANDED_OUT and _is_free(port):
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError(f"no free loopback port in {start}..{end}")


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


@dataclass
class ProcessUsage:
    cpu_seconds: float  # user + system time so far
    peak_rss_bytes: int  # VmHWM


def process_usage(pid: int) -> ProcessUsage:
    """CPU time (utime + stime from /proc/<pid>/stat) and peak RSS (VmHWM) of a live process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu_seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return ProcessUsage(cpu_seconds, peak)


class ServerProcess:
    """A camera server child process on 127.0.0.1:port, stopped by PID."""

    def __init__(self, name: str, argv: list[str], port: int, ready_path: str,
                 env: dict[str, str] | None = None, log_path: Path | None = None) -> None:
        self.name, self.argv, self.port, self.ready_path = name, argv, port, ready_path
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path or Path(os.environ.get("TMPDIR", "/tmp")) / f"p2pcamera-{name}-{port}.log"
        self._env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, ready_timeout: float = 120.0) -> "ServerProcess":
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                        env=self._env, cwd=REPO)
        log.close()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if http_status(self.base_url + self.ready_path) == 200:
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} not ready within {ready_timeout} s:\n{self.log_tail()}")

    def usage(self) -> ProcessUsage:
        return process_usage(self.pid)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def camera_pod(filter_name: str, profile: str = "debug", token: str | None = None,
               extra_args: list[str] | None = None) -> ServerProcess:
    """camera-pod with plain HTTP on a free loopback port (not started yet)."""
    binary = camera_pod_binary(profile)
    if not binary.exists():
        raise FileNotFoundError(
            f"{binary} is missing: build it with "
            "CARGO_TARGET_DIR=$HOME/.cache/p2pcamera/target cargo build --workspace"
            + (" --release" if profile == "release" else "")
        )
    port = free_loopback_port()
    argv = [str(binary), "--listen", f"127.0.0.1:{port}", "--filter", filter_name, "--plain-http"]
    if token is not None:
        argv += ["--token", token]
    argv += extra_args or []
    env = {"RUST_LOG": os.environ.get("RUST_LOG", "info")}
    if "P2PCAMERA_ONNXRUNTIME_LIB" not in os.environ:
        env["P2PCAMERA_ONNXRUNTIME_LIB"] = str(ORT_LIBRARY)
    label = re.sub(r"[^A-Za-z0-9]+", "-", filter_name).strip("-")
    return ServerProcess(f"camera-pod-{label}", argv, port, "/readyz", env)


def baseline_server(token: str | None = None) -> ServerProcess:
    """The aiortc passthrough server (tests/baseline) on a free loopback port (not started yet)."""
    port = free_loopback_port()
    argv = [sys.executable, str(BASELINE_SERVER), "--listen", f"127.0.0.1:{port}"]
    if token is not None:
        argv += ["--token", token]
    return ServerProcess("baseline", argv, port, "/healthz")
