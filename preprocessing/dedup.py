"""Exact duplicates: which of several files with the same content is kept (pure functions).

Memory follows unique contents, not rows: a file listed many times (a manifest's repeated
row) is read once and stands for all of its rows (`times`), and the copies of one content are
walked twice, first for the keeper and the labels, then to log each other copy, so nothing
holds the list of copies.
"""

import dataclasses
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from objrec import contract
from preprocessing import report
from preprocessing.sources import SourceFile

LABEL_CONFLICT = "label_conflict"
# Which copy is kept when the input names splits: the held-out one, so that an image never
# seen in training stays where it was put (test before validation before train); a copy
# whose split the input does not name comes last.
KEEP_ORDER = (contract.TEST, contract.VALIDATION, contract.TRAIN, None)
# A label conflict's message names this many of the files, then counts the rest.
NAMED_IN_CONFLICT = 5


class Copy(NamedTuple):
    """One listed file with a given content, and how many input rows list it."""

    source: SourceFile
    times: int


def keep_order(member: SourceFile) -> tuple[int, str]:
    """Sort key of the copies of one content: the first one is kept."""
    return KEEP_ORDER.index(member.split), member.uri


@dataclasses.dataclass(frozen=True)
class Survey:
    """One pass over the copies of a content, in memory bounded by the number of labels."""

    keeper: SourceFile
    labels: tuple[str, ...]
    rows: int
    named: tuple[str, ...]  # the smallest URIs, for a conflict's message


def survey(copies: Iterable[Copy]) -> Survey:
    keeper, labels, rows, named = None, set(), 0, []
    for source, times in copies:
        if keeper is None or keep_order(source) < keep_order(keeper):
            keeper = source
        labels.add(source.label)
        rows += times
        named = sorted({*named, source.uri})[:NAMED_IN_CONFLICT]
    return Survey(keeper, tuple(sorted(labels)), rows, tuple(named))


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The fate of `times` rows listing `source`: kept (`entry` None, one row), duplicates or
    rejections (their log entry, the same for each of those rows)."""

    kind: str  # KEPT, DUPLICATE or REJECTED
    source: SourceFile
    entry: dict | None = None
    times: int = 1


KEPT, DUPLICATE, REJECTED = "kept", "duplicate", "rejected"


def resolve_same_content(sha256: str, copies: Iterable[Copy]) -> Iterator[Outcome]:
    """Keeps the first copy in `keep_order`; the same bytes under two labels keep none.

    Without named splits that is the smallest URI; a row listed again is a duplicate of its
    first listing. A label conflict rejects every row: there is no telling which label is
    right, and keeping either would put a wrong label into the dataset. `copies` is iterated
    twice (a Beam group can be).
    """
    found = survey(copies)
    if len(found.labels) > 1:
        more = found.rows - len(found.named)
        files = ", ".join(found.named) + (f" and {more} more" if more > 0 else "")
        detail = (
            f"the same content (sha256 {sha256[:16]}...) is labelled {', '.join(found.labels)} "
            f"in {found.rows} files: {files}; fix the label of the wrong copies"
        )
        for source, times in copies:
            entry = report.rejection(source.uri, LABEL_CONFLICT, detail)
            yield Outcome(REJECTED, source, entry, times)
        return
    keeper = found.keeper
    yield Outcome(KEPT, keeper)
    for source, times in copies:
        again = times - 1 if source == keeper else times
        if again:
            entry = report.duplicate(source.uri, keeper.uri, source.label)
            yield Outcome(DUPLICATE, source, entry, again)
