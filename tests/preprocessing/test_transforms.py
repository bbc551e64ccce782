"""The job's PTransforms and DoFns, each on a few elements in a TestPipeline."""

import hashlib
import io

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam import pvalue
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from objrec import contract
from preprocessing import config as config_lib
from preprocessing import dedup, image_io, metrics, report, sources, transforms
from preprocessing.metrics import REJECTED
from preprocessing.sources import SourceFile
from preprocessing.transforms import StoredRecord


def beam_pipeline() -> BeamTestPipeline:
    # FnApiRunner: in process; DirectRunner would first try to download the Prism binary.
    return BeamTestPipeline(runner="FnApiRunner")


def noise_png(seed: int, size=(32, 24)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def uri_and_reason(logged: report.Logged) -> tuple[str, str]:
    assert logged.times == 1
    return logged.entry[contract.LOG_URI], logged.entry[contract.LOG_REASON]


def test_class_folder_source_lists_nested_files_and_skips_files_outside_classes(tmp_path):
    root = tmp_path / "images"
    cat = write(root / "cat" / "a.png", b"1")
    nested = write(root / "cat" / "2024" / "june" / "b.png", b"2")
    dog = write(root / "dog" / "c.jpg", b"3")
    write(root / "README.md", b"not in a class folder")
    with beam_pipeline() as pipeline:
        listed = pipeline | sources.FolderSource(str(root), sources.CLASS_FOLDERS)
        assert_that(
            listed["files"],
            equal_to(
                [
                    SourceFile(cat, "cat", None),
                    SourceFile(nested, "cat", None),
                    SourceFile(dog, "dog", None),
                ]
            ),
            label="Files",
        )
        assert_that(listed[REJECTED], equal_to([]), label="Rejected")


def test_split_folder_source_names_splits_and_rejects_misplaced_files(tmp_path):
    root = tmp_path / "images"
    train = write(root / "train" / "cat" / "a.png", b"1")
    nested = write(root / "train" / "cat" / "2024" / "b.png", b"2")
    val = write(root / "val" / "dog" / "c.png", b"3")
    validation = write(root / "validation" / "cat" / "d.png", b"4")
    test = write(root / "test" / "dog" / "e.png", b"5")
    stray = write(root / "dog" / "f.png", b"6")
    classless = write(root / "test" / "g.png", b"7")
    with beam_pipeline() as pipeline:
        listed = pipeline | sources.FolderSource(str(root), sources.SPLIT_FOLDERS)
        assert_that(
            listed["files"],
            equal_to(
                [
                    SourceFile(train, "cat", "train"),
                    SourceFile(nested, "cat", "train"),
                    SourceFile(val, "dog", "validation"),
                    SourceFile(validation, "cat", "validation"),
                    SourceFile(test, "dog", "test"),
                ]
            ),
            label="Files",
        )
        assert_that(
            listed[REJECTED] | beam.Map(uri_and_reason),
            equal_to(
                [(stray, sources.OUTSIDE_SPLIT_FOLDERS), (classless, sources.NO_CLASS_FOLDER)]
            ),
            label="Rejected",
        )


def test_collect_labels_gives_one_sorted_list():
    files = [SourceFile(f"/in/{label}/x", label, None) for label in ("dog", "cat", "dog", "Bag")]
    with beam_pipeline() as pipeline:
        labels = pipeline | beam.Create(files) | transforms.CollectLabels()
        assert_that(labels, equal_to([["Bag", "cat", "dog"]]))


def encoded_summary(element) -> tuple:
    """(sha256, uri, stored size, decoded size of the JPEG) of an EncodeImageFn output."""
    sha, encoded, times = element
    assert times == 1
    decoded = Image.open(io.BytesIO(encoded.stored.jpeg))
    return sha, encoded.source.uri, (encoded.stored.width, encoded.stored.height), decoded.size


def test_encode_image_hashes_and_encodes_each_file_and_rejects_bad_ones(tmp_path):
    good = write(tmp_path / "cat" / "ok.png", noise_png(1, size=(40, 30)))
    empty = write(tmp_path / "cat" / "empty.png", b"")
    video = write(tmp_path / "cat" / "clip.mp4", bytes(8 * 10_000 + 1))  # 8 bytes a pixel
    missing = str(tmp_path / "cat" / "deleted-after-listing.png")
    corrupt = write(tmp_path / "cat" / "corrupt.png", noise_png(3)[:60])
    text = write(tmp_path / "cat" / "notes.txt", b"not an image\n")
    inputs = [SourceFile(uri, "cat", None) for uri in (good, empty, video, missing, corrupt, text)]
    config = config_lib.PreprocessConfig(
        input=str(tmp_path), output="unused", image_size=24, max_pixels=10_000
    )
    with beam_pipeline() as pipeline:
        encoded = (
            pipeline
            | beam.Create(inputs)
            | transforms.CountRepeats()
            | beam.ParDo(transforms.EncodeImageFn(config)).with_outputs(REJECTED, main="encoded")
        )
        assert_that(
            encoded.encoded | beam.Map(encoded_summary),
            equal_to([(sha256(noise_png(1, size=(40, 30))), good, (32, 24), (32, 24))]),
            label="Encoded",
        )
        assert_that(
            encoded[REJECTED] | beam.Map(uri_and_reason),
            equal_to(
                [
                    (empty, image_io.EMPTY_FILE),
                    (video, image_io.FILE_TOO_LARGE),
                    (missing, transforms.UNREADABLE),
                    (corrupt, image_io.TRUNCATED),
                    (text, image_io.NOT_AN_IMAGE),
                ]
            ),
            label="Rejected",
        )


class RecordingFile(io.BytesIO):
    """A file whose reads are recorded in `reads`."""

    def __init__(self, data: bytes, reads: list):
        super().__init__(data)
        self.reads = reads

    def read(self, *args):
        self.reads.append(args)
        return super().read(*args)


def test_oversized_files_are_rejected_without_being_read(monkeypatch):
    reads = []

    def file_of(size: int):
        monkeypatch.setattr(
            transforms, "open_uncompressed", lambda uri: RecordingFile(bytes(size), reads)
        )

    file_of(8 * 1000 + 1)  # one byte more than 1,000 pixels of 16-bit RGBA can need
    with pytest.raises(image_io.ImageError) as raised:
        transforms.read_image_file("clip.mp4", max_pixels=1000)
    assert raised.value.reason == image_io.FILE_TOO_LARGE
    assert reads == []
    file_of(8 * 1000)
    assert len(transforms.read_image_file("big.tiff", max_pixels=1000)) == 8 * 1000
    assert len(reads) == 1


def encoded_image(uri: str, label: str, split: str | None = None, content: str | None = None):
    stored = image_io.StoredImage(b"jpeg of " + (content or uri).encode(), width=3, height=2)
    return transforms.EncodedImage(SourceFile(uri, label, split), stored)


def test_resolve_duplicates_splits_keepers_duplicates_and_conflicts():
    a, b = (
        encoded_image("/in/cat/a", "cat", content="h1"),
        encoded_image("/in/cat/b", "cat", content="h1"),
    )
    cat_x = encoded_image("/in/cat/x", "cat", content="h2")
    dog_x = encoded_image("/in/dog/x", "dog", content="h2")
    single = encoded_image("/in/dog/single", "dog", content="h3")
    # The same image in train/ and test/: the held-out copy stays, even with a larger URI.
    in_train = encoded_image("/in/a_train/cat/y", "cat", "train", content="h4")
    in_test = encoded_image("/in/test/cat/y", "cat", "test", content="h4")
    copies = [("h1", b, 1), ("h1", a, 1), ("h2", dog_x, 1), ("h2", cat_x, 1), ("h3", single, 3),
              ("h4", in_train, 1), ("h4", in_test, 1)]  # fmt: skip
    with beam_pipeline() as pipeline:
        resolved = pipeline | beam.Create(copies) | transforms.ResolveDuplicates()
        assert_that(
            resolved["unique"],
            equal_to([("h1", a), ("h3", single), ("h4", in_test)]),
            label="Unique",
        )
        assert_that(
            resolved[transforms.DUPLICATES],
            equal_to(
                [
                    report.Logged(report.duplicate("/in/cat/b", "/in/cat/a", "cat")),
                    # The row listed three times: kept once, one entry for its two duplicates.
                    report.Logged(report.duplicate("/in/dog/single", "/in/dog/single", "dog"), 2),
                    report.Logged(report.duplicate("/in/a_train/cat/y", "/in/test/cat/y", "cat")),
                ]
            ),
            label="Duplicates",
        )
        assert_that(
            resolved[REJECTED] | beam.Map(uri_and_reason),
            equal_to([("/in/cat/x", dedup.LABEL_CONFLICT), ("/in/dog/x", dedup.LABEL_CONFLICT)]),
            label="Conflicts",
        )
        assert_that(resolved[transforms.CONFLICTS], equal_to(["h2"]), label="ConflictHashes")


def test_a_file_listed_many_times_is_read_once(tmp_path, monkeypatch):
    """A manifest naming one file 2,000 times: one read and decode, one record, and one
    duplicates entry standing for the other 1,999 rows: nothing is held per row."""
    image = write(tmp_path / "cat" / "x.png", noise_png(8))
    reads = []
    real_read = transforms.read_image_file
    monkeypatch.setattr(transforms, "read_image_file", lambda *a: reads.append(a) or real_read(*a))
    config = config_lib.PreprocessConfig(input=str(tmp_path), output="unused", image_size=8)
    with beam_pipeline() as pipeline:
        resolved = (
            pipeline
            | beam.Create([SourceFile(image, "cat", None)] * 2000)
            | transforms.CountRepeats()
            | beam.ParDo(transforms.EncodeImageFn(config)).with_outputs(REJECTED, main="encoded")
        ).encoded | transforms.ResolveDuplicates()
        assert_that(
            resolved["unique"] | beam.MapTuple(lambda sha, image: image.source.uri),
            equal_to([image]),
            label="Unique",
        )
        assert_that(
            resolved[transforms.DUPLICATES],
            equal_to([report.Logged(report.duplicate(image, image, "cat"), 1999)]),
            label="Duplicates",
        )
    assert len(reads) == 1


def test_build_record_holds_the_contract_features_and_a_named_or_hashed_split():
    fractions = config_lib.parse_split("validation=1")
    named = ("ab" * 32, encoded_image("/in/test/dog/x.png", "dog", "test"))
    hashed = ("cd" * 32, encoded_image("/in/dog/y.png", "dog"))
    with beam_pipeline() as pipeline:
        label_ids = pipeline | "Labels" >> beam.Create([{"cat": 0, "dog": 1}])
        built = (
            pipeline
            | "Kept" >> beam.Create([named, hashed])
            | beam.Map(
                transforms.build_record,
                label_ids=pvalue.AsSingleton(label_ids),
                split_fractions=fractions,
            )
        )

        def summary(record: StoredRecord) -> tuple:
            features = tf.train.Example.FromString(record.example).features.feature
            return (
                record.split,
                record.label,
                record.sha256,
                features[contract.FEATURE_LABEL].int64_list.value[0],
                features[contract.FEATURE_SOURCE].bytes_list.value[0].decode(),
                features[contract.FEATURE_SHA256].bytes_list.value[0].decode(),
                features[contract.FEATURE_ENCODED].bytes_list.value[0],
                features[contract.FEATURE_WIDTH].int64_list.value[0],
            )

        assert_that(
            built | beam.Map(summary),
            equal_to(
                [
                    (
                        "test",
                        "dog",
                        "ab" * 32,
                        1,
                        "/in/test/dog/x.png",
                        "ab" * 32,
                        b"jpeg of /in/test/dog/x.png",
                        3,
                    ),
                    (
                        "validation",
                        "dog",
                        "cd" * 32,
                        1,
                        "/in/dog/y.png",
                        "cd" * 32,
                        b"jpeg of /in/dog/y.png",
                        3,
                    ),
                ]
            ),
        )


@pytest.mark.parametrize(
    "requested, train_shards, test_shards",
    [(0, 16, 1), (20, 20, 3)],  # 0: ~150 MB each, but train gets 16; 20: test has only 3
)
def test_write_shards_writes_hash_ordered_non_empty_files(
    tmp_path, requested, train_shards, test_shards
):
    train = [StoredRecord("train", sha256(b"%d" % i), "cat", b"t%d" % i) for i in range(40)]
    test = [StoredRecord("test", sha256(b"x%d" % i), "dog", b"x%d" % i) for i in range(3)]
    expected_files = [
        ("test", contract.shard_file_name("test", i, test_shards)) for i in range(test_shards)
    ] + [("train", contract.shard_file_name("train", i, train_shards)) for i in range(train_shards)]
    with beam_pipeline() as pipeline:
        written = (
            pipeline
            | beam.Create(train + test)
            | transforms.WriteShards(str(tmp_path), requested_shards=requested)
        )
        assert_that(written, equal_to(expected_files))

    # Read in file order, the train shards hold every record once, in hash order.
    train_files = [str(tmp_path / name) for split, name in expected_files if split == "train"]
    sizes = [sum(1 for _ in tf.data.TFRecordDataset(path)) for path in train_files]
    assert min(sizes) >= 1
    read = [record.numpy() for record in tf.data.TFRecordDataset(train_files)]
    assert read == [record.example for record in sorted(train, key=lambda r: r.sha256)]


def test_write_json_lines_writes_a_sorted_file_even_when_empty(tmp_path, monkeypatch):
    monkeypatch.setattr(transforms, "_LINES_PER_WRITE", 2)  # chunks end inside a repeated entry
    entries = [
        report.rejection("/in/b", "corrupt", "x"),
        report.rejection("/in/a", "truncated", "y"),
        report.rejection("/in/c", "corrupt", "z"),
    ]
    # /in/c stands for three rows (a manifest listing it three times): three lines.
    logged = [report.Logged(entries[0]), report.Logged(entries[1]), report.Logged(entries[2], 3)]
    with beam_pipeline() as pipeline:
        full = pipeline | "Entries" >> beam.Create(logged)
        empty = pipeline | "NoEntries" >> beam.Create([])
        counted = full | "Full" >> transforms.WriteJsonLines(str(tmp_path / "full.jsonl"))
        none = empty | "Empty" >> transforms.WriteJsonLines(str(tmp_path / "empty.jsonl"))
        assert_that(counted, equal_to([5]), label="FullCount")
        assert_that(none, equal_to([0]), label="EmptyCount")
    expected = report.json_lines([entries[0], entries[1], *[entries[2]] * 3])
    assert (tmp_path / "full.jsonl").read_bytes() == expected
    assert (tmp_path / "full.jsonl").read_text().splitlines()[0].endswith('"uri": "/in/a"}')
    assert (tmp_path / "empty.jsonl").read_bytes() == b""


def test_counters_report_inputs_rejections_duplicates_conflicts_and_written_examples(tmp_path):
    root = tmp_path / "in"
    write(root / "train" / "cat" / "a.png", noise_png(5))
    write(root / "test" / "cat" / "b.png", noise_png(5))  # a duplicate: the test copy stays
    write(root / "train" / "cat" / "c.png", noise_png(6))
    write(root / "train" / "dog" / "c.png", noise_png(6))  # a label conflict
    write(root / "train" / "cat" / "d.png", b"")
    write(root / "cat" / "e.png", noise_png(7))  # outside the split folders
    config = config_lib.PreprocessConfig(input=str(root), output="unused", image_size=8)
    pipeline = beam_pipeline()
    listed = pipeline | sources.FolderSource(str(root), sources.SPLIT_FOLDERS)
    encoded = (
        listed["files"]
        | transforms.CountRepeats()
        | beam.ParDo(transforms.EncodeImageFn(config)).with_outputs(REJECTED, main="encoded")
    )
    resolved = encoded.encoded | transforms.ResolveDuplicates()
    _ = (
        resolved["unique"]
        | beam.MapTuple(lambda sha, image: StoredRecord(image.source.split, sha, "cat", b"e"))
        | transforms.WriteShards(str(tmp_path / "out"), requested_shards=0)
    )
    result = pipeline.run()
    result.wait_until_finish()
    assert metrics.job_counters(result) == {
        metrics.INPUTS_READ: 6,
        metrics.rejected_counter(image_io.EMPTY_FILE): 1,
        metrics.rejected_counter(sources.OUTSIDE_SPLIT_FOLDERS): 1,
        metrics.rejected_counter(dedup.LABEL_CONFLICT): 2,
        metrics.DUPLICATES: 1,
        metrics.LABEL_CONFLICTS: 1,
        metrics.written_counter("test"): 1,
        metrics.IMAGES_DECODED: 4,  # a, b and both c: the empty d and the stray e are not
    }
    # The raw query, as a runner's monitoring shows it: one namespace for the job.
    query = result.metrics().query(MetricsFilter().with_namespace(metrics.METRICS_NAMESPACE))
    assert {counter.key.metric.namespace for counter in query["counters"]} == {
        "objrec.preprocessing"
    }
