"""The tile cache heals: damaged entries are rebuilt with one warning, dead writers' temporary
folders are removed, and unwritable cache folders give one clear error."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from forest_seg import cache, data, synthetic
from forest_seg import tiles as tile_files
from forest_seg.cache import CACHE_ENV, cache_dir, remove_dead_temps, writable_dir
from forest_seg.data import load_tiles
from forest_seg.errors import ForestSegError

pytestmark = pytest.mark.usefixtures("own_cache")  # each test owns its cache folder


@pytest.fixture
def root(tmp_path) -> Path:
    return synthetic.make_synthetic_dataset(tmp_path / "d", n=5, size=32, seed=2)


def entry(root: Path) -> Path:
    """The cache folder of ``root`` at 32 px (decoding it first)."""
    folder = Path(load_tiles(root, 32).images.filename).parent
    tile_files._TILE_CACHE.clear()  # the next load_tiles acts as a new process
    return folder


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def damage_truncate_images(folder: Path) -> None:
    path = folder / "images.npy"
    path.write_bytes(path.read_bytes()[:1000])


def damage_names_missing(folder: Path) -> None:
    (folder / "names.json").unlink()


def damage_names_fewer(folder: Path) -> None:
    names = json.loads((folder / "names.json").read_text())
    (folder / "names.json").write_text(json.dumps(names[:2]))


def damage_manifest_convention(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["mask_convention"] = "0/7"
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage", [damage_truncate_images, damage_names_missing,
                                    damage_names_fewer, damage_manifest_convention])
def test_a_damaged_entry_is_rebuilt_with_one_warning(root, damage, capsys):
    good = load_tiles(root, 32)
    images, masks, names = np.array(good.images), np.array(good.masks), good.names
    folder = entry(root)
    damage(folder)
    capsys.readouterr()
    tiles = load_tiles(root, 32)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    message = lines[0]
    assert message.startswith("forest-seg: warning: tile cache ")
    assert str(folder) in message and "damaged" in message and "rebuilding" in message
    assert Path(tiles.images.filename).parent == folder
    np.testing.assert_array_equal(tiles.images, images)
    np.testing.assert_array_equal(tiles.masks, masks)
    assert tiles.names == names
    tile_files._TILE_CACHE.clear()
    load_tiles(root, 32)
    assert capsys.readouterr().err == ""  # healed: no warning the next time
    assert not [p for p in folder.parent.iterdir() if ".tmp-" in p.name]


def test_tile_entry_problem_names_the_damage(root):
    folder = entry(root)
    names = data.load_tiles(root, 32).names
    assert cache.tile_entry_problem(folder, names, 32) is None
    assert "tiles" in cache.tile_entry_problem(folder, names[:3], 32)
    assert "size" in cache.tile_entry_problem(folder, names, 16)
    damage_truncate_images(folder)
    assert "images.npy" in cache.tile_entry_problem(folder, names, 32)
    assert cache.tile_entry_problem(folder.parent / "nothing", names, 32) == "missing"


def test_a_dead_writers_temp_folder_is_removed(root, own_cache):
    tiles = cache_dir() / "tiles"
    tiles.mkdir(parents=True)
    host = cache._host()
    dead = tiles / f".abc.tmp-{host}-{dead_pid()}-{uuid.uuid4().hex}"
    legacy = tiles / f".abc.tmp-{dead_pid()}-{uuid.uuid4().hex}"  # no host: this host
    alive = tiles / f".abc.tmp-{host}-{os.getpid()}-{uuid.uuid4().hex}"
    elsewhere = tiles / f".abc.tmp-other-node-{dead_pid()}-{uuid.uuid4().hex}"
    for folder in (dead, legacy, alive, elsewhere):
        folder.mkdir()
        (folder / "images.npy").write_bytes(b"half written")
    load_tiles(root, 32)
    assert not dead.exists() and not legacy.exists()
    assert alive.exists() and elsewhere.exists()  # a live writer, another node's writer
    assert remove_dead_temps(tiles) == []


def test_synthetic_default_root_removes_dead_temps_too(monkeypatch):
    final = cache_dir() / "synthetic-n3-s16-seed0"
    dead = final.parent / f".{final.name}.tmp-{cache._host()}-{dead_pid()}-{uuid.uuid4().hex}"
    dead.mkdir(parents=True)
    assert synthetic.default_synthetic_root(n=3, size=16, seed=0) == final
    assert (final / "meta_data.csv").is_file() and not dead.exists()


@pytest.mark.parametrize("where", ["cache", "tiles"])
def test_an_unwritable_cache_folder_is_one_clear_error(root, tmp_path, monkeypatch, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    if where == "cache":  # the cache root itself cannot be made
        monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
        folder = blocker / "cache"
    else:  # the cache root is fine, its tiles/ folder is not
        monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
        (tmp_path / "c").mkdir()
        (tmp_path / "c" / "tiles").write_text("not a folder")
        folder = tmp_path / "c" / "tiles"
    with pytest.raises(ForestSegError) as e:
        load_tiles(root, 32)
    message = str(e.value)
    assert str(folder) in message and "not writable" in message and CACHE_ENV in message


def test_writable_dir_names_what_and_hint(tmp_path):
    assert writable_dir(tmp_path / "new" / "out", "output folder", "use --out") == (
        tmp_path / "new" / "out")
    (tmp_path / "f").write_text("")
    with pytest.raises(ForestSegError, match=r"output folder .*f/out is not writable.*use --out"):
        writable_dir(tmp_path / "f" / "out", "output folder", "use --out")


def test_a_read_only_cache_serves_its_entries_and_refuses_new_ones(root, tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    folder = entry(root)  # populated while writable
    monkeypatch.setattr(cache.tempfile, "TemporaryFile", read_only)  # then mounted read-only
    assert Path(load_tiles(root, 32).images.filename).parent == folder
    with pytest.raises(ForestSegError) as e:
        load_tiles(root, 16)  # a new entry must be written
    message = str(e.value)
    assert f"cache folder {folder.parent} is not writable (Permission denied)" in message
    assert CACHE_ENV in message


def test_a_failed_write_is_one_clear_error_and_leaves_no_temp(root, monkeypatch):
    def disk_full(folder, *args):
        (folder / "images.npy").write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tile_files, "_decode_into", disk_full)
    with pytest.raises(ForestSegError, match="No space left on device.*FOREST_SEG_CACHE") as e:
        load_tiles(root, 32)
    assert "cannot write the cache entry" in str(e.value)
    assert [p.name for p in (cache_dir() / "tiles").iterdir()] == []
