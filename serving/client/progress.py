"""objrec-predict's progress on stderr (rich), beside its results on stdout."""

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def wanted(mode: str, results_on_terminal: bool) -> bool:
    """`on`; or `auto` when stderr is a terminal and the results are not being shown there
    (each result row is progress enough on a terminal)."""
    return mode == "on" or (mode == "auto" and sys.stderr.isatty() and not results_on_terminal)


@contextlib.contextmanager
def progress_bar(total: int, description: str, shown: bool) -> Iterator[Callable[[int], None]]:
    """Yields `advance(count)`; a bar with counts and time left on stderr when `shown`."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=Console(stderr=True), disable=not shown) as progress:
        task = progress.add_task(description, total=total)
        yield lambda count: progress.advance(task, count)
