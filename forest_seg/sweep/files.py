"""Reading and writing an experiment's text files (CSV, JSON) on a local folder or a URI."""

from __future__ import annotations

import io

import pandas as pd


def _filesystem(experiment_path: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(experiment_path)


def read_csv(experiment_path: str, name: str) -> pd.DataFrame | None:
    """``<experiment_path>/<name>`` as a frame (``trial_id`` as text), None when absent."""
    fs, root = _filesystem(experiment_path)
    path = f"{root}/{name}"
    if fs.get_file_info(path).type.name != "File":
        return None
    with fs.open_input_stream(path) as stream:
        return pd.read_csv(io.BytesIO(stream.read()), dtype={"trial_id": str})


def write_csv(experiment_path: str, name: str, frame: pd.DataFrame) -> None:
    """Replace ``<experiment_path>/<name>`` with ``frame`` (written to a temporary file first)."""
    write_text(experiment_path, name, frame.to_csv(index=False))


def write_text(experiment_path: str, name: str, text: str) -> None:
    """Replace ``<experiment_path>/<name>`` with ``text`` (written to a temporary file first)."""
    fs, root = _filesystem(experiment_path)
    fs.create_dir(root, recursive=True)
    tmp = f"{root}/.{name}.tmp"
    with fs.open_output_stream(tmp) as stream:
        stream.write(text.encode())
    fs.move(tmp, f"{root}/{name}")
