"""Pure functions of the preprocessing job: config, splits, shards, records, duplicates, report."""

import collections
import hashlib

import pytest
import tensorflow as tf

from objrec import contract
from preprocessing import config as config_lib
from preprocessing import dedup, records, report, sharding, sources
from preprocessing.sources import SourceFile


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# config


def test_parse_split_orders_fractions_as_the_contract_and_fills_missing_splits():
    assert config_lib.parse_split("test=0.25,train=0.75") == (
        ("train", 0.75),
        ("validation", 0.0),
        ("test", 0.25),
    )
    assert config_lib.format_split(config_lib.parse_split(config_lib.DEFAULT_SPLIT)) == (
        config_lib.DEFAULT_SPLIT
    )


def test_parse_split_takes_val_for_validation_as_split_folders_do():
    assert config_lib.parse_split("train=0.8,val=0.2") == (
        ("train", 0.8),
        ("validation", 0.2),
        ("test", 0.0),
    )


@pytest.mark.parametrize(
    "text, words",
    [
        ("train=0.8,valid=0.2", "'valid'; the splits are train, validation, test, val"),
        ("train=0.5,val=0.25,validation=0.25", "names 'validation' twice"),
        ("train=0.8,validation=0.1", "add up to 0.9, not 1"),
        ("train=0.8,validation=x,test=0.2", "validation='x' is not a number"),
        ("train=1.5,test=-0.5", "outside [0, 1]"),
        ("train", "is not NAME=FRACTION"),
        ("train=0.5,train=0.5", "names 'train' twice"),
    ],
)
def test_parse_split_errors_name_the_problem(text, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("(", r"\(")):
        config_lib.parse_split(text)


@pytest.mark.parametrize(
    "field, value",
    [("image_size", 0), ("resize_mode", "zoom"), ("jpeg_quality", 101), ("num_shards", -1)],
)
def test_config_rejects_bad_values_naming_the_flag(field, value):
    with pytest.raises(ValueError, match=f"--{field}"):
        config_lib.PreprocessConfig(input="in", output="out", **{field: value})


# splits


def test_split_is_a_function_of_the_hash_prefix():
    fractions = config_lib.parse_split("train=0.8,validation=0.1,test=0.1")
    assert sharding.split_for_hash("0" * 64, fractions) == "train"
    # 0xcccccccccccc0000 / 2^64 = 0.8 - 3e-15; only the first 16 hex digits count.
    assert sharding.split_for_hash("cccccccccccc0000" + "f" * 48, fractions) == "train"
    assert sharding.split_for_hash("cccccccccccd0000" + "0" * 48, fractions) == "validation"
    assert sharding.split_for_hash("e666666666660000" + "f" * 48, fractions) == "validation"
    assert sharding.split_for_hash("e666666666670000" + "0" * 48, fractions) == "test"
    assert sharding.split_for_hash("f" * 64, fractions) == "test"


def test_split_fractions_hold_over_many_hashes():
    fractions = config_lib.parse_split("train=0.7,validation=0.2,test=0.1")
    counts = collections.Counter(
        sharding.split_for_hash(sha(str(i)), fractions) for i in range(20_000)
    )
    assert counts["train"] / 20_000 == pytest.approx(0.7, abs=0.015)
    assert counts["validation"] / 20_000 == pytest.approx(0.2, abs=0.015)
    assert counts["test"] / 20_000 == pytest.approx(0.1, abs=0.015)


def test_an_empty_split_is_never_chosen():
    fractions = config_lib.parse_split("train=1")
    assert {sharding.split_for_hash(sha(str(i)), fractions) for i in range(500)} == {"train"}


# shards


def test_plan_shards_cuts_the_hash_order_into_even_non_empty_ranges():
    hashes = sorted(sha(str(i)) for i in range(100))
    counts = collections.Counter(sharding.bucket_of(h) for h in hashes)
    starts = sharding.plan_shards(counts, num_shards=16)
    shards = [sharding.shard_of(sharding.bucket_of(h), starts) for h in hashes]
    assert len(starts) == 16
    assert shards == sorted(shards)  # contiguous hash ranges
    assert sorted(collections.Counter(shards).values()) == [6] * 12 + [7] * 4


def test_plan_shards_drops_indices_no_bucket_reached():
    # Three records in one bucket, one in another: 4 shards asked, 2 possible, none empty.
    starts = sharding.plan_shards({5: 3, 9: 1}, num_shards=4)
    assert starts == (5, 9)
    assert [sharding.shard_of(bucket, starts) for bucket in (5, 9)] == [0, 1]


