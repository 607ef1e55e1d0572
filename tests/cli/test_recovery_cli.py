"""Recovery through the CLI: on by default with data, its progress on stderr (never under --quiet/--json), what
it did in the summary and the manifest. Fixed steps keep these runs short and deterministic."""

from __future__ import annotations

import json

from toolchain.cli import main


def test_recovery_shows_its_progress_and_says_what_it_did(tmp_path, capsys):
    out = tmp_path / "pruned"
    assert main(["prune", "--model", "zoo:demo", "--ratio", "0.5", "--finetune-steps", "2", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "recovering: distillation from the dense model (2 steps)" in captured.err
    assert "recovering: fixed number of steps done: calibration accuracy" in captured.err  # the bar's last state
    assert "  recovery: distillation from the dense model, 2 steps in " in captured.out
    recovery = json.loads((out / "manifest.json").read_text())["recovery"]
    assert recovery["ran"] and recovery["mode"] == "steps" and recovery["steps"] == 2


def test_quiet_and_json_runs_recover_silently_and_no_recover_keeps_batchnorm_only(tmp_path, capsys):
    assert main(["prune", "--model", "zoo:demo", "--ratio", "0.5", "--finetune-steps", "2", "--json",
                 "--out", str(tmp_path / "json")]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and json.loads(captured.out)["recovery"]["steps"] == 2
    assert main(["prune", "--model", "zoo:demo", "--ratio", "0.5", "--no-recover", "--quiet",
                 "--out", str(tmp_path / "off")]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "recovery: BatchNorm re-calibration only (turned off" in captured.out
    manifest = json.loads((tmp_path / "off" / "manifest.json").read_text())
    assert not manifest["recovery"]["ran"] and manifest["accuracy"] == manifest["accuracy_after_bn_recalibration"]
