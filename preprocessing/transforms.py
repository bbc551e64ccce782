"""The job's steps as DoFns and PTransforms; `pipeline.build_pipeline` wires them together.

Every failure that belongs to one file (missing, empty, not an image, corrupt, ...) becomes a
rejected-log entry on the REJECTED output, never an exception: one bad file must not fail a
job over a million images.
"""

import hashlib
from typing import NamedTuple

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from objrec import contract
from preprocessing import dedup, image_io, records, report, sharding
from preprocessing.config import PreprocessConfig
from preprocessing.sources import SourceFile

METRICS_NAMESPACE = "objrec.preprocessing"
# Tags of the side outputs.
REJECTED = "rejected"
DUPLICATES = "duplicates"
CONFLICTS = "conflicts"
# Rejection reasons that do not come from image content (those are in image_io).
UNREADABLE = "unreadable"
CHANGED_DURING_RUN = "changed_during_run"

_READ_CHUNK_BYTES = 1 << 20


class StoredRecord(NamedTuple):
    """One serialized tf.train.Example and what sharding and the report need to know of it."""

    split: str
    sha256: str
    label: str
    example: bytes


def open_uncompressed(uri: str):
    """Opens `uri` for reading as raw bytes (no decompression even for a `.gz` name)."""
    return FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED)