@pytest.mark.parametrize(
    "split, examples, num_bytes, requested, expected",
    [
        ("train", 10, 1_000, 0, 10),  # min(16, n)
        ("train", 1_000, 1_000_000, 0, 16),
        ("train", 100_000, 1_500_000_000, 0, 16),  # 1.5 GB / 150 MB = 10 < 16
        ("train", 1_000_000, 30_000_000_000, 0, 200),
        ("validation", 1_000, 1_000_000, 0, 1),
        ("validation", 1_000, 400_000_000, 0, 3),
        ("train", 1_000, 1_000, 4, 16),  # the contract's minimum wins
        ("test", 1_000, 1_000, 4, 4),
        ("test", 3, 1_000, 8, 3),  # never more shards than examples
    ],
)
def test_num_shards_for(split, examples, num_bytes, requested, expected):
    assert sharding.num_shards_for(split, examples, num_bytes, requested) == expected


def test_plan_all_splits_plans_each_split_apart():
    stats = [(("train", b), (1, 100)) for b in range(40)] + [(("test", 7), (2, 100))]
    plans = sharding.plan_all_splits(stats, requested=0)
    assert len(plans["train"]) == 16
    assert plans["test"] == (7,)


# records


def test_tfrecord_frames_read_back_with_tensorflow(tmp_path):
    example = records.build_example(
        jpeg=b"\xff\xd8jpeg",
        height=3,
        width=4,
        label=2,
        label_text="Bag",
        source="gs://bucket/Bag/1.png",
        sha256=sha("1"),
    )
    path = tmp_path / "one.tfrecord"
    path.write_bytes(records.tfrecord_frame(example) + records.tfrecord_frame(example))
    read = [record.numpy() for record in tf.data.TFRecordDataset(str(path))]
    assert read == [example, example]
    features = tf.train.Example.FromString(read[0]).features.feature
    assert set(features) == {
        contract.FEATURE_ENCODED,
        contract.FEATURE_FORMAT,
        contract.FEATURE_HEIGHT,
        contract.FEATURE_WIDTH,
        contract.FEATURE_LABEL,
        contract.FEATURE_LABEL_TEXT,
        contract.FEATURE_SOURCE,
        contract.FEATURE_SHA256,
    }
    assert features[contract.FEATURE_FORMAT].bytes_list.value == [b"jpeg"]
    assert features[contract.FEATURE_LABEL].int64_list.value == [2]
    assert features[contract.FEATURE_SHA256].bytes_list.value == [sha("1").encode()]


def test_a_corrupted_frame_fails_the_crc_check(tmp_path):
    frame = bytearray(records.tfrecord_frame(b"payload"))
    frame[14] ^= 0xFF  # a data byte
    path = tmp_path / "bad.tfrecord"
    path.write_bytes(bytes(frame))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(path)))


# duplicates


def test_split_given_or_default():
    assert config_lib.PreprocessConfig(input="in", output="out").split is None
    default = config_lib.PreprocessConfig(input="in", output="out").split_fractions
    assert default == config_lib.parse_split(config_lib.DEFAULT_SPLIT)
    given = config_lib.PreprocessConfig(
        input="in", output="out", split=config_lib.parse_split("train=1")
    )
    assert given.split_fractions == (("train", 1.0), ("validation", 0.0), ("test", 0.0))
    assert given.to_json_dict()["split"] == "train=1,validation=0,test=0"


def outcomes(members, times=None) -> dict[str, list]:
    """resolve_same_content's outcomes by kind: kept sources, duplicate and rejected entries
    (an entry once per row it stands for)."""
    copies = [dedup.Copy(member, (times or {}).get(member.uri, 1)) for member in members]
    found = {dedup.KEPT: [], dedup.DUPLICATE: [], dedup.REJECTED: []}
    for outcome in dedup.resolve_same_content(sha("x"), copies):
        found[outcome.kind].extend([outcome.entry or outcome.source] * outcome.times)
    return found


def test_duplicates_keep_the_smallest_uri():
    members = [SourceFile("/in/cat/b.jpg", "cat", None), SourceFile("/in/cat/a.jpg", "cat", None)]
    found = outcomes(members)
    assert found[dedup.KEPT] == [members[1]]
    assert found[dedup.DUPLICATE] == [report.duplicate("/in/cat/b.jpg", "/in/cat/a.jpg", "cat")]
    assert found[dedup.REJECTED] == []


def test_duplicates_keep_the_held_out_copy_first():
    members = [
        SourceFile("/in/a/cat/x.jpg", "cat", None),
        SourceFile("/in/train/cat/x.jpg", "cat", "train"),
        SourceFile("/in/validation/cat/x.jpg", "cat", "validation"),
        SourceFile("/in/z_test/cat/x.jpg", "cat", "test"),
    ]
    found = outcomes(members)
    assert found[dedup.KEPT] == [members[3]]
    assert sorted(entry[contract.LOG_URI] for entry in found[dedup.DUPLICATE]) == [
        "/in/a/cat/x.jpg",
        "/in/train/cat/x.jpg",
        "/in/validation/cat/x.jpg",
    ]


