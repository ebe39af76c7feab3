"""Progress on the terminal: which stage a long command is in, and how far (buckets, files,
notebooks, scenarios).

Stages are marked where the work is done (`with stage("Billing", total=buckets, unit="buckets")`)
and cost nothing unless a display is shown: `wa-analytics` shows one (`shown`) when stderr is a
terminal and --quiet was not given; library use (the Python API, notebooks) shows nothing unless it
asks. Updates come per stage, bucket, file, notebook or scenario, never per row, each drawn at once
(so every stage shows, however short); in between rich redraws `REFRESHES_PER_SECOND` times a
second from its own thread, for the spinner and the elapsed time.

The display is rich's `Progress`, transient (erased when the stage ends: only the run's summary
lines stay on the terminal) and live only while a stage runs. It writes to a duplicate of
descriptor 2 taken when it is set up, so that `report`, which points descriptor 2 at its notebook
kernels' log for a while, sends the kernels' noise there and not the display. While it is live,
lines printed on sys.stderr (or on sys.stdout, when that is the same terminal) go above it,
unchanged. `abandon` erases it and shows the cursor again when a signal ends the process
(analytics/cli.py `stop_on_signals`), without waiting for the thread that draws it.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO, TypeVar

T = TypeVar("T")

REFRESHES_PER_SECOND = 4
SHOW_CURSOR = "\x1b[?25h"


class Step:
    """A stage being run: `advance` it as its units (buckets, files, ...) are done."""

    def advance(self, amount: int = 1) -> None:
        """`amount` more units done."""

    def describe(self, description: str) -> None:
        """Say what the stage is doing now, e.g. which scenario or notebook."""

    def track(self, items: Iterable[T]) -> Iterator[T]:
        """The items, advancing the stage after each one is done with."""
        for item in items:
            yield item
            self.advance()


_display: _Display | None = None  # the display `shown` set up, if any
_NOT_SHOWN = Step()  # what a stage is when no display is shown: every update does nothing


@contextmanager
def stage(description: str, total: int | None = None, unit: str = "") -> Iterator[Step]:
    """Mark a stage of the work (a line on the display, with a bar when `total` units are known);
    nothing at all unless a display is `shown`."""
    display = _display
    if display is None:
        yield _NOT_SHOWN
        return
    with display.stage(description, total, unit) as step:
        yield step


def track(items: Sequence[T], description: str, *, unit: str, label: Callable[[T], str] | None = None) -> Iterator[T]:
    """The items, as one stage advanced after each (`for scenario in track(scenarios, "Scenarios",
    unit="scenarios", label=...)`), the display naming the current one by `label`."""
    with stage(description, total=len(items), unit=unit) as step:
        for item in items:
            if label is not None:
                step.describe(f"{description}: {label(item)}")
            yield item
            step.advance()


@contextmanager
def shown(enabled: bool = True) -> Iterator[None]:
    """Show the stages run inside the block on stderr, if `enabled` and stderr is an interactive
    terminal (never in a pipe, a file or CI's log: they get exactly the lines they got without it)."""
    global _display
    if not enabled or _display is not None or not _interactive(2):
        yield
        return
    _display = _Display()
    try:
        yield
    finally:
        display, _display = _display, None
        display.close()


def abandon() -> None:
    """Erase the display and show the cursor, at once: a signal is ending the process (the thread
    that draws it is given half a second to finish a frame, then never draws again)."""
    display = _display
    if display is not None:
        display.abandon()


def _interactive(fd: int) -> bool:
    return os.isatty(fd) and os.environ.get("TERM", "") not in ("dumb", "unknown")


def _identity(fd: int) -> tuple[int, int, int] | None:
    try:
        status = os.fstat(fd)
    except OSError:
        return None
    return (status.st_dev, status.st_ino, status.st_rdev)


class _Display:
    """rich's Progress on a duplicate of descriptor 2, live while any stage runs."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.fd = os.dup(2)
        self.terminal = _identity(self.fd)
        encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
        self.console = Console(file=io.TextIOWrapper(io.FileIO(self.fd, "w", closefd=False), encoding=encoding, errors="replace"))
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[done]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            redirect_stdout=False,  # rich's own redirect would also catch what `report` sends to its kernels' log
            redirect_stderr=False,
            refresh_per_second=REFRESHES_PER_SECOND,
        )
        self.running = 0
        self.saved: tuple[TextIO, TextIO] | None = None

    @contextmanager
    def stage(self, description: str, total: int | None, unit: str) -> Iterator[Step]:
        task = self.progress.add_task(description, total=total, done=_done(0, total, unit))
        if self.running == 0:
            self._start()  # drawn at once
        else:
            self.progress.refresh()
        self.running += 1
        try:
            yield _ShownStep(self.progress, task, total, unit)
        finally:
            self.running -= 1
            self.progress.remove_task(task)
            if self.running == 0:
                self._stop()

    def _start(self) -> None:
        self.saved = (sys.stdout, sys.stderr)
        sys.stdout = _Above(sys.stdout, 1, self)  # type: ignore[assignment]
        sys.stderr = _Above(sys.stderr, 2, self)  # type: ignore[assignment]
        self.progress.start()

    def _stop(self) -> None:
        self.progress.stop()
        if self.saved is not None:
            for proxy in (sys.stdout, sys.stderr):
                if isinstance(proxy, _Above):
                    proxy.flush_pending()
            sys.stdout, sys.stderr = self.saved
            self.saved = None

    def close(self) -> None:
        if self.running:
            self._stop()
        self.console.file.flush()
        os.close(self.fd)

    def abandon(self) -> None:
        live = self.progress.live
        if not live.is_started:
            return
        drawing = getattr(live, "_lock", None)
        if drawing is not None:
            drawing.acquire(timeout=0.5)  # never released: the process is ending
        try:
            erase = str(live._live_render.position_cursor())
        except AttributeError:  # rich's internals moved: erase the last line at least
            erase = "\r\x1b[2K"
        try:
            os.write(self.fd, (erase + SHOW_CURSOR).encode())
        except OSError:
            pass


class _ShownStep(Step):
    def __init__(self, progress: object, task: object, total: int | None, unit: str) -> None:
        self.progress, self.task, self.total, self.unit, self.completed = progress, task, total, unit, 0

    def advance(self, amount: int = 1) -> None:
        self.completed += amount
        self.progress.update(self.task, completed=self.completed, done=_done(self.completed, self.total, self.unit), refresh=True)  # type: ignore[attr-defined]

    def describe(self, description: str) -> None:
        self.progress.update(self.task, description=description, refresh=True)  # type: ignore[attr-defined]


def _done(completed: int, total: int | None, unit: str) -> str:
    return f"{completed:,}/{total:,} {unit}".rstrip() if total is not None else ""


class _Above(io.TextIOBase):
    """sys.stdout or sys.stderr while the display is live: whole lines printed above it, unchanged,
    when the stream's descriptor is the display's terminal; written as usual when it is not (a
    pipe, a file, or the kernels' log `report` points descriptor 2 at for a while)."""

    def __init__(self, stream: TextIO, fd: int, display: _Display) -> None:
        self.stream, self.fd, self.display, self.pending = stream, fd, display, ""

    def write(self, text: str) -> int:
        if _identity(self.fd) != self.display.terminal:
            return self.stream.write(text)
        lines, newline, self.pending = (self.pending + text).rpartition("\n")
        if newline:
            self.display.console.out(lines, highlight=False)
        return len(text)

    def flush_pending(self) -> None:
        if self.pending:
            self.stream.write(self.pending)
            self.pending = ""

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding
