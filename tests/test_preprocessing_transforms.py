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
from preprocessing import dedup, image_io, report, sources, transforms
from preprocessing.sources import SourceFile
from preprocessing.transforms import REJECTED, StoredRecord


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


def uri_and_reason(entry: dict) -> tuple[str, str]:
    return entry[contract.LOG_URI], entry[contract.LOG_REASON]


def test_class_folder_source_lists_nested_files_and_skips_files_outside_classes(tmp_path):
    root = tmp_path / "images"
    cat = write(root / "cat" / "a.png", b"1")
    nested = write(root / "cat" / "2024" / "june" / "b.png", b"2")
    dog = write(root / "dog" / "c.jpg", b"3")
    write(root / "README.md", b"not in a class folder")
    with beam_pipeline() as pipeline:
        listed = pipeline | sources.ClassFolderSource(str(root))
        assert_that(
            listed,
            equal_to(
                [
                    SourceFile(cat, "cat", None),
                    SourceFile(nested, "cat", None),
                    SourceFile(dog, "dog", None),
                ]
            ),
        )


def test_collect_labels_gives_one_sorted_list():
    files = [SourceFile(f"/in/{label}/x", label, None) for label in ("dog", "cat", "dog", "Bag")]
    with beam_pipeline() as pipeline:
        labels = pipeline | beam.Create(files) | transforms.CollectLabels()
        assert_that(labels, equal_to([["Bag", "cat", "dog"]]))


def test_hash_content_rejects_empty_oversized_and_unreadable_files(tmp_path):
    image = write(tmp_path / "cat" / "ok.png", noise_png(1))  # 32 x 24: 2.3 kB
    empty = write(tmp_path / "cat" / "empty.png", b"")
    video = write(tmp_path / "cat" / "clip.mp4", bytes(8 * 1000 + 1))
    missing = str(tmp_path / "cat" / "deleted-after-listing.png")
    inputs = [SourceFile(uri, "cat", None) for uri in (image, empty, video, missing)]
    with beam_pipeline() as pipeline:
        hashed = (
            pipeline
            | beam.Create(inputs)
            | beam.ParDo(transforms.HashContentFn(max_pixels=1000)).with_outputs(
                REJECTED, main="hashed"
            )
        )
        assert_that(hashed.hashed, equal_to([(sha256(noise_png(1)), inputs[0])]), label="Kept")
        assert_that(
            hashed[REJECTED] | beam.Map(uri_and_reason),
            equal_to(
                [
                    (empty, image_io.EMPTY_FILE),
                    (video, image_io.FILE_TOO_LARGE),
                    (missing, transforms.UNREADABLE),
                ]
            ),
            label="Rejected",
        )


def test_resolve_duplicates_splits_keepers_duplicates_and_conflicts():
    a, b = SourceFile("/in/cat/a", "cat", None), SourceFile("/in/cat/b", "cat", None)
    cat_x, dog_x = SourceFile("/in/cat/x", "cat", None), SourceFile("/in/dog/x", "dog", None)
    single = SourceFile("/in/dog/single", "dog", None)
    groups = [("h1", [b, a]), ("h2", [dog_x, cat_x]), ("h3", [single])]
    with beam_pipeline() as pipeline:
        resolved = (
            pipeline
            | beam.Create(groups)
            | beam.ParDo(transforms.ResolveDuplicatesFn()).with_outputs(
                transforms.DUPLICATES, REJECTED, transforms.CONFLICTS, main="unique"
            )
        )
        assert_that(resolved.unique, equal_to([("h1", a), ("h3", single)]), label="Unique")
        assert_that(
            resolved[transforms.DUPLICATES],
            equal_to([report.duplicate("/in/cat/b", "/in/cat/a", "cat")]),
            label="Duplicates",
        )
        assert_that(
            resolved[REJECTED] | beam.Map(uri_and_reason),
            equal_to([("/in/cat/x", dedup.LABEL_CONFLICT), ("/in/dog/x", dedup.LABEL_CONFLICT)]),
            label="Conflicts",
        )
        assert_that(resolved[transforms.CONFLICTS], equal_to(["h2"]), label="ConflictHashes")


