"""At most ``Launch.max_concurrent`` trials of a sweep at once, whatever its searcher.

Ray Tune applies ``TuneConfig(max_concurrent_trials=N)`` only to a searcher it builds itself or
to a :class:`ray.tune.search.Searcher` (which it wraps in a ``ConcurrencyLimiter``): a
``BasicVariantGenerator`` instance (a grid's explicit trials, PBT's seeded population) is a
search algorithm, and Ray ignores the limit for it with a log line. :func:`limit_concurrency`
applies the limit to each kind: a generator's own ``max_concurrent``, Ray's
``ConcurrencyLimiter`` around a Searcher (e.g. ``OptunaSearch``).

Both count the trials a searcher has handed out and not seen finish, so a paused trial holds its
place. Population Based Training needs its whole population live (it pauses members to share
the resources), so a limit below the population is refused instead of splitting the
population into groups that never exploit each other.
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import ConfigError


def limit_concurrency(search: Any, max_concurrent: int | None, scheduler: Any = None,
                      samples: int | None = None) -> Any:
    """``search`` (a Ray Tune searcher, or None for random sampling) limited to
    ``max_concurrent`` live trials; unchanged when ``max_concurrent`` is None.

    ``scheduler`` and ``samples`` are the sweep's: a Population Based Training scheduler with
    more ``samples`` than ``max_concurrent`` is a ConfigError, as is a searcher that already
    carries another limit or that cannot be limited.
    """
    if max_concurrent is None:
        return search
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher

    if isinstance(scheduler, PopulationBasedTraining) and (samples or 0) > max_concurrent:
        raise ConfigError(
            f"invalid --max-concurrent {max_concurrent} for a population of {samples}: "
            "Population Based Training trains its whole population together (Ray pauses "
            "members to share the resources); give --max-concurrent >= the population, or "
            "fewer resources per trial with --cpus-per-trial / --gpus-per-trial")
    if search is None:
        return BasicVariantGenerator(max_concurrent=max_concurrent)
    if isinstance(search, BasicVariantGenerator):
        limited = copy.copy(search)  # the caller's generator keeps its own setting
        limited.max_concurrent = max_concurrent  # its constructor argument, read per trial
        return limited
    if isinstance(search, ConcurrencyLimiter):
        if search.max_concurrent != max_concurrent:
            raise ConfigError(
                f"invalid --max-concurrent {max_concurrent}: the searcher is already a "
                f"ConcurrencyLimiter of {search.max_concurrent}; give one limit")
        return search
    if isinstance(search, Searcher):
        return ConcurrencyLimiter(search, max_concurrent=max_concurrent)
    raise ConfigError(f"invalid --max-concurrent {max_concurrent}: a {type(search).__name__} "
                      "cannot be limited; pass a ray.tune.search.Searcher or a "
                      "BasicVariantGenerator")
