"""The whole preprocessing job, `pipeline.run([...])`, on tiny folders of real image files.

One shared run (the `job` fixture) covers most checks; tests marked slow start a run of their own.
"""

import hashlib
import json
import logging
import pathlib
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import ExifTags, Image

from objrec import contract
from preprocessing import image_io, pipeline, sample_data
from preprocessing.dedup import LABEL_CONFLICT
from preprocessing.errors import PreprocessError
from tests import html_pages
from tests.dataset_fixtures import (
    encode,
    noise,
    read_log,
    read_records,
    run_job,
    write,
    write_class_images,
)

IMAGES_PER_CLASS = {"cat": 14, "dog": 12, "fish": 10}


IMAGE_SIZE = 24


RED, BLUE = (255, 0, 0), (0, 0, 255)


def exif_rotated_jpeg() -> bytes:
    """32 x 16, left half red, right half blue, to be shown rotated 90 degrees clockwise."""
    image = Image.new("RGB", (32, 16), RED)
    image.paste(BLUE, (16, 0, 32, 16))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def half_transparent_png() -> bytes:
    image = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    image.paste((0, 0, 0, 255), (16, 0, 32, 32))
    return encode(image, "PNG")


def make_input(root: pathlib.Path) -> pathlib.Path:
    """Class folders with every case the job must handle, next to plain images."""
    write_class_images(root, IMAGES_PER_CLASS)
    write(root / "cat" / "2024" / "nested.png", encode(noise(100), "PNG"))
    write(root / "cat" / "rotated.jpg", exif_rotated_jpeg())
    write(root / "dog" / "transparent.png", half_transparent_png())
    shutil.copy(root / "cat" / "cat_1.png", root / "cat" / "zz_copy_of_1.png")
    shutil.copy(root / "fish" / "fish_27.png", root / "dog" / "not_a_dog.png")
    jpeg = encode(noise(101), "JPEG")
    write(root / "fish" / "truncated.jpg", jpeg[: len(jpeg) // 2])
    write(root / "dog" / "empty.png", b"")
    write(root / "cat" / "notes.txt", b"cats are great\n")
    write(root / "README.md", b"Not in a class folder: not an input.\n")
    return root


def input_files(input_dir: pathlib.Path) -> set[str]:
    """The job's inputs: every file inside a class folder."""
    return {str(path) for path in input_dir.glob("*/**/*") if path.is_file()}


def file_bytes(directory: pathlib.Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """One run over the mixed input folder, shared by the checks below."""
    input_dir = make_input(tmp_path_factory.mktemp("images"))
    output_dir = tmp_path_factory.mktemp("dataset") / "out"
    flags = ("--image_size", str(IMAGE_SIZE), "--jpeg_quality", "95")
    metadata = run_job(input_dir, output_dir, *flags)
    return {"input": input_dir, "output": output_dir, "flags": flags, "metadata": metadata}


def by_source(job) -> dict[str, dict]:
    return {
        record[contract.FEATURE_SOURCE].decode(): record for record in read_records(job["output"])
    }


def test_records_hold_the_contract_features_and_label_ids_match_labels_txt(job):
    labels = (job["output"] / contract.LABELS_FILE).read_text().splitlines()
    assert labels == ["cat", "dog", "fish"]
    records = read_records(job["output"])
    assert records
    for record in records:
        assert set(record) == {
            contract.FEATURE_ENCODED,
            contract.FEATURE_FORMAT,
            contract.FEATURE_HEIGHT,
            contract.FEATURE_WIDTH,
            contract.FEATURE_LABEL,
            contract.FEATURE_LABEL_TEXT,
            contract.FEATURE_SOURCE,
            contract.FEATURE_SHA256,
        }
        source = pathlib.Path(record[contract.FEATURE_SOURCE].decode())
        label = record[contract.FEATURE_LABEL_TEXT].decode()
        assert source.relative_to(job["input"]).parts[0] == label
        assert labels[record[contract.FEATURE_LABEL]] == label
        assert (
            record[contract.FEATURE_SHA256].decode()
            == hashlib.sha256(source.read_bytes()).hexdigest()
        )
        assert record[contract.FEATURE_FORMAT] == contract.IMAGE_FORMAT.encode()
        image = tf.io.decode_jpeg(record[contract.FEATURE_ENCODED]).numpy()
        assert image.shape[:2] == (record[contract.FEATURE_HEIGHT], record[contract.FEATURE_WIDTH])
        assert image.shape[2] == 3
        assert min(image.shape[:2]) == IMAGE_SIZE  # shorter_side


def test_stored_size_follows_the_shorter_side_policy(job):
    records = by_source(job)
    landscape = records[str(job["input"] / "cat" / "cat_1.png")]  # 40 x 30
    portrait = records[str(job["input"] / "cat" / "cat_2.png")]  # 30 x 40
    assert (landscape[contract.FEATURE_WIDTH], landscape[contract.FEATURE_HEIGHT]) == (32, 24)
    assert (portrait[contract.FEATURE_WIDTH], portrait[contract.FEATURE_HEIGHT]) == (24, 32)


def test_every_input_is_accounted_for_exactly_once(job):
    stored = [record[contract.FEATURE_SOURCE].decode() for record in read_records(job["output"])]
    rejected = [
        entry[contract.LOG_URI] for entry in read_log(job["output"], contract.REJECTED_PREFIX)
    ]
    duplicates = [
        entry[contract.LOG_URI] for entry in read_log(job["output"], contract.DUPLICATES_PREFIX)
    ]
    everything = stored + rejected + duplicates
    assert sorted(everything) == sorted(input_files(job["input"]))
    metadata = job["metadata"]
    assert metadata[contract.META_NUM_INPUTS] == len(everything)
    assert metadata[contract.META_NUM_REJECTED] == len(rejected)
    assert metadata[contract.META_NUM_DUPLICATES] == len(duplicates)
    splits = metadata[contract.META_SPLITS].values()
    assert sum(split[contract.META_NUM_EXAMPLES] for split in splits) == len(stored)


def test_bad_files_are_rejected_with_a_reason_and_the_job_succeeds(job):
    reasons = {
        pathlib.Path(entry[contract.LOG_URI]).relative_to(job["input"]).as_posix(): entry
        for entry in read_log(job["output"], contract.REJECTED_PREFIX)
    }
    assert {path: entry[contract.LOG_REASON] for path, entry in reasons.items()} == {
        "fish/truncated.jpg": image_io.TRUNCATED,
        "dog/empty.png": image_io.EMPTY_FILE,
        "cat/notes.txt": image_io.NOT_AN_IMAGE,
        "fish/fish_27.png": LABEL_CONFLICT,
        "dog/not_a_dog.png": LABEL_CONFLICT,
    }
    assert "dog, fish" in reasons["dog/not_a_dog.png"][contract.LOG_DETAIL]
    assert job["metadata"][contract.META_REJECTED_REASONS] == {
        image_io.EMPTY_FILE: 1,
        LABEL_CONFLICT: 2,
        image_io.NOT_AN_IMAGE: 1,
        image_io.TRUNCATED: 1,
    }
    assert job["metadata"][contract.META_NUM_LABEL_CONFLICTS] == 1


def test_a_same_label_copy_is_logged_as_duplicate_of_the_smallest_uri(job):
    assert read_log(job["output"], contract.DUPLICATES_PREFIX) == [
        {
            contract.LOG_URI: str(job["input"] / "cat" / "zz_copy_of_1.png"),
            contract.LOG_DUPLICATE_OF: str(job["input"] / "cat" / "cat_1.png"),
            contract.LOG_LABEL: "cat",
        }
    ]


def test_nested_files_belong_to_their_class_folder(job):
    nested = by_source(job)[str(job["input"] / "cat" / "2024" / "nested.png")]
    assert nested[contract.FEATURE_LABEL_TEXT] == b"cat"


def test_exif_rotated_jpeg_is_stored_upright_and_transparency_is_white(job):
    records = by_source(job)
    rotated = records[str(job["input"] / "cat" / "rotated.jpg")]
    pixels = tf.io.decode_jpeg(rotated[contract.FEATURE_ENCODED]).numpy().astype(int)
    assert pixels.shape == (48, 24, 3)  # portrait: 32 x 16 turned, shorter side 24
    assert np.abs(pixels[8, 12] - RED).max() < 16  # the left half is now on top
    assert np.abs(pixels[40, 12] - BLUE).max() < 16
    transparent = records[str(job["input"] / "dog" / "transparent.png")]
    pixels = tf.io.decode_jpeg(transparent[contract.FEATURE_ENCODED]).numpy().astype(int)
    assert pixels[12, 3].min() > 240  # transparent -> white
    assert pixels[12, 20].max() < 15  # opaque black stays black


def test_shards_are_named_listed_non_empty_and_hash_ordered(job):
    metadata = job["metadata"]
    on_disk = sorted(path.name for path in job["output"].glob(f"*{contract.TFRECORD_SUFFIX}"))
    listed = sorted(
        name
        for split in metadata[contract.META_SPLITS].values()
        for name in split[contract.META_FILES]
    )
    assert on_disk == listed
    for split_name, split in metadata[contract.META_SPLITS].items():
        files = split[contract.META_FILES]
        assert files == [
            contract.shard_file_name(split_name, i, len(files)) for i in range(len(files))
        ]
        hashes = []
        for name in files:
            shard = [
                tf.train.Example.FromString(record.numpy())
                for record in tf.data.TFRecordDataset(str(job["output"] / name))
            ]
            assert shard, f"{name} is empty"
            hashes += [
                example.features.feature[contract.FEATURE_SHA256].bytes_list.value[0]
                for example in shard
            ]
        assert hashes == sorted(hashes)  # within and across the shards of a split
        assert len(hashes) == split[contract.META_NUM_EXAMPLES]
    train = metadata[contract.META_SPLITS][contract.TRAIN]
    assert len(train[contract.META_FILES]) == min(16, train[contract.META_NUM_EXAMPLES]) == 16


def test_metadata_describes_the_run(job):
    metadata = job["metadata"]
    assert json.loads((job["output"] / contract.METADATA_FILE).read_text()) == metadata
    assert metadata[contract.META_SCHEMA_VERSION] == contract.SCHEMA_VERSION
    assert metadata[contract.META_LABELS] == ["cat", "dog", "fish"]
    assert metadata[contract.META_NUM_CLASSES] == 3
    assert metadata[contract.META_IMAGE_SIZE] == IMAGE_SIZE
    assert metadata[contract.META_RESIZE_MODE] == "shorter_side"
    assert metadata[contract.META_JPEG_QUALITY] == 95
    assert metadata[contract.META_INPUT_LAYOUT] == "class_folders"
    class_counts = {
        label: sum(
            s[contract.META_CLASS_COUNTS][label] for s in metadata[contract.META_SPLITS].values()
        )
        for label in metadata[contract.META_LABELS]
    }
    # cat: 14 + nested + rotated (the copy is a duplicate, the conflict copy is not a cat);
    # dog: 12 + transparent; fish: 10 - the one that conflicts.
    assert class_counts == {"cat": 16, "dog": 13, "fish": 9}


@pytest.mark.slow
def test_rerun_writes_byte_identical_files(job, tmp_path):
    first = file_bytes(job["output"])
    saved = tmp_path / "first"
    shutil.move(job["output"], saved)  # the rerun needs an empty output directory
    try:
        run_job(job["input"], job["output"], *job["flags"])
        assert file_bytes(job["output"]) == first
    finally:
        shutil.rmtree(job["output"], ignore_errors=True)
        shutil.move(saved, job["output"])


@pytest.mark.slow
def test_adding_images_moves_no_existing_image_to_another_split(job, tmp_path):
    grown = tmp_path / "grown"
    shutil.copytree(job["input"], grown)
    write_class_images(grown, {"cat": 10, "dog": 10, "bird": 10}, first_seed=500)
    run_job(grown, tmp_path / "out", *job["flags"])

    def split_of_hash(output_dir) -> dict[bytes, str]:
        splits = {}
        for path in output_dir.glob(f"*{contract.TFRECORD_SUFFIX}"):
            for record in tf.data.TFRecordDataset(str(path)):
                example = tf.train.Example.FromString(record.numpy())
                splits[example.features.feature[contract.FEATURE_SHA256].bytes_list.value[0]] = (
                    path.name.split("-")[0]
                )
        return splits

    before, after = split_of_hash(job["output"]), split_of_hash(tmp_path / "out")
    assert len(after) == len(before) + 30
    assert {sha: after[sha] for sha in before} == before


@pytest.mark.slow
@pytest.mark.parametrize("resize_mode", ["crop", "pad", "stretch"])
def test_square_resize_modes_store_square_images(tmp_path, resize_mode):
    write_class_images(tmp_path / "in", {"a": 2, "b": 1})
    metadata = run_job(
        tmp_path / "in", tmp_path / "out", "--image_size", "16", "--resize_mode", resize_mode
    )
    assert metadata[contract.META_RESIZE_MODE] == resize_mode
    records = read_records(tmp_path / "out")
    assert len(records) == 3
    for record in records:
        assert (record[contract.FEATURE_HEIGHT], record[contract.FEATURE_WIDTH]) == (16, 16)
        assert tf.io.decode_jpeg(record[contract.FEATURE_ENCODED]).shape == (16, 16, 3)


@pytest.mark.slow
def test_header_over_max_pixels_is_rejected_before_decoding(tmp_path):
    write_class_images(tmp_path / "in", {"a": 3})  # one lands in train
    write(tmp_path / "in" / "a" / "big.png", encode(Image.new("RGB", (100, 100)), "PNG"))
    flags = ("--max_pixels", "5000", "--image_size", "16")
    metadata = run_job(tmp_path / "in", tmp_path / "out", *flags)
    assert metadata[contract.META_REJECTED_REASONS] == {image_io.TOO_MANY_PIXELS: 1}
    (entry,) = read_log(tmp_path / "out", contract.REJECTED_PREFIX)
    assert "100x100 = 10,000 pixels, more than --max_pixels 5,000" in entry[contract.LOG_DETAIL]


@pytest.mark.slow
def test_small_classes_warn_and_fail_with_strict(tmp_path, caplog):
    write_class_images(tmp_path / "in", {"a": 3, "b": 1})
    with caplog.at_level(logging.WARNING):
        run_job(tmp_path / "in", tmp_path / "warn", "--min_images_per_class", "2")
    assert "b (1)" in caplog.text
    with pytest.raises(PreprocessError, match=r"fewer than --min_images_per_class 2.*: b \(1\)"):
        run_job(tmp_path / "in", tmp_path / "strict", "--min_images_per_class", "2", "--strict")


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(
        PreprocessError, match=r"--input .*nowhere does not exist or holds no files"
    ):
        run_job(tmp_path / "nowhere", tmp_path / "out")


def test_input_without_class_folders_is_a_clear_error(tmp_path):
    write(tmp_path / "flat" / "a.png", encode(noise(1), "PNG"))
    with pytest.raises(
        PreprocessError, match=r"holds files but no class folders; expected SRC/<class_name>/"
    ):
        run_job(tmp_path / "flat", tmp_path / "out")


def test_non_empty_output_is_a_clear_error(tmp_path):
    write_class_images(tmp_path / "in", {"a": 1})
    write(tmp_path / "out" / "old.tfrecord", b"old")
    with pytest.raises(
        PreprocessError, match=r"--output .*out is not empty .*choose a new directory"
    ):
        run_job(tmp_path / "in", tmp_path / "out")


def test_output_inside_input_is_a_clear_error(tmp_path):
    write_class_images(tmp_path / "in", {"a": 1})
    with pytest.raises(PreprocessError, match=r"--output .*in/dataset is inside --input"):
        run_job(tmp_path / "in", tmp_path / "in" / "dataset")


def test_unwritable_output_is_a_clear_error(tmp_path):
    write_class_images(tmp_path / "in", {"a": 1})
    write(tmp_path / "a_file", b"")
    with pytest.raises(PreprocessError, match=r"cannot write to --output .*a_file/dataset"):
        run_job(tmp_path / "in", tmp_path / "a_file" / "dataset")


def test_bad_flags_exit_with_the_flag_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_job(tmp_path, tmp_path / "out", "--split", "train=0.9")
    assert "--split fractions add up to 0.9, not 1" in capsys.readouterr().err


def test_main_prints_one_line_for_user_errors(tmp_path, monkeypatch, capsys):
    argv = ["objrec-preprocess", "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path)]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        pipeline.main()
    assert exit_info.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert re.match(r"^objrec-preprocess: error: --input .*nowhere", line)


def test_a_job_that_writes_no_training_example_fails(tmp_path):
    """Every image bad: the logs and metadata are written, and the job is an error."""
    write(tmp_path / "in" / "cat" / "a.png", b"not a png")
    write(tmp_path / "in" / "dog" / "b.png", b"")
    with pytest.raises(PreprocessError, match=r"no training example written to .*every input"):
        run_job(tmp_path / "in", tmp_path / "out")
    rejected = read_log(tmp_path / "out", contract.REJECTED_PREFIX)
    assert len(rejected) == 2


@pytest.mark.slow
@pytest.mark.skipif(
    not sample_data.DEBIAN_DIR.is_dir(), reason="dataset-fashion-mnist not installed"
)
def test_fashion_mnist_sample_folder_end_to_end(tmp_path):
    counts = sample_data.write_sample_folder(str(tmp_path / "images"), per_class=3)
    metadata = run_job(tmp_path / "images", tmp_path / "dataset", "--image_size", "32")
    assert metadata[contract.META_LABELS] == sorted(sample_data.CLASS_NAMES)
    assert metadata[contract.META_NUM_INPUTS] == sum(counts.values()) == 30
    records = read_records(tmp_path / "dataset")
    assert len(records) + metadata[contract.META_NUM_DUPLICATES] == 30
    assert {(r[contract.FEATURE_HEIGHT], r[contract.FEATURE_WIDTH]) for r in records} == {(32, 32)}


@pytest.mark.slow
def test_gcs_input_and_output_take_the_same_code_path(gcs_bucket, tmp_path):
    write_class_images(tmp_path / "local", {"cat": 3, "dog": 2})
    for path in sorted((tmp_path / "local").rglob("*.*")):
        relative = path.relative_to(tmp_path / "local").as_posix()
        gcs_bucket.blob(f"images/{relative}").upload_from_filename(str(path))
    # The Cloud Console's "Create folder": a zero-byte object named like a folder, no input.
    gcs_bucket.blob("images/cat/").upload_from_string(b"")
    source, output = "gs://objrec-test/images", "gs://objrec-test/dataset"

    metadata = run_job(source, output, "--image_size", "16")

    assert metadata[contract.META_NUM_INPUTS] == 5
    assert metadata[contract.META_NUM_REJECTED] == 0

    names = {blob.name for blob in gcs_bucket.client.list_blobs("objrec-test", prefix="dataset/")}
    files = [
        name
        for split in metadata[contract.META_SPLITS].values()
        for name in split[contract.META_FILES]
    ]
    assert names == {f"dataset/{name}" for name in files} | {
        f"dataset/{contract.LABELS_FILE}",
        f"dataset/{contract.METADATA_FILE}",
        f"dataset/{contract.log_file_name(contract.REJECTED_PREFIX)}",
        f"dataset/{contract.log_file_name(contract.DUPLICATES_PREFIX)}",
        f"dataset/{contract.REPORT_FILE}",
    }
    for name in files:
        gcs_bucket.blob(f"dataset/{name}").download_to_filename(str(tmp_path / name))
    sources = sorted(record[contract.FEATURE_SOURCE].decode() for record in read_records(tmp_path))
    assert sources == sorted(
        f"{source}/{path.relative_to(tmp_path / 'local').as_posix()}"
        for path in (tmp_path / "local").rglob("*.*")
    )
    with pytest.raises(PreprocessError, match="--output gs://objrec-test/dataset is not empty"):
        run_job(source, output)


def test_a_local_run_shows_its_counts_as_it_goes_when_asked(tmp_path, capsys):
    write_class_images(tmp_path / "in", {"cat": 3, "dog": 2})
    write(tmp_path / "in" / "dog" / "broken.jpg", b"not a jpeg")
    shutil.copy(tmp_path / "in" / "cat" / "cat_1.png", tmp_path / "in" / "cat" / "copy.png")
    run_job(tmp_path / "in", tmp_path / "out", "--progress", "on")
    shown = capsys.readouterr().err
    assert "read 7 · decoded 6 · rejected 1 · duplicates 1 · written 5" in shown
    run_job(tmp_path / "in", tmp_path / "out-quiet", "--progress", "off")
    assert "read 7" not in capsys.readouterr().err


def test_the_dataset_page_shows_counts_reasons_and_samples_per_class(tmp_path):
    write_class_images(tmp_path / "in", {"cat": 3, "dog": 2})
    write(tmp_path / "in" / "dog" / "broken.jpg", b"not a jpeg")
    metadata = run_job(tmp_path / "in", tmp_path / "out")
    parts = html_pages.parse(tmp_path / "out" / contract.REPORT_FILE)
    assert parts.external == []
    assert {"objrec dataset", "Dataset", "Samples per class"} <= set(parts.headings)
    for reason, count in metadata[contract.META_REJECTED_REASONS].items():
        assert reason in parts.cells and str(count) in parts.cells
    captions = [alt for _, alt in parts.images]
    train = metadata[contract.META_SPLITS]["train"][contract.META_CLASS_COUNTS]
    assert captions == ["cat"] * train["cat"] + ["dog"] * train["dog"]  # all, up to 6 a class
    stored = {record[contract.FEATURE_ENCODED] for record in read_records(tmp_path / "out")}
    assert {html_pages.decoded(src) for src, _ in parts.images} <= stored
