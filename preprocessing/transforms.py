"""The job's steps as DoFns and PTransforms; `pipeline.build_pipeline` wires them together.

Every failure that belongs to one file (missing, empty, not an image, corrupt, ...) becomes a
rejected-log entry on the REJECTED output, never an exception: one bad file must not fail a
job over a million images.

Each listed file is read, hashed and decoded once, in `EncodeImageFn`, before duplicates are
known; a row listed again (a manifest naming one file many times) is counted, not reread.
Measured on 12 MP photos (benchmarks/preprocessing_benchmark.py): hashing first and reading
each kept file again cost 34 ms of CPU per image, this 29 ms, the decode path alone 28 ms.
A duplicate now costs a wasted decode (~28 ms) where every kept file cost a second read and
hash (~3 ms): cheaper as long as fewer than about 1 input in 10 is a duplicate. The stored
JPEGs are then not grouped: the copies of each content are resolved on their sources alone
(~200 bytes each), and one JPEG per content joins its keeper.
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


class CountRepeats(beam.PTransform):
    """SourceFiles -> dedup.Copy(source, times): a file the input lists again is read once."""

    def expand(self, sources):
        return (
            sources
            | "AsKey" >> beam.Map(lambda source: (tuple(source), 1))
            | "Count" >> beam.CombinePerKey(sum)
            | "AsCopy" >> beam.MapTuple(lambda key, times: dedup.Copy(SourceFile(*key), times))
        )


class EncodeImageFn(beam.DoFn):
    """dedup.Copy -> (sha256, EncodedImage, times): read, hash, decode, orient, resize, encode.

    Unreadable, empty, oversized and undecodable files go to REJECTED with their reason, once
    per row that lists them.
    """

    def __init__(self, config: PreprocessConfig):
        self._config = config

    def setup(self):
        image_io.configure_pillow(self._config.max_pixels)

    def process(self, copy: dedup.Copy):
        config, (source, times) = self._config, copy
        try:
            data = read_image_file(source.uri, config.max_pixels)
            sha256 = hashlib.sha256(data).hexdigest()
            stored = image_io.to_stored_jpeg(
                data, config.image_size, config.resize_mode, config.jpeg_quality, config.max_pixels
            )
        except image_io.ImageError as error:
            yield rejected_output(report.rejection(source.uri, error.reason, error.detail), times)
            return
        except UNREADABLE_ERRORS as error:
            yield rejected_output(report.rejection(source.uri, UNREADABLE, str(error)), times)
            return
        metrics.increment(metrics.IMAGES_DECODED, times)
        yield sha256, EncodedImage(source, stored), times


class ResolveDuplicatesFn(beam.DoFn):
    """(sha256, [dedup.Copy]) -> (sha256, kept SourceFile); DUPLICATES, REJECTED, CONFLICTS."""

    def process(self, element):
        sha256, copies = element
        conflict = False
        for outcome in dedup.resolve_same_content(sha256, copies):
            if outcome.kind == dedup.KEPT:
                yield sha256, outcome.source
            elif outcome.kind == dedup.DUPLICATE:
                metrics.increment(metrics.DUPLICATES, outcome.times)
                yield pvalue.TaggedOutput(DUPLICATES, report.Logged(outcome.entry, outcome.times))
            else:
                conflict = True
                yield rejected_output(outcome.entry, outcome.times)
        if conflict:
            metrics.increment(metrics.LABEL_CONFLICTS)
            yield pvalue.TaggedOutput(CONFLICTS, sha256)


def _join_keeper(element):
    """(sha256, {"keeper": [SourceFile], "stored": [StoredImage]}) -> (sha256, EncodedImage)."""
    sha256, joined = element
    for keeper in joined["keeper"]:
        yield sha256, EncodedImage(keeper, joined["stored"][0])


class ResolveDuplicates(beam.PTransform):
    """(sha256, EncodedImage, times) -> {"unique": (sha256, EncodedImage), DUPLICATES,
    REJECTED, CONFLICTS}.

    Copies are grouped by content on their sources only; every copy of a content has the same
    bytes, so the same stored JPEG, and one of them is joined to the kept source.
    """

    def expand(self, encoded):
        resolved = (
            encoded
            | "Copies"
            >> beam.MapTuple(lambda sha, image, times: (sha, dedup.Copy(image.source, times)))
            | "GroupByContent" >> beam.GroupByKey()
            | "Resolve"
            >> beam.ParDo(ResolveDuplicatesFn()).with_outputs(
                DUPLICATES, metrics.REJECTED, CONFLICTS, main="keeper"
            )
        )
        stored = (
            encoded
            | "Stored" >> beam.MapTuple(lambda sha, image, times: (sha, image.stored))
            | "OnePerContent" >> beam.combiners.Sample.FixedSizePerKey(1)
            | "Only" >> beam.MapTuple(lambda sha, sample: (sha, sample[0]))
        )
        unique = (
            {"keeper": resolved.keeper, "stored": stored}
            | "JoinKeeper" >> beam.CoGroupByKey()
            | "Kept" >> beam.FlatMap(_join_keeper)
        )
        return {
            "unique": unique,
            DUPLICATES: resolved[DUPLICATES],
            metrics.REJECTED: resolved[metrics.REJECTED],
            CONFLICTS: resolved[CONFLICTS],
        }


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


def _write_lines(keyed_lines: list[tuple[str, str, int]], path: str) -> int:
    """Writes (uri, JSON line, rows) sorted, as report.json_lines orders them, each line once
    per row it stands for, a chunk at a time: memory follows the distinct entries, and a log
    of a million rows is never one string in memory. Returns the lines written."""
    keyed_lines.sort()
    written = 0
    with create_file(path) as file:
        chunk: list[str] = []
        for _, line, times in keyed_lines:
            for _ in range(times):
                chunk.append(line + "\n")
                if len(chunk) == _LINES_PER_WRITE:
                    file.write("".join(chunk).encode())
                    written, chunk = written + len(chunk), []
        file.write("".join(chunk).encode())
    return written + len(chunk)


_LINES_PER_WRITE = 10_000


class WriteJsonLines(beam.PTransform):
    """report.Logged entries -> one JSON-lines file at `path`, sorted; outputs its number of
    lines (the rows the entries stand for).

    The file is written even when there are no entries, so readers never guess.
    """

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, entries):
        return (
            entries
            # The line, not the entry dict, is what waits for the sort: a third of the memory.
            | "Line" >> beam.Map(report.sort_key_and_line)
            | "Collect" >> beam.combiners.ToList()
            | "Write" >> beam.Map(_write_lines, path=self._path)
        )
