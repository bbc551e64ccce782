"""Exact duplicates: which of several files with the same content is kept (pure functions)."""

import dataclasses
from collections.abc import Iterable

from objrec import contract
from preprocessing import report
from preprocessing.sources import SourceFile

LABEL_CONFLICT = "label_conflict"
# Which copy is kept when the input names splits: the held-out one, so that an image never
# seen in training stays where it was put (test before validation before train); a copy
# whose split the input does not name comes last.
KEEP_ORDER = (contract.TEST, contract.VALIDATION, contract.TRAIN, None)


def keep_order(member: SourceFile) -> tuple[int, str]:
    """Sort key of the copies of one content: the first one is kept."""
    return KEEP_ORDER.index(member.split), member.uri


@dataclasses.dataclass(frozen=True)
class Resolution:
    """The outcome for one content hash: at most one keeper, the rest logged."""

    keeper: SourceFile | None
    duplicates: list[dict]
    rejected: list[dict]


def resolve_same_content(sha256: str, members: Iterable[SourceFile]) -> Resolution:
    """Keeps the first copy in `keep_order`; the same bytes under two labels keep none.

    Without named splits that is the smallest URI. A label conflict rejects every copy:
    there is no telling which label is right, and keeping either would put a wrong label
    into the dataset.
    """
    members = sorted(members, key=keep_order)
    labels = sorted({member.label for member in members})
    if len(labels) > 1:
        uris = [member.uri for member in members]
        detail = (
            f"the same content (sha256 {sha256[:16]}...) is labelled {', '.join(labels)} "
            f"in {len(uris)} files: {', '.join(uris)}; fix the label of the wrong copies"
        )
        rejected = [report.rejection(uri, LABEL_CONFLICT, detail) for uri in uris]
        return Resolution(keeper=None, duplicates=[], rejected=rejected)
    keeper, *others = members
    duplicates = [report.duplicate(other.uri, keeper.uri, other.label) for other in others]
    return Resolution(keeper=keeper, duplicates=duplicates, rejected=[])
