"""Fixtures: camera-pod processes on free loopback ports, stopped by PID after each test."""

from __future__ import annotations

import os

import pytest

import servers

# The build the tests drive: `debug` (default) or `release`.
PROFILE = os.environ.get("P2PCAMERA_PROFILE", "debug")


@pytest.fixture
def start_camera_pod():
    """Starts camera-pod with a filter (plain HTTP on 127.0.0.1) and waits for /readyz;
    every server started is stopped at teardown, and its log tail printed (shown on failure)."""
    started: list[servers.ServerProcess] = []

    def start(filter_name: str, token: str | None = None, extra_args: list[str] | None = None):
        server = servers.camera_pod(filter_name, PROFILE, token, extra_args)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
        print(f"--- {server.name} log ({server.log_path}) ---\n{server.log_tail()}")
