"""Output folders the toolchain may replace: proved its own by a stamp, and never losing a file it did not write.

A folder counts as the toolchain's own only when its marker file (`manifest.json`, `sparsify.json` or
`predictor.json`) carries the stamp `{"written_by": "toolchain", "toolchain_version": ..., "written_files": [...]}`
that only this module writes. A file merely *named* like a marker proves nothing: a browser extension has a
`manifest.json` too. Even in a stamped folder only the files listed in the stamp are replaced or removed;
anything else in it (a user's notes) is kept byte for byte.

>>> with atomic_folder(Path("dist/demo"), marker="manifest.json") as tmp:   # doctest: +SKIP
...     write_json(tmp / "manifest.json", manifest)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from toolchain.errors import ToolchainError

WRITTEN_BY = "toolchain"
# Files that can carry the stamp (one per kind of output: pruned folder/bundle, sparsify, predictor artifact).
MARKER_FILES = ("manifest.json", "sparsify.json", "predictor.json")
# Temporary folders of a run killed before this version named them by pid are removed once this old.
LEGACY_TMP_AGE_S = 24 * 3600


def toolchain_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("toolchain")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def stamp(files: list[str]) -> dict:
    """The fields that mark a marker file as written by the toolchain, with the files it wrote."""
    return {"written_by": WRITTEN_BY, "toolchain_version": toolchain_version(), "written_files": sorted(files)}


def stamp_of(marker_path: Path) -> dict:
    """The stamp fields of a marker file just written by `atomic_folder` (to report them with the manifest)."""
    document = json.loads(Path(marker_path).read_text())
    return {key: document[key] for key in ("written_by", "toolchain_version", "written_files")}


# Outputs written before the stamp existed: recognised by fields their marker always had, and only when the
# folder holds nothing but the files such an output has, so that replacing it can lose nothing else.
_LEGACY_OUTPUTS = {
    "manifest.json": (lambda doc: "toolchain_version" in doc and "per_group_widths" in doc,
                      re.compile(r"^(model\.onnx|arch\.json|weights\.safetensors|manifest\.json|README\.md|"
                                 r"build_engine\.sh|run\.py|calib\.cache|model\.[A-Za-z0-9_-]+\.so)$")),
    "predictor.json": (lambda doc: isinstance(doc.get("meta"), dict) and "artifact_version" in doc["meta"],
                       re.compile(r"^(predictor\.json|weights\.safetensors)$")),
    "sparsify.json": (lambda doc: "replaced_layers" in doc and "pattern" in doc,
                      re.compile(r"^(sparsify\.json|masked\.safetensors)$")),
}


def _legacy_owned(folder: Path, marker: str, document: dict) -> set[str] | None:
    recognised, file_names = _LEGACY_OUTPUTS[marker]
    names = {p.name for p in folder.iterdir()}
    if recognised(document) and all(file_names.match(name) for name in names):
        return names
    return None


def owned_files(folder: Path) -> set[str] | None:
    """The names the toolchain wrote into `folder` (by its stamp), or None when the folder is not its own."""
    for name in MARKER_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            document = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(document, dict):
            continue
        if "written_by" not in document:
            legacy = _legacy_owned(folder, name, document)
            if legacy is not None:
                return legacy
        if document.get("written_by") != WRITTEN_BY:
            continue
        files = document.get("written_files")
        if isinstance(files, list) and all(isinstance(f, str) and "/" not in f and f not in ("", ".", "..")
                                           for f in files):
            return set(files) | {name}
    return None


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable(folder: Path) -> bool:
    """Whether files can be created in `folder` (False on a read-only filesystem too: access(2) says EROFS)."""
    return os.access(folder, os.W_OK | os.X_OK)


def check_output_folder(out: Path) -> None:
    """Refuse an `--out` the toolchain must not or cannot write, before any slow work starts."""
    out = Path(out)
    resolved = out.resolve()
    if resolved == resolved.parent or resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise ToolchainError(f"--out {out} is the current folder or one above it; name a new folder to write into")
    if out.exists() and not out.is_dir():
        raise ToolchainError(f"--out {out} exists and is not a folder; choose another path")
    if out.is_dir() and os.path.ismount(out):
        raise ToolchainError(f"--out {out} is a mount point; name a folder inside it")
    if out.is_dir() and any(out.iterdir()) and owned_files(out) is None:
        raise ToolchainError(f"--out {out} exists and is not a toolchain output folder (no toolchain stamp in a "
                             f"{' / '.join(MARKER_FILES)}); choose another path")
    check_writable(out)


def check_writable(out: Path) -> None:
    """Refuse an `--out` folder whose files could not be created (read-only filesystem, no permission)."""
    out = Path(out)
    for folder in ([out] if out.is_dir() else []) + [_nearest_existing(out.resolve().parent)]:
        if not _writable(folder):
            raise ToolchainError(f"--out {out}: cannot write into {folder} (read-only or no permission)")


# mkdtemp's names: `.NAME.PID.` + 8 of [a-z0-9_] + `.tmp`/`.old`; before pids were recorded, `.NAME.` + 8 + `.tmp`.
_TMP_NAME = r"^\.{name}\.(?:(?P<pid>\d+)\.[a-z0-9_]{{8}}\.(?:tmp|old)|[a-z0-9_]{{8}}\.tmp)$"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Remove hidden `.NAME.PID.xxxx.tmp` / `.old` folders next to `out` left by a killed run of the toolchain.

    Only folders named by this module's pattern; one whose process still runs is kept (another run in progress).
    Unnamed by a pid (older versions): removed once a day old.
    """
    out = Path(out)
    pattern = re.compile(_TMP_NAME.format(name=re.escape(out.name)))
    removed = []
    if not out.parent.is_dir():
        return removed
    for path in out.parent.iterdir():
        match = pattern.match(path.name)
        if match is None or not path.is_dir() or path.is_symlink():
            continue
        pid = match.group("pid")
        try:
            stale = (not _pid_alive(int(pid)) if pid is not None
                     else time.time() - path.stat().st_mtime > LEGACY_TMP_AGE_S)
        except OSError:
            continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _temporary(out: Path, suffix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=suffix, dir=out.parent))


