"""Experiment tracking: MLflow end to end against a real local tracking server; the flags and
the one-line error when a tracker's package is missing."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from forest_seg.errors import ConfigError
from forest_seg.sweep import Launch, Study, preset_config, run
from forest_seg.sweep.tracking import check_tracking, mlflow_uri, tracking_callbacks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real MLflow tracking server on 127.0.0.1 with a sqlite store in tmp_path, stopped
    after the test; its URI."""
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--default-artifact-root", str(tmp_path / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):  # at most two minutes to come up on a loaded machine
            if server.poll() is not None:
                pytest.fail(f"mlflow server exited: {server.stderr.read().decode()[-2000:]}")
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not answer within two minutes")
        yield uri
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.slow
def test_every_trial_is_an_mlflow_run_with_params_and_per_epoch_metrics(mlflow_server,
                                                                       tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    base = preset_config("smoke", epochs=2)
    run(Study(base=base, trials=[{"points": 10, "seed": 0}, {"points": 50, "seed": 0}],
              scheduler=None, driver="grid"),
        Launch(storage_path=str(tmp_path / "runs"), name="tracked", tracking="mlflow",
               mlflow_uri=mlflow_server))
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.params["points"] for r in runs) == ["10", "50"]
    for r in runs:
        assert r.data.params["lr"] == str(base.lr) and r.info.run_name.startswith("p")
        history = client.get_metric_history(r.info.run_id, "val_miou")
        assert sorted(m.step for m in history) == [1, 2]  # one value per epoch
        assert all(0 <= m.value <= 1 for m in history)


def test_default_mlflow_uri_is_a_local_mlruns_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert mlflow_uri(None) == (tmp_path / "mlruns").resolve().as_uri()
    assert mlflow_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_a_missing_tracker_package_is_one_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"--tracking wandb needs the wandb package.*"
                                          r"forest-seg-sweeps\[wandb\]"):
        Launch(tracking="wandb")
    with pytest.raises(ConfigError, match="invalid --tracking 'tensorboard'"):
        check_tracking("tensorboard")
    assert tracking_callbacks("none", "x") == []


def test_tracking_flags_reach_the_launch():
    from forest_seg.sweep.flags import build_parser, launch_from_args

    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    args = build_parser("t", "").parse_args(["--tracking", "mlflow", "--mlflow-uri", "x"])
    launch = launch_from_args(args)
    assert (launch.tracking, launch.mlflow_uri) == ("mlflow", "x")
