"""How a sweep driver ends: the closing table and an exit status that tells the truth.

Every driver (``sweeps/*.py``) ends with ``return finish(run(study, launch))`` and is run
by :func:`sweep_cli`:

- 0 only when every trial ``COMPLETED``, was ``EARLY_STOPPED`` by the scheduler or
  ``DIVERGED``; :data:`EXIT_TRIALS_FAILED` (1) when some trial ended otherwise (``ERROR``),
  with those trials listed on stderr (trial id, its swept config, its ``error`` message);
- after a graceful stop (:class:`~forest_seg.sweep.stopping.SweepStopped`): one line, e.g.
  ``interrupted: resume with python sweeps/grid.py ... --resume --name NAME``, and 130 after
  SIGINT, 143 after SIGTERM, 1 after a results file could not be written;
- bad input: one ``error:`` line and 2 (:func:`forest_seg.cli.run_cli`).
"""

from __future__ import annotations

import gc
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath

import pandas as pd

from ..cli import run_cli
from ..config import TrainConfig
from .stopping import SweepStopped
from .tables import closing_text

FINISHED = ("COMPLETED", "EARLY_STOPPED", "DIVERGED")  # the statuses of a successful sweep
EXIT_TRIALS_FAILED = 1


def failed_trials(results: pd.DataFrame) -> list[str]:
    """One line per trial of ``results`` whose status is not in :data:`FINISHED`: its id,
    its swept config and, when results.csv has it, its ``error`` message."""
    if results.empty:
        return []
    lines = []
    swept = [c for c in TrainConfig.swept_fields() if c in results.columns]
    for row in results[~results["status"].isin(FINISHED)].to_dict("records"):
        config = " ".join(f"{name}={row[name]}" for name in swept)
        error = row.get("error")
        reason = f": {error}" if isinstance(error, str) and error else ""
        lines.append(f"  {row['trial_id']} ({config}) {row['status']}{reason}")
    return lines


def finish(results: pd.DataFrame) -> int:
    """Print the closing table of ``results`` (a :func:`forest_seg.sweep.run` frame); list
    the trials that failed on stderr; return the driver's exit status."""
    print(closing_text(results), flush=True)
    failed = failed_trials(results)
    if not failed:
        return 0
    print(f"error: {len(failed)} of {len(results)} trials failed:", file=sys.stderr)
    print("\n".join(failed), file=sys.stderr, flush=True)
    return EXIT_TRIALS_FAILED


def resume_command(argv: Sequence[str], name: str) -> str:
    """The command line ``python <argv>`` that resumes experiment ``name``: ``argv`` with
    ``--resume --name NAME`` in place of any ``--resume`` and ``--name`` it had."""
    kept, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
        elif arg == "--name":
            skip = True
        elif arg != "--resume" and not arg.startswith("--name="):
            kept.append(arg)
    return shlex.join(["python", argv[0], *kept, "--resume", "--name", name])


def sweep_cli(main: Callable[[], int]) -> int:
    """Run a driver's ``main()`` like :func:`forest_seg.cli.run_cli`; a sweep stopped early
    prints why and how to resume it, and returns its exit status.

    Before it returns, every object the driver made is frozen out of the garbage collector
    (``gc.freeze``): the interpreter's last collection, on exit, would otherwise walk them all
    (torch, pandas, Ray Tune: over a second on 2 cores) to free memory the exit frees anyway.
    """
    try:
        return run_cli(main)
    except SweepStopped as stopped:
        hint = "nothing to resume (no experiment was started)"
        if stopped.experiment is not None:
            name = PurePosixPath(stopped.experiment).name
            hint = f"resume with {resume_command(sys.argv, name)}"
        print(f"{stopped.request.reason}: {hint}", file=sys.stderr, flush=True)
        return stopped.request.exit_status
    finally:
        gc.freeze()
