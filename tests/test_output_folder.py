"""Output folders: replaced only when the toolchain's stamp proves them its own, and never losing a file it did
not write; refused before any work when they cannot be written; temporaries of killed runs cleaned up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolchain.errors import ToolchainError
from toolchain.output_folder import atomic_folder, check_output_folder, remove_stale_temporaries, write_json


def _write_output(out: Path, files: dict[str, str], marker: str = "manifest.json") -> None:
    with atomic_folder(out, marker=marker) as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text)
        write_json(tmp / marker, {"model": "zoo:demo"})


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("marker", ["manifest.json", "predictor.json", "sparsify.json"])
def test_a_folder_that_merely_holds_a_marker_name_is_not_replaced(tmp_path, marker):
    out = tmp_path / "extension"
    out.mkdir()
    (out / marker).write_text('{"manifest_version": 3, "name": "my browser extension"}')
    (out / "background.js").write_text("chrome.runtime.onInstalled.addListener(() => {});")
    before = _snapshot(out)
    with pytest.raises(ToolchainError, match="not a toolchain output folder"):
        _write_output(out, {"model.onnx": "new"}, marker)
    assert _snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["extension"], "no temporary folder left behind"


def test_a_stamped_folder_is_replaced_but_files_the_toolchain_did_not_write_are_kept(tmp_path):
    out = tmp_path / "dist"
    _write_output(out, {"model.onnx": "first", "old-only.txt": "from the first run"})
    stamp = json.loads((out / "manifest.json").read_text())
    assert stamp["written_by"] == "toolchain" and "toolchain_version" in stamp
    (out / "notes.md").write_bytes(b"my notes \x00\xff")
    _write_output(out, {"model.onnx": "second"})
    assert (out / "notes.md").read_bytes() == b"my notes \x00\xff"
    assert (out / "model.onnx").read_text() == "second"
    assert not (out / "old-only.txt").exists(), "the toolchain's own file of the earlier run is replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist"]


def test_a_foreign_file_the_new_output_would_overwrite_is_refused(tmp_path):
    out = tmp_path / "dist"
    _write_output(out, {"model.onnx": "first"})
    (out / "README.md").write_text("mine")
    with pytest.raises(ToolchainError, match="holds README.md, which the toolchain did not write"):
        _write_output(out, {"README.md": "generated"})
    assert (out / "README.md").read_text() == "mine" and (out / "model.onnx").read_text() == "first"


@pytest.mark.parametrize("out", [".", ".."])
def test_out_as_the_current_folder_is_refused(out, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ToolchainError, match="current folder"):
        check_output_folder(Path(out))


def test_a_mount_point_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "mnt"
    out.mkdir()
    monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == out)
    with pytest.raises(ToolchainError, match="is a mount point"):
        check_output_folder(out)


def test_a_read_only_parent_is_refused(tmp_path, monkeypatch):
    from toolchain import output_folder

    monkeypatch.setattr(output_folder, "_writable", lambda folder: Path(folder) != tmp_path)
    with pytest.raises(ToolchainError, match="cannot write into"):
        check_output_folder(tmp_path / "new" / "out")


def test_stale_temporaries_of_killed_runs_are_removed_and_live_ones_kept(tmp_path):
    out = tmp_path / "dist"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stale = tmp_path / f".dist.{dead.pid}.abc123_x.tmp"
        stale_old = tmp_path / f".dist.{dead.pid}.abc123_y.old"
        running = tmp_path / f".dist.{alive.pid}.def456_y.tmp"
        legacy = tmp_path / ".dist.k2j3h4g5.tmp"
        other = tmp_path / f".other.{dead.pid}.abc123_x.tmp"
        users_own = tmp_path / ".dist.backup.old"  # a user's hidden folder: never the toolchain's to remove
        for folder in (stale, stale_old, running, legacy, other, users_own):
            folder.mkdir()
        day_old = time.time() - 2 * 24 * 3600
        for folder in (legacy, users_own):
            os.utime(folder, (day_old, day_old))
        assert sorted(remove_stale_temporaries(out)) == sorted([stale, stale_old, legacy])
        assert running.is_dir() and other.is_dir() and users_own.is_dir()
    finally:
        alive.kill()
        alive.wait()


def test_a_report_folder_on_a_read_only_place_is_refused_first(tmp_path, monkeypatch):
    from toolchain import output_folder
    from toolchain.report import build_report

    monkeypatch.setattr(output_folder, "_writable", lambda folder: False)
    with pytest.raises(ToolchainError, match="cannot write into"):
        build_report([tmp_path / "does-not-matter"], tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_an_output_of_a_version_before_the_stamp_is_replaced_only_when_it_holds_nothing_else(tmp_path):
    legacy = tmp_path / "dist"
    legacy.mkdir()
    (legacy / "manifest.json").write_text(json.dumps({"toolchain_version": "0.1", "per_group_widths": {}}))
    (legacy / "model.onnx").write_text("old")
    _write_output(legacy, {"model.onnx": "new"})
    assert (legacy / "model.onnx").read_text() == "new"

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "manifest.json").write_text(json.dumps({"toolchain_version": "0.1", "per_group_widths": {}}))
    (mixed / "photo.jpg").write_bytes(b"\xff\xd8 not the toolchain's")
    before = _snapshot(mixed)
    with pytest.raises(ToolchainError, match="not a toolchain output folder"):
        _write_output(mixed, {"model.onnx": "new"})
    assert _snapshot(mixed) == before
