"""Files the package writes: never one of its inputs, never half-written, never left behind.

Every output goes through `atomic`: it is written to a hidden temporary file in the output's own
folder and renamed over the output only when complete, so a failed or stopped run leaves the old
file (or none), never a truncated one. `check` runs before any work: an output that is one of the
inputs (the same file, also through a symbolic or hard link), a folder, or in a folder that cannot
be written is refused with a message naming the option as given. Temporaries and scratch folders
are tracked while they exist, so that `remove_temporaries` (called when a signal stops the run,
analytics/cli.py) can delete them.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from analytics.core.errors import UsageError

_live: set[Path] = set()  # temporaries and scratch folders of the running process
_lock = threading.RLock()  # re-entrant: a signal handler may run while the main thread holds it


# --- Before the work: outputs that would destroy an input or cannot be written ---------------------


def check(outputs: Mapping[str, str | Path | None], inputs: Iterable[str | Path | None], *, folders: Iterable[str] = ()) -> None:
    """Refuse, with a UsageError naming the option, an output that is an input, that is another
    output, that is a folder (unless its option is in `folders`), or whose folder is not writable.

    `outputs` maps how each output was given ("-o out.csv", "the quarantine file") to its path.
    """
    given = {label: Path(path) for label, path in outputs.items() if path is not None}
    read = [Path(p) for p in inputs if p is not None]
    seen: dict[Path, str] = {}
    for label, path in given.items():
        for source in read:
            if _same_file(path, source):
                raise UsageError(f"{_named(label, path)} is also an input ({source}): it would be overwritten; write the output to another file")
        for other_path, other in seen.items():
            if _same_file(path, other_path):
                raise UsageError(f"{_named(label, path)} is also {_named(other, other_path)}: give each output its own file")
        seen[path] = label
    for label, path in given.items():
        _check_writable(label, path, folder_ok=label in set(folders))


def _named(label: str, path: Path) -> str:
    return label if str(path) in label else f"{label} ({path})"


def _same_file(a: Path, b: Path) -> bool:
    """The same file on disk (inode, so also through links), or the same path once resolved."""
    try:
        first, second = a.stat(), b.stat()
    except OSError:
        return a.resolve() == b.resolve()
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def _check_writable(label: str, path: Path, *, folder_ok: bool) -> None:
    if path.is_dir() and not folder_ok:
        raise UsageError(f"{_named(label, path)} is a folder: name a file inside it, e.g. {path / 'output.csv'}")
    if folder_ok and path.exists() and not path.is_dir() and not path.suffix:
        raise UsageError(f"{_named(label, path)} is a file: name a folder")
    folder = path if path.is_dir() else path.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot write {_named(label, path)}: {existing} is a file, not a folder; choose another folder")
    try:  # the one reliable test (permissions, read-only mounts, /proc): create a file there
        handle, probe = tempfile.mkstemp(prefix=".wa-analytics-probe-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        why = f" ({error.strerror})" if error.errno != errno.ENOENT else ""  # ENOENT: /proc and the like
        raise UsageError(f"cannot write {_named(label, path)}: the folder {existing} is not writable{why}; choose another folder") from None


# --- Writing: a temporary beside the output, renamed when complete ---------------------------------


@contextmanager
def atomic(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write into: renamed to `path` when the block ends without
    an exception, removed otherwise (and by `remove_temporaries` when a signal stops the run)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    _track(partial)
    try:
        yield partial
        os.replace(partial, path)
    except OSError as error:
        if partial.name not in str(error):  # an input that could not be read, say: not ours to rename
            raise
        why = error.strerror or str(error).split(":", 1)[0]  # Polars: "<why> (os error N): <the temporary's path>"
        raise UsageError(f"cannot write {path}: {why}; check the folder and its free space, or choose another") from None
    finally:
        _remove(partial)


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """`atomic` for an output that is a folder (Spark's Parquet directory): a temporary folder beside
    `path` to write into, put in place of `path` when the block succeeds (the old folder, if any,
    moved aside first and then removed), removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    old = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old")
    _track(partial)
    _track(old)
    try:
        yield partial
        if path.exists():
            os.replace(path, old)
        os.replace(partial, path)
    finally:
        _remove(partial)
        _remove(old)


@contextmanager
def scratch_folder(prefix: str = "wa-analytics-", folder: str | Path | None = None) -> Iterator[Path]:
    """A temporary folder for intermediate files, removed at the end or when a signal stops the run."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=folder))
    _track(path)
    try:
        yield path
    finally:
        _remove(path)


def _track(path: Path) -> None:
    with _lock:
        _live.add(path)


def _remove(path: Path) -> None:
    with _lock:
        _live.discard(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_temporaries() -> None:
    """Delete every temporary file and scratch folder still open (a signal is stopping the run)."""
    with _lock:
        paths = list(_live)
    for path in paths:
        _remove(path)


# --- CSV files people open: no formulas -------------------------------------------------------------

# OWASP, "CSV Injection": a cell starting with one of these is run as a formula by spreadsheets.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_START = "^[" + "".join(FORMULA_STARTS).replace("-", r"\-") + "]"


def neutralise_formulas(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Text cells starting with `FORMULA_STARTS` prefixed with a single quote, as OWASP advises, so a
    spreadsheet shows them as text instead of running them; numbers (a cost of -1.5) stay numbers."""
    text = [name for name, dtype in frame.collect_schema().items() if dtype == pl.String]
    return frame.with_columns(
        pl.when(pl.col(name).str.contains(_FORMULA_START)).then(pl.lit("'") + pl.col(name)).otherwise(pl.col(name)).alias(name) for name in text
    )
