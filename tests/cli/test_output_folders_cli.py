"""The CLI's output folders: a folder the toolchain did not write is never replaced or emptied, a re-run keeps
the files a user added, and places that cannot hold an output are refused before any work."""

from __future__ import annotations

import pytest

from toolchain.cli import main

FACTORY = """
import torch.nn as nn
def make():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
"""


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("…")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture
def factory(tmp_path):
    (tmp_path / "net.py").write_text(FACTORY)
    return f"{tmp_path}/net.py:make"


def test_prune_never_replaces_a_folder_with_a_foreign_manifest(tmp_path, capsys):
    out = tmp_path / "extension"
    out.mkdir()
    (out / "manifest.json").write_text('{"manifest_version": 3, "name": "ad blocker"}')
    (out / "content.js").write_text("document.body.remove();")
    before = _snapshot(out)
    assert main(["prune", "--model", "zoo:demo", "--out", str(out)]) == 2
    assert "not a toolchain output folder" in _one_error_line(capsys)
    assert _snapshot(out) == before


def test_fit_never_replaces_a_folder_with_a_foreign_predictor_json(tmp_path, capsys):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "predictor.json").write_text("{}")
    (out / "model.pkl").write_bytes(b"\x80\x04 their model")
    before = _snapshot(out)
    assert main(["fit", "--predictor", "macs", "--db", str(tmp_path / "none.db"), "--out", str(out)]) == 2
    assert "not a toolchain output folder" in _one_error_line(capsys)
    assert _snapshot(out) == before


def test_a_rerun_keeps_the_files_a_user_added(tmp_path, capsys, factory):
    out = tmp_path / "dist"
    args = ["prune", "--model", factory, "--input-shape", "1,3,8,8", "--round-to", "2", "--out", str(out)]
    assert main(args) == 0
    (out / "NOTES.md").write_text("tested on the board on Tuesday")
    assert main([*args[:-2], "--ratio", "0.25", "--out", str(out)]) == 0
    assert (out / "NOTES.md").read_text() == "tested on the board on Tuesday"
    assert sorted(p.name for p in out.iterdir()) == ["NOTES.md", "arch.json", "manifest.json", "model.onnx",
                                                     "weights.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dist")], "no temporary folder left"


@pytest.mark.parametrize("out", [".", ".."])
def test_out_as_the_current_folder_is_refused_before_any_work(out, tmp_path, capsys, monkeypatch, factory):
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    assert main(["prune", "--model", factory, "--input-shape", "1,3,8,8", "--out", out]) == 2
    assert "current folder" in _one_error_line(capsys)
    assert _snapshot(tmp_path) == before


def test_an_input_too_large_for_memory_is_one_line(tmp_path, capsys, monkeypatch):
    import torch

    def allocation_fails(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 429496729600 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(torch, "randn", allocation_fails)
    out = tmp_path / "big.onnx"
    assert main(["export", "--model", "zoo:demo", "--input-shape", "1,1,280,280", "--out", str(out)]) == 2
    assert "out of memory" in _one_error_line(capsys)
    assert not out.exists()


def test_export_to_a_read_only_place_is_refused_first(tmp_path, capsys, monkeypatch):
    from toolchain import output_folder

    monkeypatch.setattr(output_folder, "_writable", lambda folder: False)
    assert main(["export", "--model", "zoo:demo", "--out", str(tmp_path / "ro" / "m.onnx")]) == 2
    assert "cannot write into" in _one_error_line(capsys)
    assert not (tmp_path / "ro").exists()