def _make_readable(folder: Path) -> None:
    """mkdtemp (and some writers) create owner-only files; an output folder is meant to be shared."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        wanted = (0o777 if path.is_dir() else 0o666 | (path.stat().st_mode & 0o111)) & ~umask
        path.chmod(path.stat().st_mode | wanted)


def _stamp_marker(tmp: Path, marker: str) -> None:
    path = tmp / marker
    if not path.is_file():
        raise ToolchainError(f"internal: {marker} was not written into the output folder")
    document = json.loads(path.read_text())
    document.update(stamp([p.name for p in tmp.iterdir()]))
    path.write_text(json.dumps(document, indent=1) + "\n")


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace the toolchain's own files of `out` with those of `tmp`; files it did not write stay put."""
    previous = owned_files(out) or set()
    new = {p.name for p in tmp.iterdir()}
    foreign = {p.name for p in out.iterdir()} - previous
    if not foreign:  # the whole folder is ours: one rename, readers never see a mix
        old = _temporary(out, ".old")
        os.replace(out, old / "previous")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    clashes = sorted(foreign & new)
    if clashes:
        raise ToolchainError(f"--out {out} holds {clashes[0]}, which the toolchain did not write and would "
                             "overwrite; move it away and run again")
    old = _temporary(out, ".old")
    try:
        for name in sorted(previous - foreign):
            if (out / name).exists() or (out / name).is_symlink():
                os.replace(out / name, old / name)
        for name in sorted(new):
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_folder(out: Path, marker: str = "manifest.json"):
    """Yield a temporary folder next to `out`; on success its files replace the toolchain's own in `out`.

    The body must write `marker` (a JSON object); it is stamped with the toolchain's name, version and the
    files written. An existing `out` is only touched when its stamp proves it the toolchain's, and then only
    the files that stamp lists: a wrong `--out` never destroys a user's data.
    """
    out = Path(out)
    check_output_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    tmp = _temporary(out, ".tmp")
    try:
        yield tmp
        _stamp_marker(tmp, marker)
        _make_readable(tmp)
        check_output_folder(out)  # still ours (nobody replaced it while the work ran)
        if out.is_dir():
            _swap_in(tmp, out)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, payload: dict) -> None:
    """Write JSON through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)
