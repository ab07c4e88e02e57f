"""Shared entry-point wrapper: bad input ends with one clear stderr line, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from .errors import ForestSegError

EXIT_BAD_INPUT = 2


def run_cli(main: Callable[[], int]) -> int:
    """Run ``main()``; a ForestSegError prints ``error: <message>`` and returns exit status 2."""
    try:
        return main()
    except ForestSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
