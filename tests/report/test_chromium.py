"""The report opened in headless Chromium (Debian's `chromium`): it renders, logs no console messages, and its
screenshot is not blank. Chromium is installed through apt-get when missing; the tests skip, saying why, only when
that fails."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from toolchain.report import build_report

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0")


def _find() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def chromium() -> str:
    if _find() is None:
        if shutil.which("apt-get") is None:
            pytest.skip("chromium is not installed and there is no apt-get to install it")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "chromium"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
            result = subprocess.run(install, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                pytest.skip(f"chromium is not installed and apt-get could not install it: {result.stderr[-300:]}")
    binary = _find()
    if binary is None:
        pytest.skip("apt-get installed chromium but no chromium binary is on PATH")
    return binary


def open_page(chromium: str, page: Path, workdir: Path, *command: str) -> tuple[str, list[str]]:
    """Run headless Chromium on `page` with `command` (--dump-dom or --screenshot: without one it never exits);
    its stdout and the console messages it logged."""
    workdir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([chromium, *FLAGS, f"--user-data-dir={workdir / 'profile'}", *command, page.as_uri()],
                            capture_output=True, text=True, timeout=60, cwd=workdir,
                            env={**os.environ, "HOME": str(workdir)})
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, [line for line in result.stderr.splitlines() if ":CONSOLE" in line]


def test_console_messages_are_caught(chromium: str, tmp_path: Path):
    """The check below can fail: a page that logs an error is seen."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><script>console.error("report-test-error")</script></body></html>')
    _, console = open_page(chromium, page, tmp_path / "chromium", "--dump-dom")
    assert any("report-test-error" in line for line in console)


def test_report_renders_without_console_errors(chromium: str, full_report, tmp_path: Path):
    _, result = full_report
    dom, console = open_page(chromium, result.html_path, tmp_path / "chromium", "--dump-dom")
    assert console == []
    for heading in ("Devices and software", "Latency-budget sweep", "Latency predictor quality",
                    "Sparse kernel benchmarks", "Deploy bundles"):
        assert heading in dom
    assert dom.count("<img ") == len(result.image_paths)


def test_report_screenshot_is_not_blank(chromium: str, full_report, tmp_path: Path):
    import matplotlib.image

    _, result = full_report
    shot = tmp_path / "screenshot.png"
    open_page(chromium, result.html_path, tmp_path / "chromium", "--window-size=1280,2000", f"--screenshot={shot}")
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    not_white = (pixels < 0.95).any(axis=-1).mean()
    assert pixels.std() > 0.05 and not_white > 0.05, (pixels.std(), not_white)


def test_partial_report_renders(chromium: str, partial_run: Path, tmp_path: Path):
    result = build_report([partial_run], tmp_path / "out")
    dom, console = open_page(chromium, result.html_path, tmp_path / "chromium", "--dump-dom")
    assert console == [] and "Missing: budget sweep results" in dom
