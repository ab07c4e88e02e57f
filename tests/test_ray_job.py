"""A sweep submitted as a Ray job (`ray job submit -- python sweeps/grid.py ...`) to a running
Ray cluster: a local `ray start --head` on 127.0.0.1, started and stopped by the test."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    """A Ray head node on 127.0.0.1 with the jobs API (ray[default]), stopped after the test:
    (dashboard URL, environment to call ray with)."""
    pytest.importorskip("aiohttp", reason="the jobs API needs ray[default] (the cluster extra)")
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # Ray's socket paths must stay short
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # token authentication, with a token of the test's own (never the user's ~/.ray one)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    dashboard = free_port()
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(free_port()), "--dashboard-host", "127.0.0.1",
         "--dashboard-port", str(dashboard), "--include-dashboard", "true", "--num-cpus", "2",
         # every port of its own: a default one another Ray on the machine holds would leave
         # the head without its job agent
         *(arg for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                            "--metrics-export-port", "--runtime-env-agent-port")
           for arg in (flag, str(free_port()))),
         "--temp-dir", temp, "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        for _ in range(360):  # at most three minutes on a loaded machine
            if head.poll() is not None:
                pytest.fail(f"ray start failed: {head.stderr.read().decode()[-2000:]}")
            try:
                urllib.request.urlopen(f"{url}/api/version", timeout=1)
                break
            except urllib.error.HTTPError:  # it answers (401 until given Ray's auth token)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the Ray head's jobs API did not answer within three minutes")
        yield url, env
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_a_sweep_runs_as_a_ray_job_on_a_running_cluster(ray_head, tmp_path):
    url, env = ray_head
    for _ in range(20):  # the head's job agent comes up a little after its dashboard
        done = subprocess.run(
            [RAY, "job", "submit", "--address", url, "--working-dir", str(ROOT), "--",
             "python", "sweeps/grid.py", "--smoke-test", "--storage-path", str(tmp_path),
             "--name", "job"],
            capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
        log = done.stdout + done.stderr
        if "No available agent" not in log:
            break
        time.sleep(5)
    assert done.returncode == 0, log[-4000:]
    assert "joining the Ray cluster at" in log  # it joined, with no start-up options
    results = pd.read_csv(tmp_path / "job" / "results.csv")
    assert sorted(results["points"]) == [0, 10, 50]
    assert set(results["status"]) <= {"COMPLETED", "EARLY_STOPPED"}
