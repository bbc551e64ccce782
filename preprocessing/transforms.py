"""The job's steps as DoFns and PTransforms; `pipeline.build_pipeline` wires them together.

Every failure that belongs to one file (missing, empty, not an image, corrupt, ...) becomes a
rejected-log entry on the REJECTED output, never an exception: one bad file must not fail a
job over a million images.

Each file is read, hashed and decoded once, in `EncodeImageFn`, before duplicates are known:
grouping by hash then shuffles the stored JPEG (~30 kB at 256 px) instead of ~200 bytes, but
nothing is read or hashed twice, and the hash is always that of the bytes that were decoded.
Measured on 12 MP photos (benchmarks/preprocessing_benchmark.py): hashing first and reading
each kept file again cost 34 ms of CPU per image, this 29 ms, the decode path alone 28 ms.
A duplicate now costs a wasted decode (~28 ms) where every kept file cost a second read and
hash (~3 ms): cheaper as long as fewer than about 1 input in 10 is a duplicate.
"""

import hashlib
import os
import stat
from typing import NamedTuple

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from google.api_core.exceptions import NotFound

from objrec import contract
from preprocessing import dedup, image_io, metrics, records, report, sharding, sources
from preprocessing.config import PreprocessConfig, SplitFractions
from preprocessing.metrics import rejected_output
from preprocessing.sources import SourceFile

# Tags of the side outputs (rejected-log entries: metrics.REJECTED).
DUPLICATES = "duplicates"
CONFLICTS = "conflicts"
# Rejection reason that does not come from image content (those are in image_io).
UNREADABLE = "unreadable"
# A file's own problems: local files raise OSError; a missing GCS object raises NotFound
# (google-cloud-storage's 404), which is no OSError. Any other error (a 403 on the bucket, an
# outage) fails the bundle: the runner retries it, and a lasting one fails the job instead
# of silently dropping inputs.
UNREADABLE_ERRORS = (OSError, NotFound)


class EncodedImage(NamedTuple):
    """An input file and the JPEG made of it, before duplicates are resolved."""

    source: SourceFile
    stored: image_io.StoredImage


class StoredRecord(NamedTuple):
    """One serialized tf.train.Example and what sharding and the report need to know of it."""

    split: str
    sha256: str
    label: str
    example: bytes


def open_uncompressed(uri: str):
    """Opens `uri` for reading as raw bytes (no decompression even for a `.gz` name).

    Raises:
        image_io.ImageError: NOT_A_REGULAR_FILE for a local FIFO or device named like an
            image (in a manifest, say), never opened: the open would block forever.
    """
    if "://" not in uri and not stat.S_ISREG(os.stat(uri).st_mode):
        raise image_io.ImageError(
            sources.NOT_A_REGULAR_FILE, "not a regular file (a FIFO, socket or device)"
        )
    return FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED)


def read_image_file(uri: str, max_pixels: int) -> bytes:
    """The bytes of `uri`; empty files and files too large for `max_pixels` are never read.

    Raises:
        OSError or NotFound (UNREADABLE_ERRORS): the file cannot be read.
        image_io.ImageError: EMPTY_FILE or FILE_TOO_LARGE.
    """
    with open_uncompressed(uri) as file:
        # The size without reading: local files and GCS objects both know it when opened.
        size = file.seek(0, os.SEEK_END)
        image_io.check_file_size(size, max_pixels)
        file.seek(0)
        return file.read()


def create_file(path: str):
    """Opens `path` (local or remote) for writing raw bytes, replacing any file there."""
    return FileSystems.create(
        path, mime_type="application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED
    )


def write_file(path: str, content: bytes) -> None:
    """Writes `content` to `path` as is."""
    with create_file(path) as file:
        file.write(content)


class EncodeImageFn(beam.DoFn):
    """SourceFile -> (sha256, EncodedImage): read, hash, decode, orient, resize, encode.

    Unreadable, empty, oversized and undecodable files go to REJECTED with their reason.
    """

    def __init__(self, config: PreprocessConfig):
        self._config = config

    def setup(self):
        image_io.configure_pillow(self._config.max_pixels)

    def process(self, source: SourceFile):
        config = self._config
        try:
            data = read_image_file(source.uri, config.max_pixels)
            sha256 = hashlib.sha256(data).hexdigest()
            stored = image_io.to_stored_jpeg(
                data, config.image_size, config.resize_mode, config.jpeg_quality, config.max_pixels
            )
        except image_io.ImageError as error:
            yield rejected_output(report.rejection(source.uri, error.reason, error.detail))
            return
        except UNREADABLE_ERRORS as error:
            yield rejected_output(report.rejection(source.uri, UNREADABLE, str(error)))
            return
        yield sha256, EncodedImage(source, stored)


class ResolveDuplicatesFn(beam.DoFn):
    """(sha256, [EncodedImage]) -> (sha256, kept EncodedImage); DUPLICATES, REJECTED, CONFLICTS."""

    def process(self, element):
        sha256, encoded = element
        encoded = list(encoded)
        resolution = dedup.resolve_same_content(sha256, [item.source for item in encoded])
        for entry in resolution.duplicates:
            metrics.increment(metrics.DUPLICATES)
            yield pvalue.TaggedOutput(DUPLICATES, entry)
        for entry in resolution.rejected:
            yield rejected_output(entry)
        if resolution.rejected:
            metrics.increment(metrics.LABEL_CONFLICTS)
            yield pvalue.TaggedOutput(CONFLICTS, sha256)
        if resolution.keeper is not None:
            yield sha256, next(item for item in encoded if item.source == resolution.keeper)


def build_record(
    element: tuple[str, EncodedImage], label_ids: dict[str, int], split_fractions: SplitFractions
) -> StoredRecord:
    """The stored record of a kept image: its Example, and its split (named, or by hash)."""
    sha256, (source, stored) = element
    example = records.build_example(
        jpeg=stored.jpeg,
        height=stored.height,
        width=stored.width,
        label=label_ids[source.label],
        label_text=source.label,
        source=source.uri,
        sha256=sha256,
    )
    split = source.split or sharding.split_for_hash(sha256, split_fractions)
    return StoredRecord(split, sha256, source.label, example)


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
        metrics.increment(metrics.written_counter(split), len(ordered))
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
