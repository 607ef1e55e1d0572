"""Our import names never shadow another installed distribution's.

A top-level `kernels` package of ours once hid Hugging Face's `kernels`, which transformers >= 5.25 imports
on `import transformers.models...` (every transformers model failed with "cannot import name
'CUDAProperties' from 'kernels'"); a script run from `benchmarks/` puts that folder first on sys.path, so
its module names must not clash either.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = {"toolchain"}


def _installed_import_names() -> dict[str, list[str]]:
    return {name: dists for name, dists in importlib.metadata.packages_distributions().items()
            if set(dists) - OURS}


def test_repository_top_level_packages_are_only_ours():
    # Folders with Python files at the root are importable from a checkout (regular or namespace packages).
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".") and any(p.glob("*.py"))}
    assert {"toolchain", "benchmarks", "tests"} <= packages
    clashes = {name: dists for name, dists in _installed_import_names().items() if name in packages}
    assert not clashes, f"repository packages shadow installed distributions: {clashes}"


def test_benchmark_scripts_do_not_shadow_installed_packages():
    installed = _installed_import_names()
    clashes = {p.stem: installed[p.stem] for p in (ROOT / "benchmarks").glob("*.py") if p.stem in installed}
    assert not clashes, f"benchmarks/ modules shadow installed packages when run as scripts: {clashes}"


def test_the_check_sees_a_clash():
    assert "numpy" in _installed_import_names()  # the check can fail: numpy's import name is listed
