"""Where forest-seg keeps generated and decoded data between runs, and how it writes there.

Cache entries are folders built in a private temporary folder beside their final place and
renamed into place when complete (:func:`build_atomically`), so readers never see a
half-written entry. A temporary folder names its writer (host and pid); one whose writer is
no longer alive is removed by the next writer of that cache folder (:func:`remove_dead_temps`).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from forest_seg.errors import ForestSegError

CACHE_ENV = "FOREST_SEG_CACHE"
CACHE_HINT = f"set {CACHE_ENV} to a writable folder with free space (e.g. on a local disk)"
_TEMP = re.compile(r"^\..+\.tmp-(?:(?P<host>[^/]+)-)?(?P<pid>\d+)-[0-9a-f]{32}$")


def writable_dir(path: str | Path, what: str, hint: str, probe: bool = True) -> Path:
    """``path`` as a folder this process can write into, created if missing.

    Raises :class:`ForestSegError` naming ``what`` (e.g. "output folder"), the folder and
    ``hint`` (what to do instead) when it cannot be created or (``probe``: a temporary file
    is made and removed) written, so a read-only cache or output folder ends a CLI with one
    clear line rather than an ``OSError`` traceback.
    """
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        if probe:
            with tempfile.TemporaryFile(dir=path):
                pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ForestSegError(f"{what} {path} is not writable ({reason}); {hint}") from e
    return path


def cache_dir() -> Path:
    """The cache root: ``$FOREST_SEG_CACHE`` if set, else ``~/.cache/forest_seg``.

    The folder is created on first use; raises :class:`ForestSegError` naming it when it
    cannot be. It may be read-only once its entries exist: writers check with
    :func:`build_atomically`. Tests point the variable at a temporary folder.
    """
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "forest_seg")
    return writable_dir(root, "cache folder", CACHE_HINT, probe=False)


def _host() -> str:
    return socket.gethostname().replace("/", "_") or "localhost"


def temp_folder_for(final: Path) -> Path:
    """A fresh temporary folder name beside ``final``, naming this host and pid."""
    return final.parent / f".{final.name}.tmp-{_host()}-{os.getpid()}-{uuid.uuid4().hex}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return False
    return True


def remove_dead_temps(folder: Path) -> list[Path]:
    """Remove the temporary folders in ``folder`` whose writer is dead; returns them.

    Only writers on this host are judged (a shared cache may hold another node's live
    writers); a name without a host is taken to be this host's.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        if not match or (match["host"] or _host()) != _host() or _pid_alive(int(match["pid"])):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


def build_atomically(
    final: Path, build: Callable[[Path], None], complete: Callable[[Path], bool]
) -> Path:
    """Make the cache entry ``final`` with ``build(tmp)`` unless ``complete(final)`` already.

    ``build`` writes a whole entry into the empty folder ``tmp``, which is then renamed to
    ``final``. A concurrent writer that renamed its own entry first wins: ours is dropped. An
    incomplete ``final`` (a damaged entry) must be removed by the caller before. Temporary
    folders of dead writers beside ``final`` are removed first; ours is removed whatever
    happens (a killed process leaves it for the next writer to remove). Raises
    :class:`ForestSegError` naming the folder when it cannot be written (read-only, full).
    """
    if complete(final):
        return final
    writable_dir(final.parent, "cache folder", CACHE_HINT)
    remove_dead_temps(final.parent)
    tmp = temp_folder_for(final)
    try:
        tmp.mkdir()
        build(tmp)
        os.rename(tmp, final)
    except OSError as e:
        if not complete(final):  # not a concurrent writer that won
            raise ForestSegError(f"cannot write the cache entry {final} ({e}); {CACHE_HINT}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def discard(folder: Path) -> None:
    """Remove a damaged cache entry: renamed aside first, so no reader sees it half-deleted."""
    aside = temp_folder_for(folder)
    try:
        os.rename(folder, aside)
    except OSError:
        return  # already gone (another process discarded it)
    shutil.rmtree(aside, ignore_errors=True)
