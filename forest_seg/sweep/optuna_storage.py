"""Where an Optuna experiment keeps its study: the driver's ``--study-storage`` URL, or by
default the SQLite file ``optuna.db`` in the experiment folder; the study is named like the
experiment. Imports no Ray, so the analysis can find the study too."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError
from .config_file import SWEEP_FILE

STUDY_FILE = "optuna.db"


def study_storage(experiment_path: str, given: str | None) -> str | None:
    """``given``, else ``sqlite:///<experiment_path>/optuna.db`` for a local experiment folder
    (created here), else None: the study then lives in memory and in Ray's searcher state."""
    if given or "://" in experiment_path:
        return given
    folder = Path(experiment_path)
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder.resolve() / STUDY_FILE}"


def open_storage(url: str):
    """Optuna's RDBStorage at ``url``; ConfigError naming the URL when it cannot be opened."""
    import optuna

    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # SQLAlchemy raises several types for a bad URL
        raise ConfigError(f"invalid --study-storage {url!r}: {exc}") from None


def load_study(experiment: str | Path):
    """The Optuna study an experiment of ``sweeps/optuna_search.py`` recorded (the storage its
    sweep.json names, else its optuna.db), or None when neither is there."""
    import optuna

    experiment = Path(experiment)
    settings = experiment / SWEEP_FILE
    url = json.loads(settings.read_text()).get("study_storage") if settings.is_file() else None
    if url is None:
        if not (experiment / STUDY_FILE).is_file():
            return None
        url = f"sqlite:///{(experiment / STUDY_FILE).resolve()}"
    try:
        return optuna.load_study(study_name=experiment.name, storage=open_storage(url))
    except KeyError:  # Optuna's error for a study name the storage does not hold
        return None
