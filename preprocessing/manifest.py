"""A manifest input: a CSV or JSONL file naming each image, its label and optionally its split.

    uri,label,split                         {"uri": "cat/1.jpg", "label": "cat", "split": "train"}
    cat/1.jpg,cat,train                     {"uri": "gs://bucket/dog/2.png", "label": "dog"}
    gs://bucket/dog/2.png,dog,

The format comes from the extension: `.csv` with a header row naming the columns, or `.jsonl`
with one JSON object per line. Other columns or keys are ignored. URIs are local paths or
gs://; relative ones are resolved against the manifest's folder. A split of train, validation
(or val) or test is respected; an empty or missing one means: by content hash.

`check_manifest` reads the whole manifest once before the job starts, so that a mistake in any
row (a missing column, an unknown split, an empty label) is one clear error naming the line
rather than a failed job; a million rows (about 100 MB) take seconds. The job then reads it
again with `ReadFromText`, split across workers: the job graph never holds the rows.
"""

import csv
import dataclasses
import io
import json
import os
import posixpath
import re

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from preprocessing import metrics
from preprocessing.errors import PreprocessError
from preprocessing.sources import SourceFile, split_of_name

CSV = ".csv"
JSONL = ".jsonl"
URI, LABEL, SPLIT = "uri", "label", "split"
MANIFEST_HINT = "a manifest needs uri and label (split optional): a CSV header row uri,label,split"
_SCHEME = re.compile(r"^[a-zA-Z][-a-zA-Z0-9+.]*://")
_BYTE_ORDER_MARK = "\ufeff"  # Excel starts its UTF-8 CSV files with one


@dataclasses.dataclass(frozen=True)
class ManifestInfo:
    """A checked manifest: where it is, its format and CSV columns, and its row counts."""

    uri: str
    format: str
    columns: tuple[str, ...]  # CSV header names, lower case; () for JSONL
    num_rows: int
    num_rows_with_split: int
    label_required: bool = True  # batch prediction reads manifests whose labels are optional


def manifest_format(uri: str) -> str | None:
    """CSV or JSONL from the extension (any case); None when `uri` is not a manifest."""
    suffix = posixpath.splitext(uri)[1].lower()
    return suffix if suffix in (CSV, JSONL) else None


def _csv_fields(line: str) -> list[str]:
    try:
        # One line at a time, as ReadFromText hands them out: a field may not span lines.
        return next(csv.reader([line], strict=True), [])
    except csv.Error as error:
        raise ValueError(
            f"not a CSV row ({error}): quote fields holding commas, keep each row on one line"
        ) from None


def parse_header(line: str, label_required: bool = True) -> tuple[str, ...]:
    """The CSV header's column names in lower case; ValueError unless uri (and label, if
    required) are there."""
    columns = tuple(name.strip().lower() for name in _csv_fields(line.lstrip(_BYTE_ORDER_MARK)))
    missing = [name for name in (URI, LABEL)[: 2 if label_required else 1] if name not in columns]
    if missing:
        raise ValueError(
            f"the header row {line.strip()!r} has no {' or '.join(missing)} column; {MANIFEST_HINT}"
        )
    repeated = sorted({name for name in columns if name and columns.count(name) > 1})
    if repeated:
        raise ValueError(f"the header row names {', '.join(repeated)} more than once")
    return columns


def _row_fields(line: str, manifest_format_: str, columns: tuple[str, ...]) -> dict:
    if manifest_format_ == JSONL:
        try:
            fields = json.loads(line.lstrip(_BYTE_ORDER_MARK))
        except json.JSONDecodeError as error:
            raise ValueError(f"not JSON ({error})") from None
        if not isinstance(fields, dict):
            raise ValueError(f"a JSON {type(fields).__name__}, not an object; {MANIFEST_HINT}")
        return fields
    values = _csv_fields(line)
    if len(values) != len(columns):
        raise ValueError(f"{len(values)} fields, but the header row names {len(columns)}")
    return dict(zip(columns, values, strict=True))


def _text_field(fields: dict, name: str, required: bool) -> str:
    value = fields.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name} is {value!r}, not text; {MANIFEST_HINT}")
    if required and not value.strip():
        raise ValueError(f"the {name} is empty; every row needs a {URI} and a {LABEL}")
    return value.strip()


def parse_row(
    line: str, manifest_format_: str, columns: tuple[str, ...], label_required: bool = True
) -> tuple[str, str, str | None]:
    """(uri as written, label ("" if optional and absent), split or None) of one row;
    ValueError saying what is wrong."""
    fields = _row_fields(line, manifest_format_, columns)
    split_name = _text_field(fields, SPLIT, required=False).lower()
    split = split_of_name(split_name) if split_name else None
    label = _text_field(fields, LABEL, label_required)
    return _text_field(fields, URI, True), label, split


def base_folder(manifest_uri: str) -> str:
    """The folder relative URIs of a manifest are resolved against (absolute if local)."""
    folder = FileSystems.split(manifest_uri)[0]
    return folder if _SCHEME.match(folder) else os.path.abspath(folder)