def test_a_row_listed_again_is_a_duplicate_of_its_first_listing():
    kept, other = SourceFile("/in/cat/a.jpg", "cat", None), SourceFile("/in/cat/b.jpg", "cat", None)
    found = outcomes([kept, other], times={"/in/cat/a.jpg": 3, "/in/cat/b.jpg": 2})
    assert found[dedup.KEPT] == [kept]
    assert (
        sorted(e[contract.LOG_URI] for e in found[dedup.DUPLICATE])
        == [kept.uri] * 2 + [other.uri] * 2
    )
    assert {e[contract.LOG_DUPLICATE_OF] for e in found[dedup.DUPLICATE]} == {kept.uri}


def test_the_same_content_under_two_labels_rejects_every_copy():
    members = [
        SourceFile("/in/dog/x.jpg", "dog", None),
        SourceFile("/in/cat/x.jpg", "cat", None),
        SourceFile("/in/cat/y.jpg", "cat", None),
    ]
    found = outcomes(members, times={"/in/cat/y.jpg": 2})
    assert found[dedup.KEPT] == [] and found[dedup.DUPLICATE] == []
    rejected = found[dedup.REJECTED]
    assert sorted(entry[contract.LOG_URI] for entry in rejected) == sorted(
        [member.uri for member in members] + ["/in/cat/y.jpg"]
    )
    assert {entry[contract.LOG_REASON] for entry in rejected} == {dedup.LABEL_CONFLICT}
    assert "labelled cat, dog in 4 files" in rejected[0][contract.LOG_DETAIL]


def test_a_conflict_of_many_rows_names_a_few_and_counts_the_rest():
    members = [SourceFile(f"/in/{label}/{i:04}.jpg", label, None) for i in range(500)
               for label in ("cat", "dog")]  # fmt: skip
    [detail] = {e[contract.LOG_DETAIL] for e in outcomes(members)[dedup.REJECTED]}
    assert detail.count("/in/") == dedup.NAMED_IN_CONFLICT and "and 995 more" in detail


# report and sources


def test_json_lines_are_sorted_by_uri():
    entries = [report.rejection("/b", "corrupt", "x"), report.rejection("/a", "truncated", "y")]
    assert report.json_lines(entries).decode().splitlines() == [
        '{"detail": "y", "reason": "truncated", "uri": "/a"}',
        '{"detail": "x", "reason": "corrupt", "uri": "/b"}',
    ]
    assert report.json_lines([]) == b""


def test_metadata_counts_add_up_and_list_every_class_and_split():
    config = config_lib.PreprocessConfig(input="/in", output="/out", image_size=32)
    metadata = report.build_metadata(
        config,
        input_layout="class_folders",
        labels=["cat", "dog"],
        num_inputs=10,
        num_rejected=2,
        rejected_reasons={"truncated": 1, "label_conflict": 1},
        num_duplicates=1,
        num_label_conflicts=0,
        split_class_counts=[(("train", "cat"), 5), (("test", "dog"), 2)],
        shard_files=[("train", "train-00001-of-00002.tfrecord"), ("train", "t0"), ("test", "x")],
    )
    assert report.unaccounted_inputs(metadata) == 0
    assert metadata[contract.META_SPLITS]["validation"] == {
        contract.META_NUM_EXAMPLES: 0,
        contract.META_CLASS_COUNTS: {"cat": 0, "dog": 0},
        contract.META_FILES: [],
    }
    assert metadata[contract.META_SPLITS]["train"][contract.META_FILES][0] == "t0"
    assert report.classes_below(metadata, 3) == {"dog": 2}
    assert metadata[contract.META_CONFIG]["split"] == config_lib.DEFAULT_SPLIT
    assert metadata[contract.META_INPUT_LAYOUT] == "class_folders"


def test_summary_names_splits_rejections_duplicates_and_the_smallest_class():
    config = config_lib.PreprocessConfig(input="/in", output="/out")
    metadata = report.build_metadata(
        config,
        input_layout="split_folders",
        labels=["cat", "dog"],
        num_inputs=9,
        num_rejected=3,
        rejected_reasons={"truncated": 1, "label_conflict": 2},
        num_duplicates=1,
        num_label_conflicts=1,
        split_class_counts=[(("train", "cat"), 4), (("test", "dog"), 1)],
        shard_files=[("train", "a"), ("train", "b"), ("test", "c")],
    )
    assert report.format_summary(metadata, "/out").splitlines() == [
        "Wrote /out: 5 examples of 9 inputs (train 4 in 2 files, validation 0 in 0 files, "
        "test 1 in 1 file).",
        "Classes: 2, smallest dog with 1.",
        "Rejected: 3 (label_conflict 2, truncated 1); duplicates: 1; label conflicts: 1.",
    ]


@pytest.mark.parametrize(
    "root, uri, label",
    [
        ("/data/images", "/data/images/cat/1.jpg", "cat"),
        ("/data/images/", "/data/images/cat/deep/er/1.jpg", "cat"),
        ("gs://bucket/images", "gs://bucket/images/T-shirt_top/train_0.png", "T-shirt_top"),
        ("gs://bucket", "gs://bucket/dog/a.png", "dog"),
    ],
)
def test_label_is_the_first_folder_below_the_root(root, uri, label):
    assert sources.label_of(root, uri) == label
