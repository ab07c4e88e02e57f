"""Where forest-seg keeps generated and decoded data between runs, and how it writes there.

Cache entries are folders built in a private temporary folder beside their final place and
renamed into place when complete (:func:`build_atomically`), so readers never see a
half-written entry. A temporary folder names its writer (host and pid); one whose writer is
no longer alive is removed by the next writer of that cache folder (:func:`remove_dead_temps`).

A decoded-tile entry (``tiles/<key>/``) holds ``images.npy`` uint8 [N,S,S,3], ``masks.npy``
uint8 [N,S,S] in {0,1}, ``names.json`` and ``manifest.json``: the format version, tile count,
size, a checksum of the names, each array's shape, dtype and byte size, the dataset's mask
convention (a key of :data:`MASK_CONVENTIONS`) and its forest statistics
(:func:`write_tile_manifest`, checked by :func:`tile_entry_problem`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from forest_seg.errors import ForestSegError

CACHE_ENV = "FOREST_SEG_CACHE"
TILE_CACHE_VERSION = 2  # bump when the decoded arrays change: 2 = per-dataset mask convention
MANIFEST = "manifest.json"
MASK_CONVENTIONS = {"0/255": "forest where grey > 127", "0/1": "forest where grey >= 1"}
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


# --------------------------------------------------------------------------- tile entries
def _names_checksum(names: Sequence[str]) -> str:
    """SHA-256 of the names as JSON text."""
    return hashlib.sha256(json.dumps(list(names)).encode()).hexdigest()


def write_tile_manifest(folder: Path, names: Sequence[str], size: int, **stats: object) -> None:
    """Write ``names.json`` and, last, ``manifest.json`` of the tile entry in ``folder``
    (whose ``images.npy`` and ``masks.npy`` are complete); ``stats`` (``mask_convention``,
    ``max_mask_grey``, ``forest_fraction``) are recorded as given."""
    (folder / "names.json").write_text(json.dumps(list(names)))
    manifest = {
        "version": TILE_CACHE_VERSION, "tiles": len(names), "size": size,
        "names_sha256": _names_checksum(names), **stats,
        "arrays": {name: _array_info(folder / f"{name}.npy") for name in ("images", "masks")},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))


def _array_info(path: Path) -> dict:
    """Shape, dtype and byte size of a ``.npy`` file (the header only is read)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(f)
    return {"shape": list(shape), "dtype": str(dtype), "bytes": path.stat().st_size}


def tile_entry_problem(folder: Path, names: Sequence[str], size: int) -> str | None:
    """Why the tile cache entry ``folder`` cannot serve the tiles ``names`` at ``size``
    (missing, or not matching its manifest or the expected arrays), or None when it can."""
    if not folder.exists():
        return "missing"
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        stored = json.loads((folder / "names.json").read_text())
        arrays = {name: _array_info(folder / f"{name}.npy") for name in ("images", "masks")}
    except (OSError, ValueError) as e:
        return f"unreadable: {e}"
    n = len(names)
    expected = {
        "version": TILE_CACHE_VERSION, "tiles": n, "size": size,
        "names_sha256": _names_checksum(names),
        "arrays": {
            "images": {"shape": [n, size, size, 3], "dtype": "uint8"},
            "masks": {"shape": [n, size, size], "dtype": "uint8"},
        },
    }
    if not isinstance(manifest, dict):
        return f"{MANIFEST} is not a JSON object"
    for key in ("version", "tiles", "size", "names_sha256"):
        if manifest.get(key) != expected[key]:
            return f"{MANIFEST} {key} is {manifest.get(key)!r}, expected {expected[key]!r}"
    if manifest.get("mask_convention") not in tuple(MASK_CONVENTIONS):
        return f"{MANIFEST} mask_convention is {manifest.get('mask_convention')!r}"
    if not isinstance(stored, list) or _names_checksum(stored) != manifest["names_sha256"]:
        return "names.json does not match the manifest"
    for name, info in arrays.items():
        recorded = manifest.get("arrays")
        recorded = recorded.get(name) if isinstance(recorded, dict) else None
        if not isinstance(recorded, dict):
            return f"{MANIFEST} does not describe {name}.npy"
        wanted = {**recorded, **expected["arrays"][name]}
        for field, value in info.items():
            if value != wanted.get(field):
                return f"{name}.npy {field} is {value}, expected {wanted.get(field)}"
    return None
