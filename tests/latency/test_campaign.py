"""Profiling campaigns: rows as planned, resumable after SIGKILL with nothing lost or duplicated."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolchain.errors import ToolchainError
from toolchain.latency.campaign import MIN_JOBS_FOR_BUILD_WORKERS, CampaignConfig, layer_grid, run_campaign
from toolchain.latency.features import LayerSpec
from toolchain.latency.measure import MeasureConfig
from toolchain.latency.sampling import sample_width_configs
from toolchain.latency.store import MeasurementStore

TINY = str(Path(__file__).with_name("tiny_model.py")) + ":factory"
TINY_SHAPE = (1, 3, 16, 16)
QUICK = MeasureConfig(warmup_runs=1, timed_runs=3, max_attempts=1, min_timed_ms=0.0)  # a quick timing, no span


def _count_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=1) as connection:
            return connection.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_campaign_stores_model_single_op_and_noise_rows(tmp_path):
    config = CampaignConfig(
        model=TINY,
        input_shape=TINY_SHAPE,
        db_path=str(tmp_path / "m.db"),
        samples=6,
        layer_levels=2,
        noise_configs=1,
        noise_replicates=2,
        measure=QUICK,
    )
    report = run_campaign(config)
    assert report.failed == [] and report.measured == report.planned
    with MeasurementStore(config.db_path) as store:
        rows = store.rows(model=TINY)
        assert len(rows) == 6 + 2
        assert rows[0].sample_tag == "dense" and rows[0].widths == {"stem": 16, "conv1": 24}
        assert all(r.median_ms > 0 and r.fingerprint["threads"] == 1 for r in rows)
        assert {r.replicate for r in rows if r.sample_tag == "noise"} == {1, 2}
        assert len(store.rows(model=TINY, kind="layer")) > 0
        assert {g[0] for g in store.groups(TINY, (1, 3, 16, 16))} == {"stem", "conv1"}
    again = run_campaign(config)
    assert again.measured == 0 and again.skipped == report.planned


def test_variants_built_in_worker_processes_give_the_rows_built_here(tmp_path):
    rows = {}
    for workers in (1, 2):
        config = CampaignConfig(model=TINY, input_shape=TINY_SHAPE, db_path=str(tmp_path / f"w{workers}.db"),
                                samples=MIN_JOBS_FOR_BUILD_WORKERS, layer_levels=2, build_workers=workers,
                                measure=QUICK)
        report = run_campaign(config)
        assert report.failed == [] and report.measured == report.planned and report.build_workers == workers
        with MeasurementStore(config.db_path) as store:
            rows[workers] = {r.config_key: (r.kind, r.layers, r.macs)
                             for kind in ("model", "layer") for r in store.rows(kind=kind)}
    assert len(rows[2]) > MIN_JOBS_FOR_BUILD_WORKERS and rows[2] == rows[1]


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sampled_widths_cover_small_and_aligned_configurations():
    class Group:
        def __init__(self, name, dense_width):
            self.name, self.dense_width, self.unit = name, dense_width, 1

    groups = [Group(f"g{i}", 256) for i in range(6)]
    configs = sample_width_configs(groups, 64, seed=1, min_ratio=0.1)
    assert configs == sample_width_configs(groups, 80, seed=1, min_ratio=0.1)[:64]  # prefix-stable
    all_widths = [w for c in configs for w in c.widths.values()]
    assert min(all_widths) <= 40 and max(all_widths) == 256 and min(all_widths) >= 16
    aligned = [c for c in configs if "aligned" in c.tag]
    assert 0.3 < len(aligned) / len(configs) < 0.7
    assert all(w % int(c.tag.split("aligned")[1]) == 0 for c in aligned for w in c.widths.values())


def test_single_op_grid_keeps_model_input_and_output_channels():
    layers = [LayerSpec("conv", 3, 16, 3, 1, 1, 8, 8, 8, 8), LayerSpec("linear", 16, 10, 1, 1, 1, 1, 1, 1, 1)]
    grid = layer_grid(layers, input_channels=3, levels=3)
    assert {(s.in_channels) for s in grid if s.op == "conv"} == {3}
    assert {(s.out_channels) for s in grid if s.op == "linear"} == {10}
    assert len(grid) == 3 + 3


def test_campaign_refuses_a_database_from_another_machine(tmp_path):
    config = CampaignConfig(
        model=TINY, input_shape=TINY_SHAPE, db_path=str(tmp_path / "m.db"), samples=2, measure=QUICK
    )
    run_campaign(config)
    with sqlite3.connect(config.db_path) as connection:
        connection.execute("UPDATE measurements SET fingerprint_id = 'elsewhere'")
    with pytest.raises(ToolchainError, match="another machine"):
        run_campaign(config)


@pytest.mark.slow
def test_campaign_killed_with_sigkill_resumes_without_loss_or_duplicates(tmp_path):
    db = tmp_path / "m.db"
    command = [
        sys.executable,
        "-m",
        "toolchain.commands.profile",
        "--model",
        TINY,
        "--input-shape",
        "1,3,16,16",
        "--samples",
        "60",  # 42 distinct configurations: enough for the build workers (MIN_JOBS_FOR_BUILD_WORKERS)
        "--db",
        str(db),
        "--warmup",
        "1",
        "--runs",
        "3",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _count_rows(db) < 5 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    workers = _children(process.pid)  # the processes building variants (onnxruntime compiles to bytes)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    rows_before = _count_rows(db)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers and not any(_alive(pid) for pid in workers), "build workers outlived the killed campaign"
    assert 5 <= rows_before < 30, "the campaign should have been killed part-way"
    with MeasurementStore(db) as store:
        kept = {r.config_key: r.median_ms for r in store.rows()}

    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    summary = json.loads(finished.stdout.strip().splitlines()[-1])
    assert summary["already_stored"] == rows_before and summary["failed"] == 0
    with MeasurementStore(db) as store:
        rows = store.rows()
        keys = [r.config_key for r in rows]
        assert len(rows) == summary["planned"] == rows_before + summary["measured"]
        assert len(set(keys)) == len(keys)
        assert all(r.median_ms == kept[r.config_key] for r in rows if r.config_key in kept)


def test_thread_cpu_clock_is_refused_where_work_leaves_the_timing_thread(tmp_path):
    config = CampaignConfig(
        model=TINY,
        input_shape=TINY_SHAPE,
        db_path=str(tmp_path / "m.db"),
        threads=2,
        measure=MeasureConfig(clock="thread_cpu"),
    )
    with pytest.raises(ToolchainError, match="thread_cpu needs the cpu target with --threads 1"):
        run_campaign(config)


def test_an_interrupted_campaign_loses_at_most_the_chunk_it_was_timing(tmp_path, monkeypatch):
    """What the store's and the campaign's docstrings promise: every finished chunk is stored."""
    from toolchain.latency import campaign

    chunks = []

    def interrupted_on_the_third_chunk(sentinel, runners, measure_config):
        chunks.append(len(runners))
        if len(chunks) == 3:
            raise KeyboardInterrupt
        return real_time_chunk(sentinel, runners, measure_config)

    real_time_chunk = campaign.time_chunk
    monkeypatch.setattr(campaign, "time_chunk", interrupted_on_the_third_chunk)
    config = CampaignConfig(model=TINY, input_shape=TINY_SHAPE, db_path=str(tmp_path / "m.db"), samples=12,
                            interleave=3, build_workers=1, quiet_tolerance=1e9, measure=QUICK)
    with pytest.raises(KeyboardInterrupt):
        run_campaign(config)
    assert _count_rows(tmp_path / "m.db") == sum(chunks[:2]) and chunks[2] <= config.interleave


def test_campaign_feeds_named_token_inputs(tmp_path):
    """Variants of a token-input model are built, exported and timed with every named input at its dtype."""
    from toolchain.inputs import InputSpec, specs_key

    token_model = str(Path(__file__).with_name("token_model.py")) + ":factory"
    key = specs_key((InputSpec("input_ids", "int64", (1, 8)), InputSpec("attention_mask", "int64", (1, 8))))
    config = CampaignConfig(model=token_model, input_shape=key, db_path=str(tmp_path / "m.db"), samples=3,
                            build_workers=1, measure=QUICK)
    report = run_campaign(config)
    assert report.failed == [] and report.measured == report.planned == 3
    with MeasurementStore(config.db_path) as store:
        rows = store.rows(model=token_model)
        assert {tuple(r.input_shape) for r in rows} == {key} and all(r.batch == 1 for r in rows)
        assert {g[0] for g in store.groups(token_model, key)} == {"fc1"}
