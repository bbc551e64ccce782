"""What a run reports: log entries, metadata.json, the end-of-run summary (pure functions)."""

import json
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from objrec import contract
from preprocessing.config import PreprocessConfig


class Logged(NamedTuple):
    """A log entry and the number of input rows it stands for: a manifest that lists one file
    a million times carries one entry through the job, written out as a million lines."""

    entry: dict
    times: int = 1


def rejection(uri: str, reason: str, detail: str) -> dict:
    """A rejected-*.jsonl entry: the input, a reason code, and what exactly is wrong."""
    return {contract.LOG_URI: uri, contract.LOG_REASON: reason, contract.LOG_DETAIL: detail}


def duplicate(uri: str, duplicate_of: str, label: str) -> dict:
    """A duplicates-*.jsonl entry: the dropped input and the kept one with the same bytes."""
    return {
        contract.LOG_URI: uri,
        contract.LOG_DUPLICATE_OF: duplicate_of,
        contract.LOG_LABEL: label,
    }


# Characters that str.splitlines() and other readers break lines at, which JSON leaves raw.
_LINE_BREAKS_JSON_KEEPS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}


def json_line(entry: dict) -> str:
    """One entry as one line of JSON, whatever its file name holds (U+2028 escaped)."""
    line = json.dumps(entry, sort_keys=True, ensure_ascii=False)
    for raw, escaped in _LINE_BREAKS_JSON_KEEPS.items():
        line = line.replace(raw, escaped)
    return line


def json_lines(entries: Iterable[dict]) -> bytes:
    """Entries as JSON lines sorted by URI, so that a rerun writes the same bytes."""
    lines = sorted((entry[contract.LOG_URI], json_line(entry)) for entry in entries)
    return "".join(line + "\n" for _, line in lines).encode()


def sort_key_and_line(logged: Logged) -> tuple[str, str, int]:
    """(URI, JSON line, rows): what a log file needs of an entry, sorted by URI then line."""
    return logged.entry[contract.LOG_URI], json_line(logged.entry), logged.times


def build_metadata(
    config: PreprocessConfig,
    *,
    input_layout: str,
    labels: Sequence[str],
    num_inputs: int,
    num_rejected: int,
    rejected_reasons: dict[str, int],
    num_duplicates: int,
    num_label_conflicts: int,
    split_class_counts: Iterable[tuple[tuple[str, str], int]],
    shard_files: Iterable[tuple[str, str]],
) -> dict:
    """metadata.json: the contract's keys, the counts of a run, and the resolved config.

    `input_layout` says where the splits came from (split folders, a manifest's split
    column, else the content hash). `num_label_conflicts` counts contents found under several
    labels; every file of such a content is among the `num_rejected`.
    """
    counts = dict(split_class_counts)
    files: dict[str, list[str]] = {split: [] for split in contract.SPLITS}
    for split, file_name in shard_files:
        files[split].append(file_name)
    splits = {}
    for split in contract.SPLITS:
        class_counts = {label: counts.get((split, label), 0) for label in labels}
        splits[split] = {
            contract.META_NUM_EXAMPLES: sum(class_counts.values()),
            contract.META_CLASS_COUNTS: class_counts,
            contract.META_FILES: sorted(files[split]),
        }
    return {
        contract.META_SCHEMA_VERSION: contract.SCHEMA_VERSION,
        contract.META_LABELS: list(labels),
        contract.META_NUM_CLASSES: len(labels),
        contract.META_IMAGE_SIZE: config.image_size,
        contract.META_RESIZE_MODE: config.resize_mode,
        contract.META_JPEG_QUALITY: config.jpeg_quality,
        contract.META_INPUT_LAYOUT: input_layout,
        contract.META_NUM_INPUTS: num_inputs,
        contract.META_NUM_REJECTED: num_rejected,
        contract.META_NUM_DUPLICATES: num_duplicates,
        contract.META_NUM_LABEL_CONFLICTS: num_label_conflicts,
        contract.META_REJECTED_REASONS: dict(sorted(rejected_reasons.items())),
        contract.META_SPLITS: splits,
        contract.META_CONFIG: config.to_json_dict(),
    }


def num_examples(metadata: dict) -> int:
    """Examples stored across all splits."""
    splits = metadata[contract.META_SPLITS].values()
    return sum(split[contract.META_NUM_EXAMPLES] for split in splits)


def unaccounted_inputs(metadata: dict) -> int:
    """Inputs neither stored, rejected nor logged as duplicates: 0 unless there is a bug."""
    accounted = (
        num_examples(metadata)
        + metadata[contract.META_NUM_REJECTED]
        + metadata[contract.META_NUM_DUPLICATES]
    )
    return metadata[contract.META_NUM_INPUTS] - accounted


def class_totals(metadata: dict) -> dict[str, int]:
    """Stored examples per class, all splits together, in label order."""
    totals = dict.fromkeys(metadata[contract.META_LABELS], 0)
    for split in metadata[contract.META_SPLITS].values():
        for label, count in split[contract.META_CLASS_COUNTS].items():
            totals[label] += count
    return totals


def classes_below(metadata: dict, minimum: int) -> dict[str, int]:
    """Classes with fewer than `minimum` stored examples, and their counts."""
    return {label: count for label, count in class_totals(metadata).items() if count < minimum}


def _files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


def format_summary(metadata: dict, output: str) -> str:
    """A few lines for the end of a run."""
    splits = metadata[contract.META_SPLITS]
    per_split = ", ".join(
        f"{name} {split[contract.META_NUM_EXAMPLES]:,} in {_files(len(split[contract.META_FILES]))}"
        for name, split in splits.items()
    )
    reasons = metadata[contract.META_REJECTED_REASONS]
    rejected = ", ".join(f"{reason} {count:,}" for reason, count in reasons.items()) or "none"
    totals = class_totals(metadata)
    smallest = min(totals, key=totals.get)
    return "\n".join(
        [
            f"Wrote {output}: {num_examples(metadata):,} examples of "
            f"{metadata[contract.META_NUM_INPUTS]:,} inputs ({per_split}).",
            f"Classes: {metadata[contract.META_NUM_CLASSES]}, smallest {smallest} "
            f"with {totals[smallest]:,}.",
            f"Rejected: {metadata[contract.META_NUM_REJECTED]:,} ({rejected}); "
            f"duplicates: {metadata[contract.META_NUM_DUPLICATES]:,}; "
            f"label conflicts: {metadata[contract.META_NUM_LABEL_CONFLICTS]:,}.",
        ]
    )
