"""A local run's progress on stderr: files read, decoded, rejected, duplicate and written.

Beam's counters reach the launcher only when the in-process runner finishes, so the display
reads this process's own copy of them (`metrics.local_counts`) twice a second.
"""

import contextlib
import sys
import threading
from collections.abc import Iterator

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from preprocessing import metrics

REFRESH_SECONDS = 0.5


def wanted(mode: str, local_run: bool) -> bool:
    """`on`, or `auto` with stderr a terminal; only a run in this process can be shown."""
    return local_run and (mode == "on" or (mode == "auto" and sys.stderr.isatty()))


def describe(counts: dict[str, int]) -> str:
    """`read 120 · decoded 118 · rejected 2 · duplicates 1 · written 117`."""

    def total(prefix: str) -> int:
        return sum(value for name, value in counts.items() if name.startswith(prefix))

    parts = {
        "read": counts.get(metrics.INPUTS_READ, 0),
        "decoded": counts.get(metrics.IMAGES_DECODED, 0),
        "rejected": total(metrics.rejected_counter("")),
        "duplicates": counts.get(metrics.DUPLICATES, 0),
        "written": total(metrics.written_counter("")),
    }
    return " · ".join(f"{name} {value}" for name, value in parts.items())


@contextlib.contextmanager
def local_progress(shown: bool) -> Iterator[None]:
    """Shows the counts while the block runs (when `shown`), and their final values after."""
    if not shown:
        yield
        return
    metrics.reset_local_counts()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as display:
        task = display.add_task(describe({}), total=None)
        stop = threading.Event()

        def refresh() -> None:
            while not stop.wait(REFRESH_SECONDS):
                display.update(task, description=describe(metrics.local_counts()))

        thread = threading.Thread(target=refresh, name="preprocess-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            display.update(task, description=describe(metrics.local_counts()), total=1, completed=1)