def resolve_uri(base: str, uri: str) -> str:
    """`uri` if absolute (a scheme, or a leading `/`), else `uri` below `base`, `..` resolved."""
    if _SCHEME.match(uri) or uri.startswith("/"):
        return uri
    joined = FileSystems.join(base, uri)
    scheme = _SCHEME.match(joined)
    prefix = scheme.group() if scheme else ""
    path = joined[len(prefix) :]
    normalized = posixpath.normpath(path)
    # gs://bucket/m/../../x would leave the bucket (and a local path its root).
    if normalized.split("/")[0] != path.split("/")[0] or normalized.startswith(".."):
        raise ValueError(f"the relative URI {uri!r} climbs out of {base}")
    return prefix + normalized


def source_file(
    line: str, manifest_format_: str, columns: tuple[str, ...], base: str, label_required=True
) -> SourceFile:
    """The SourceFile of one manifest row; ValueError saying what is wrong with the row."""
    uri, label, split = parse_row(line, manifest_format_, columns, label_required)
    return SourceFile(resolve_uri(base, uri), label, split)


def _open_text(uri: str) -> io.TextIOWrapper:
    raw = FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED)
    return io.TextIOWrapper(raw, encoding="utf-8-sig")  # -sig: drops Excel's byte order mark


def _check_file_system(uri: str, checked: set[str | None]) -> None:
    scheme = FileSystems.get_scheme(uri)
    if scheme in checked:
        return
    try:
        FileSystems.get_filesystem(uri)
    except ValueError:
        raise ValueError(
            f"no file system reads {uri}; URIs are local paths or gs://bucket/..."
        ) from None
    checked.add(scheme)


def _check_rows(
    lines, manifest_format_: str, columns: tuple[str, ...], base: str, label_required: bool
):
    num_rows = num_rows_with_split = 0
    schemes: set[str | None] = set()
    for number, line in lines:
        if not line.strip():
            continue
        try:
            source = source_file(line, manifest_format_, columns, base, label_required)
            _check_file_system(source.uri, schemes)
        except ValueError as error:
            raise ValueError(f"line {number}: {error}") from None
        num_rows += 1
        num_rows_with_split += source.split is not None
    return num_rows, num_rows_with_split


def check_manifest(uri: str, label_required: bool = True) -> ManifestInfo:
    """Reads and checks every row of the manifest at `uri` before any work starts.

    Raises:
        PreprocessError: naming the manifest, the line and the fix.
    """
    manifest_format_ = manifest_format(uri)
    try:
        with _open_text(uri) as text:
            lines = enumerate((line.rstrip("\r\n") for line in text), start=1)
            columns = ()
            if manifest_format_ == CSV:
                _, header = next(lines, (1, ""))
                if not header.strip():
                    raise ValueError(f"the file is empty; {MANIFEST_HINT}")
                columns = parse_header(header, label_required)
            num_rows, num_rows_with_split = _check_rows(
                lines, manifest_format_, columns, base_folder(uri), label_required
            )
    except (BeamIOError, FileNotFoundError) as error:
        raise PreprocessError(f"cannot read --input {uri}: {error}") from None
    except UnicodeDecodeError as error:
        raise PreprocessError(
            f"--input {uri} is not UTF-8 text (byte {error.start}): save it as UTF-8"
        ) from None
    except ValueError as error:
        raise PreprocessError(f"--input {uri}: {error}") from None
    if num_rows == 0:
        raise PreprocessError(f"--input {uri} lists no images; {MANIFEST_HINT}")
    return ManifestInfo(
        uri, manifest_format_, columns, num_rows, num_rows_with_split, label_required
    )


class ParseRowFn(beam.DoFn):
    """A manifest line -> its SourceFile; blank lines are skipped."""

    def __init__(self, info: ManifestInfo):
        self._info = info
        self._base = base_folder(info.uri)

    def process(self, line: str):
        if not line.strip():
            return
        metrics.increment(metrics.INPUTS_READ)
        try:
            info = self._info
            yield source_file(line, info.format, info.columns, self._base, info.label_required)
        except ValueError as error:
            # check_manifest accepted every row: the file changed since.
            raise ValueError(
                f"--input {self._info.uri} changed while the job ran ({error}): rerun it"
            ) from None


class ManifestSource(beam.PTransform):
    """Every row of a checked manifest as a SourceFile."""

    def __init__(self, info: ManifestInfo):
        super().__init__()
        self._info = info

    def expand(self, pbegin: beam.pvalue.PBegin):
        header_lines = 1 if self._info.format == CSV else 0
        return (
            pbegin
            | "ReadLines" >> beam.io.ReadFromText(self._info.uri, skip_header_lines=header_lines)
            # No Reshuffle here: it would hold every row at once in the local runner, and the
            # rows are spread anyway by transforms.CountRepeats, which groups them by file.
            | "Parse" >> beam.ParDo(ParseRowFn(self._info))
        )