def test_encode_image_builds_records_and_rejects_bad_or_changed_files(tmp_path):
    good = write(tmp_path / "dog" / "good.png", noise_png(2, size=(40, 30)))
    corrupt = write(tmp_path / "dog" / "corrupt.png", noise_png(3)[:60])
    changed = write(tmp_path / "dog" / "changed.png", noise_png(4))
    elements = [
        (sha256(noise_png(2, size=(40, 30))), SourceFile(good, "dog", None)),
        (sha256(noise_png(3)[:60]), SourceFile(corrupt, "dog", None)),
        (sha256(b"what it held when it was hashed"), SourceFile(changed, "dog", None)),
    ]
    config = config_lib.PreprocessConfig(
        input=str(tmp_path), output="unused", image_size=24, split=config_lib.parse_split("test=1")
    )
    with beam_pipeline() as pipeline:
        label_ids = pipeline | "Labels" >> beam.Create([{"cat": 0, "dog": 1}])
        encoded = (
            pipeline
            | "Elements" >> beam.Create(elements)
            | beam.ParDo(
                transforms.EncodeImageFn(config), label_ids=pvalue.AsSingleton(label_ids)
            ).with_outputs(REJECTED, main="records")
        )

        def check_record(record: StoredRecord) -> tuple:
            features = tf.train.Example.FromString(record.example).features.feature
            encoded_jpeg = features[contract.FEATURE_ENCODED].bytes_list.value[0]
            return (
                record.split,
                record.label,
                features[contract.FEATURE_LABEL].int64_list.value[0],
                Image.open(io.BytesIO(encoded_jpeg)).size,
                features[contract.FEATURE_SOURCE].bytes_list.value[0].decode(),
            )

        assert_that(
            encoded.records | beam.Map(check_record),
            equal_to([("test", "dog", 1, (32, 24), good)]),
            label="Records",
        )
        assert_that(
            encoded[REJECTED] | beam.Map(uri_and_reason),
            equal_to([(corrupt, image_io.TRUNCATED), (changed, transforms.CHANGED_DURING_RUN)]),
            label="Rejected",
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


def test_write_json_lines_writes_a_sorted_file_even_when_empty(tmp_path):
    entries = [
        report.rejection("/in/b", "corrupt", "x"),
        report.rejection("/in/a", "truncated", "y"),
    ]
    with beam_pipeline() as pipeline:
        full = pipeline | "Entries" >> beam.Create(entries)
        empty = pipeline | "NoEntries" >> beam.Create([])
        counted = full | "Full" >> transforms.WriteJsonLines(str(tmp_path / "full.jsonl"))
        none = empty | "Empty" >> transforms.WriteJsonLines(str(tmp_path / "empty.jsonl"))
        assert_that(counted, equal_to([2]), label="FullCount")
        assert_that(none, equal_to([0]), label="EmptyCount")
    assert (tmp_path / "full.jsonl").read_bytes() == report.json_lines(entries)
    assert (tmp_path / "full.jsonl").read_text().splitlines()[0].endswith('"uri": "/in/a"}')
    assert (tmp_path / "empty.jsonl").read_bytes() == b""


def test_counters_report_inputs_rejections_duplicates_and_written_examples(tmp_path):
    image = write(tmp_path / "cat" / "a.png", noise_png(5))
    copy = write(tmp_path / "cat" / "b.png", noise_png(5))
    empty = write(tmp_path / "cat" / "c.png", b"")
    inputs = [SourceFile(uri, "cat", None) for uri in (image, copy, empty)]
    pipeline = beam_pipeline()
    hashed = (
        pipeline
        | beam.Create(inputs)
        | beam.ParDo(transforms.HashContentFn(max_pixels=10**6)).with_outputs(
            REJECTED, main="hashed"
        )
    )
    unique = (
        hashed.hashed
        | beam.GroupByKey()
        | beam.ParDo(transforms.ResolveDuplicatesFn()).with_outputs(main="unique")
    )
    _ = (
        unique.unique
        | beam.MapTuple(lambda sha, source: StoredRecord("validation", sha, "cat", b"e"))
        | transforms.WriteShards(str(tmp_path / "out"), requested_shards=0)
    )
    result = pipeline.run()
    result.wait_until_finish()
    counters = {
        counter.key.metric.name: counter.committed
        for counter in result.metrics().query(
            MetricsFilter().with_namespace(transforms.METRICS_NAMESPACE)
        )["counters"]
    }
    assert counters == {
        "inputs_read": 3,
        f"rejected_{image_io.EMPTY_FILE}": 1,
        "duplicates": 1,
        "examples_written_validation": 1,
    }
