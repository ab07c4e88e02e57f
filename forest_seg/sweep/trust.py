"""Resuming only storage you trust: ``Tuner.restore`` unpickles the experiment's
``tuner.pkl`` (and Ray's experiment state), and unpickling a file can run any code its
writer put there. A local experiment folder owned by another user is therefore refused unless
the user says it is trusted (``--trust-storage``). Storage URIs (``s3://``) carry no owner
the driver can check: whoever can write the bucket is trusted with it."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError


def check_owner(experiment_path: str) -> None:
    """ConfigError unless the local folder ``experiment_path`` and its ``tuner.pkl`` (when
    present) belong to the current user; nothing for a storage URI."""
    if "://" in experiment_path:
        return
    me = os.getuid()
    for path in (Path(experiment_path), Path(experiment_path) / "tuner.pkl"):
        if not path.exists():
            continue
        owner = path.stat().st_uid
        if owner != me:
            raise ConfigError(
                f"--resume: {path} is owned by uid {owner}, not by you (uid {me}); resuming "
                "unpickles Ray's experiment state from it, which can run code: pass "
                "--trust-storage if you trust whoever wrote it")