def file_sha256(uri: str) -> tuple[str, int]:
    """Hex SHA-256 and size of a file, read in 1 MiB chunks (the file never sits in memory)."""
    digest = hashlib.sha256()
    size = 0
    with open_uncompressed(uri) as file:
        while chunk := file.read(_READ_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def create_file(path: str):
    """Opens `path` (local or remote) for writing raw bytes, replacing any file there."""
    return FileSystems.create(
        path, mime_type="application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED
    )


def write_file(path: str, content: bytes) -> None:
    """Writes `content` to `path` as is."""
    with create_file(path) as file:
        file.write(content)


def rejected_output(entry: dict) -> pvalue.TaggedOutput:
    """A rejected-log entry on the REJECTED output, counted per reason."""
    Metrics.counter(METRICS_NAMESPACE, f"rejected_{entry[contract.LOG_REASON]}").inc()
    return pvalue.TaggedOutput(REJECTED, entry)


class HashContentFn(beam.DoFn):
    """SourceFile -> (sha256, SourceFile). Unreadable, empty and oversized files are rejected.

    Only the hash travels on: grouping by hash then shuffles ~200 bytes per file instead of
    the images, and the decode step reads the one kept copy again.
    """

    def __init__(self, max_pixels: int):
        self._max_pixels = max_pixels
        self._inputs_read = Metrics.counter(METRICS_NAMESPACE, "inputs_read")

    def process(self, source: SourceFile):
        self._inputs_read.inc()
        try:
            sha256, size = file_sha256(source.uri)
        # A missing or unreadable file is that file's problem. Other errors (permissions on a
        # bucket, a storage outage) fail the bundle: the runner retries it, and a lasting one
        # fails the job instead of silently dropping inputs.
        except OSError as error:
            yield rejected_output(report.rejection(source.uri, UNREADABLE, str(error)))
            return
        try:
            # Before grouping: all empty files share one hash, yet are not duplicates.
            image_io.check_file_size(size, self._max_pixels)
        except image_io.ImageError as error:
            yield rejected_output(report.rejection(source.uri, error.reason, error.detail))
            return
        yield sha256, source


class ResolveDuplicatesFn(beam.DoFn):
    """(sha256, [SourceFile]) -> (sha256, kept SourceFile); DUPLICATES, REJECTED, CONFLICTS."""

    def __init__(self):
        self._duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicates")
        self._conflicts = Metrics.counter(METRICS_NAMESPACE, "label_conflicts")

    def process(self, element):
        sha256, members = element
        resolution = dedup.resolve_same_content(sha256, members)
        for entry in resolution.duplicates:
            self._duplicates.inc()
            yield pvalue.TaggedOutput(DUPLICATES, entry)
        for entry in resolution.rejected:
            yield rejected_output(entry)
        if resolution.rejected:
            self._conflicts.inc()
            yield pvalue.TaggedOutput(CONFLICTS, sha256)
        if resolution.keeper is not None:
            yield sha256, resolution.keeper


class EncodeImageFn(beam.DoFn):
    """(sha256, SourceFile) -> StoredRecord: read, decode, orient, resize, encode, split."""

    def __init__(self, config: PreprocessConfig):
        self._config = config

    def setup(self):
        image_io.configure_pillow(self._config.max_pixels)

    def process(self, element, label_ids: dict[str, int]):
        sha256, source = element
        config = self._config
        try:
            with open_uncompressed(source.uri) as file:
                data = file.read()
        except OSError as error:
            yield rejected_output(report.rejection(source.uri, UNREADABLE, str(error)))
            return
        if hashlib.sha256(data).hexdigest() != sha256:
            detail = "the file changed while the job ran; rerun once the input is stable"
            yield rejected_output(report.rejection(source.uri, CHANGED_DURING_RUN, detail))
            return
        try:
            stored = image_io.to_stored_jpeg(
                data, config.image_size, config.resize_mode, config.jpeg_quality, config.max_pixels
            )
        except image_io.ImageError as error:
            yield rejected_output(report.rejection(source.uri, error.reason, error.detail))
            return
        example = records.build_example(
            jpeg=stored.jpeg,
            height=stored.height,
            width=stored.width,
            label=label_ids[source.label],
            label_text=source.label,
            source=source.uri,
            sha256=sha256,
        )
        split = source.split or sharding.split_for_hash(sha256, config.split)
        yield StoredRecord(split, sha256, source.label, example)


class CollectLabels(beam.PTransform):
    """SourceFiles -> one sorted list of class names (label id = index)."""

    def expand(self, sources):
        return (
            sources
            | "Label" >> beam.Map(lambda source: source.label)
            | "Distinct" >> beam.Distinct()
            | "ToList" >> beam.combiners.ToList()
            | "Sort" >> beam.Map(sorted)
        )


def _bucket_stats(record: StoredRecord) -> tuple[tuple[str, int], tuple[int, int]]:
    return (record.split, sharding.bucket_of(record.sha256)), (1, len(record.example))


def _keyed_by_shard(record: StoredRecord, plans: dict[str, tuple[int, ...]]):
    shard = sharding.shard_of(sharding.bucket_of(record.sha256), plans[record.split])
    return (record.split, shard), (record.sha256, record.example)


class WriteShardFn(beam.DoFn):
    """((split, shard), [(sha256, example)]) -> (split, file name), the file written."""

    def __init__(self, output_dir: str):
        self._output_dir = output_dir

    def process(self, element, plans: dict[str, tuple[int, ...]]):
        (split, shard), keyed_examples = element
        # Hash order inside a shard, shards in hash order: the layout depends on content only.
        ordered = sorted(keyed_examples)
        file_name = contract.shard_file_name(split, shard, len(plans[split]))
        # A retried bundle rewrites the same bytes under the same name: no temp files needed.
        with create_file(FileSystems.join(self._output_dir, file_name)) as file:
            for _, example in ordered:
                file.write(records.tfrecord_frame(example))
        Metrics.counter(METRICS_NAMESPACE, f"examples_written_{split}").inc(len(ordered))
        yield split, file_name


class WriteShards(beam.PTransform):
    """StoredRecords -> (split, shard file name) per file written (see sharding.py).

    Beam's WriteToTFRecord cannot be used: it starts each bundle at a random shard and pads
    with empty files, so neither byte-identical reruns nor "no empty shard" would hold.
    """

    def __init__(self, output_dir: str, requested_shards: int):
        super().__init__()
        self._output_dir = output_dir
        self._requested_shards = requested_shards

    def expand(self, stored_records):
        plans = (
            stored_records
            | "BucketStats" >> beam.Map(_bucket_stats)
            | "SumPerBucket" >> beam.CombinePerKey(beam.combiners.TupleCombineFn(sum, sum))
            | "CollectStats" >> beam.combiners.ToList()
            | "PlanShards" >> beam.Map(sharding.plan_all_splits, requested=self._requested_shards)
        )
        return (
            stored_records
            | "AssignShard" >> beam.Map(_keyed_by_shard, plans=pvalue.AsSingleton(plans))
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard"
            >> beam.ParDo(WriteShardFn(self._output_dir), plans=pvalue.AsSingleton(plans))
        )


def _write_lines(entries: list[dict], path: str) -> int:
    write_file(path, report.json_lines(entries))
    return len(entries)


class WriteJsonLines(beam.PTransform):
    """Log entries -> one JSON-lines file at `path`, sorted; outputs the number of lines.

    The file is written even when there are no entries, so readers never guess.
    """

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, entries):
        return (
            entries
            | "Collect" >> beam.combiners.ToList()
            | "Write" >> beam.Map(_write_lines, path=self._path)
        )
