"""Inputs of the job: split folders and CSV/JSONL manifests, from units to whole runs."""

import io
import json
import os
import pathlib

import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from objrec import contract
from preprocessing import config as config_lib
from preprocessing import (
    image_io,
    inputs,
    manifest,
    metrics,
    pipeline,
    report,
    sources,
    transforms,
)
from preprocessing.dedup import LABEL_CONFLICT
from preprocessing.errors import PreprocessError
from preprocessing.sources import SourceFile
from tests.dataset_fixtures import (
    encode,
    noise,
    read_log,
    read_records,
    run_job,
    write,
)

# split folders


@pytest.mark.parametrize(
    "name, split",
    [("train", "train"), ("validation", "validation"), ("val", "validation"), ("test", "test")],
)
def test_split_names(name, split):
    assert sources.split_of_name(name) == split


def test_an_unknown_split_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="'dev' is not a split; the splits are train, valid"):
        sources.split_of_name("dev")


def test_split_folder_file_takes_split_and_class_from_the_folders():
    root = "gs://bucket/photos/"
    assert sources.split_folder_file(root, "gs://bucket/photos/val/cat/2024/a.jpg") == (
        SourceFile("gs://bucket/photos/val/cat/2024/a.jpg", "cat", "validation")
    )


@pytest.mark.parametrize(
    "uri, reason, words",
    [
        ("/in/cat/a.jpg", sources.OUTSIDE_SPLIT_FOLDERS, "cat/ is not a split folder"),
        ("/in/training/cat/a.jpg", sources.OUTSIDE_SPLIT_FOLDERS, "move it into SRC/<split>/"),
        ("/in/test/a.jpg", sources.NO_CLASS_FOLDER, "move it into test/<class>/"),
    ],
)
def test_misplaced_files_in_split_folders(uri, reason, words):
    with pytest.raises(sources.MisplacedFileError) as raised:
        sources.split_folder_file("/in", uri)
    assert raised.value.reason == reason
    assert words in raised.value.detail


def test_folder_layout_is_found_from_split_folders_holding_class_folders(tmp_path):
    write(tmp_path / "plain" / "test" / "a.png", b"1")  # a class named "test"
    write(tmp_path / "split" / "val" / "cat" / "a.png", b"1")
    assert inputs.inspect_input(str(tmp_path / "plain")).layout == inputs.CLASS_FOLDERS
    assert inputs.inspect_input(str(tmp_path / "split")).layout == inputs.SPLIT_FOLDERS


# manifests


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("m.csv", manifest.CSV),
        ("gs://b/M.CSV", manifest.CSV),
        ("/d/m.jsonl", manifest.JSONL),
        ("/d/images", None),
        ("/d/m.json", None),
    ],
)
def test_manifest_format_comes_from_the_extension(uri, expected):
    assert manifest.manifest_format(uri) == expected


def test_csv_header_may_have_any_order_case_spaces_a_byte_order_mark_and_more_columns():
    assert manifest.parse_header("\ufeffLabel, URI ,width") == ("label", "uri", "width")


@pytest.mark.parametrize(
    "line, words",
    [
        ("path,label", "has no uri column"),
        ("uri,class", "has no label column"),
        ("uri,label,label", "names label more than once"),
    ],
)
def test_bad_csv_headers(line, words):
    with pytest.raises(ValueError, match=words):
        manifest.parse_header(line)


@pytest.mark.parametrize(
    "line, manifest_format, expected",
    [
        ("cat/1.jpg,cat,train", manifest.CSV, ("cat/1.jpg", "cat", "train")),
        ('"a,b.jpg", cat , Val', manifest.CSV, ("a,b.jpg", "cat", "validation")),
        ("cat/1.jpg,cat,", manifest.CSV, ("cat/1.jpg", "cat", None)),
        ('{"uri": "x.png", "label": "dog"}', manifest.JSONL, ("x.png", "dog", None)),
        ('{"uri": "x.png", "label": "dog", "split": null}', manifest.JSONL, ("x.png", "dog", None)),
        (
            '{"uri": "x.png", "label": "dog", "split": "test", "w": 3}',
            manifest.JSONL,
            ("x.png", "dog", "test"),
        ),
    ],
)
def test_parse_row(line, manifest_format, expected):
    assert manifest.parse_row(line, manifest_format, ("uri", "label", "split")) == expected


@pytest.mark.parametrize(
    "line, manifest_format, words",
    [
        ("cat/1.jpg,cat,dev", manifest.CSV, "'dev' is not a split"),
        ("cat/1.jpg,,train", manifest.CSV, "the label is empty"),
        ("cat/1.jpg,cat", manifest.CSV, "2 fields, but the header row names 3"),
        ('"cat/1.jpg,cat,train', manifest.CSV, "keep each row on one line"),
        ('{"uri": "x.png"}', manifest.JSONL, "label is None, not text"),
        ('{"uri": 7, "label": "dog"}', manifest.JSONL, "uri is 7, not text"),
        ('["x.png", "dog"]', manifest.JSONL, "a JSON list, not an object"),
        ("uri=x.png", manifest.JSONL, "not JSON"),
    ],
)
def test_bad_rows_say_what_is_wrong(line, manifest_format, words):
    with pytest.raises(ValueError, match=words):
        manifest.parse_row(line, manifest_format, ("uri", "label", "split"))


@pytest.mark.parametrize(
    "base, uri, expected",
    [
        ("/data/lists", "/photos/a.jpg", "/photos/a.jpg"),
        ("/data/lists", "gs://bucket/a.jpg", "gs://bucket/a.jpg"),
        ("/data/lists", "cat/a.jpg", "/data/lists/cat/a.jpg"),
        ("/data/lists", "./cat/../dog/a.jpg", "/data/lists/dog/a.jpg"),
        ("gs://bucket/lists", "cat/a.jpg", "gs://bucket/lists/cat/a.jpg"),
        ("gs://bucket/lists", "../photos/a.jpg", "gs://bucket/photos/a.jpg"),
    ],
)
def test_relative_uris_are_resolved_against_the_manifest_folder(base, uri, expected):
    assert manifest.resolve_uri(base, uri) == expected


def test_a_relative_uri_may_not_leave_the_bucket():
    with pytest.raises(ValueError, match="climbs out of gs://bucket/lists"):
        manifest.resolve_uri("gs://bucket/lists", "../../other/a.jpg")


def write_text(path: pathlib.Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_check_manifest_counts_rows_and_rows_naming_a_split(tmp_path):
    uri = write_text(tmp_path / "m.csv", "uri,label,split\na.png,cat,train\n\nb.png,dog,\n")
    info = manifest.check_manifest(uri)
    assert info == manifest.ManifestInfo(uri, manifest.CSV, ("uri", "label", "split"), 2, 1)


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("m.csv", "", "the file is empty"),
        ("m.csv", "uri,label\n\n", "lists no images"),
        ("m.jsonl", "\n", "lists no images"),
        ("m.csv", "file,label\na.png,cat\n", "has no uri column"),
        ("m.csv", "uri,label,split\na.png,cat,train\nb.png,dog,holdout\n", "line 3: 'holdout'"),
        ("m.jsonl", '{"uri": "a.png", "label": "cat"}\n{"uri": "b.png"}\n', "line 2: label"),
        ("m.csv", "uri,label\nhttp://example.com/a.png,cat\n", "line 2: no file system reads"),
        ("m.csv", "uri,label\n'\xe9',cat\n".encode("latin-1"), "not UTF-8 text"),
    ],
)
def test_manifest_mistakes_are_one_clear_error_before_any_work(tmp_path, name, content, words):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(PreprocessError, match=f"^--input {path}.*{words}"):
        inputs.inspect_input(str(path))


def test_a_missing_manifest_is_named(tmp_path):
    with pytest.raises(PreprocessError, match=r"cannot read --input .*nowhere.csv"):
        inputs.inspect_input(str(tmp_path / "nowhere.csv"))


def test_manifest_source_yields_source_files_from_csv_and_jsonl(tmp_path):
    csv_uri = write_text(
        tmp_path / "lists" / "m.csv",
        "\ufeffuri,label,split\r\ncat/a.png,cat,val\r\n\r\n/abs/b.png,dog,\r\n",
    )
    jsonl_uri = write_text(
        tmp_path / "m.jsonl",
        '{"uri": "gs://bucket/c.png", "label": "dog", "split": "test"}\n'
        '{"uri": "d.png", "label": "cat"}\n',
    )
    with BeamTestPipeline(runner="FnApiRunner") as test_pipeline:
        from_csv = test_pipeline | "Csv" >> manifest.ManifestSource(
            manifest.check_manifest(csv_uri)
        )
        from_jsonl = test_pipeline | "Jsonl" >> manifest.ManifestSource(
            manifest.check_manifest(jsonl_uri)
        )
        assert_that(
            from_csv,
            equal_to(
                [
                    SourceFile(str(tmp_path / "lists" / "cat" / "a.png"), "cat", "validation"),
                    SourceFile("/abs/b.png", "dog", None),
                ]
            ),
            label="FromCsv",
        )
        assert_that(
            from_jsonl,
            equal_to(
                [
                    SourceFile("gs://bucket/c.png", "dog", "test"),
                    SourceFile(str(tmp_path / "d.png"), "cat", None),
                ]
            ),
            label="FromJsonl",
        )


# options that conflict with the input


def test_split_flag_with_split_folders_is_a_clear_error(tmp_path):
    write(tmp_path / "in" / "train" / "cat" / "a.png", encode(noise(1), "PNG"))
    with pytest.raises(PreprocessError, match=r"--split cannot apply .* folders name the split"):
        run_job(tmp_path / "in", tmp_path / "out", "--split", "train=0.5,test=0.5")


def test_split_flag_with_a_manifest_naming_every_split_is_a_clear_error(tmp_path):
    uri = write_text(tmp_path / "m.csv", "uri,label,split\na.png,cat,train\n")
    with pytest.raises(PreprocessError, match=r"split column names the split of every image"):
        run_job(uri, tmp_path / "out", "--split", "train=1")


# whole runs


def image_file(image_format: str, seed: int) -> bytes:
    """A small noise image in `image_format`, in a mode that format commonly holds."""
    picture = noise(seed, (40, 30))
    if image_format == "GIF":
        return encode(picture.convert("P"), "GIF")
    if image_format == "TIFF":
        return encode(picture.convert("CMYK"), "TIFF")
    if image_format == "PNG":
        return encode(picture.convert("LA"), "PNG")
    return encode(picture, image_format)


@pytest.fixture(scope="module")
def split_folder_run(tmp_path_factory):
    """A split-folder input with every format, a copy across splits and a misplaced file."""
    root = tmp_path_factory.mktemp("split") / "in"
    formats = ["JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"]
    layout = {"train": 6, "val": 3, "test": 3}
    seed = 0
    for split, count in layout.items():
        for index in range(count):
            label = "cat" if index % 2 else "dog"
            image_format = formats[seed % len(formats)]
            write(
                root / split / label / f"{seed}.{image_format.lower()}",
                image_file(image_format, seed),
            )
            seed += 1
    write(
        root / "train" / "dog" / "copy_of_test.png", (root / "test" / "dog" / "9.bmp").read_bytes()
    )
    write(root / "cat" / "stray.png", image_file("PNG", 50))
    write(root / "test" / "cat" / "broken.jpg", image_file("JPEG", 51)[:300])
    output = tmp_path_factory.mktemp("dataset") / "out"
    argv = ["--input", str(root), "--output", str(output), "--image_size", "16"]
    # run()'s own steps, to keep the PipelineResult and its counters.
    config, beam_args = config_lib.parse_args(argv)
    options = pipeline.pipeline_options(beam_args, save_main_session=False)
    spec = pipeline.check_before_work(config, options)
    result = pipeline.launch(config, spec, options)
    metadata = pipeline.finish(config)
    return {"input": root, "output": output, "metadata": metadata, "result": result}


def split_of_each_source(output: pathlib.Path) -> dict[str, str]:
    splits = {}
    for path in output.glob(f"*{contract.TFRECORD_SUFFIX}"):
        for record in tf.data.TFRecordDataset(str(path)):
            features = tf.train.Example.FromString(record.numpy()).features.feature
            source = features[contract.FEATURE_SOURCE].bytes_list.value[0].decode()
            splits[source] = path.name.split("-")[0]
    return splits


@pytest.mark.slow
def test_split_folders_are_respected_and_the_held_out_copy_is_kept(split_folder_run):
    root = split_folder_run["input"]
    stored = split_of_each_source(split_folder_run["output"])
    expected = {
        str(path): sources.split_of_name(path.relative_to(root).parts[0])
        for path in root.glob("*/*/*")
        if path.name not in ("copy_of_test.png", "broken.jpg")
    }
    assert stored == expected
    assert read_log(split_folder_run["output"], contract.DUPLICATES_PREFIX) == [
        {
            contract.LOG_URI: str(root / "train" / "dog" / "copy_of_test.png"),
            contract.LOG_DUPLICATE_OF: str(root / "test" / "dog" / "9.bmp"),
            contract.LOG_LABEL: "dog",
        }
    ]
    rejected = read_log(split_folder_run["output"], contract.REJECTED_PREFIX)
    assert [(entry[contract.LOG_URI], entry[contract.LOG_REASON]) for entry in rejected] == [
        (str(root / "cat" / "stray.png"), sources.OUTSIDE_SPLIT_FOLDERS),
        (str(root / "test" / "cat" / "broken.jpg"), image_io.TRUNCATED),
    ]


@pytest.mark.slow
def test_split_folder_run_stores_every_format_as_rgb_and_accounts_for_every_file(
    split_folder_run,
):
    metadata = split_folder_run["metadata"]
    assert metadata[contract.META_INPUT_LAYOUT] == inputs.SPLIT_FOLDERS
    assert metadata[contract.META_LABELS] == ["cat", "dog"]
    records = read_records(split_folder_run["output"])
    sources_stored = {record[contract.FEATURE_SOURCE].decode() for record in records}
    assert {pathlib.Path(uri).suffix for uri in sources_stored} == {
        ".jpeg",
        ".png",
        ".gif",
        ".bmp",
        ".webp",
        ".tiff",
    }
    hashes = [record[contract.FEATURE_SHA256] for record in records]
    assert len(set(hashes)) == len(hashes)  # no content in two splits, nor twice in one
    for record in records:
        decoded = Image.open(io.BytesIO(record[contract.FEATURE_ENCODED]))
        assert (decoded.format, decoded.mode) == ("JPEG", "RGB")
        assert min(decoded.size) == 16
    every_file = {str(path) for path in split_folder_run["input"].rglob("*") if path.is_file()}
    logged = [
        entry[contract.LOG_URI]
        for prefix in (contract.REJECTED_PREFIX, contract.DUPLICATES_PREFIX)
        for entry in read_log(split_folder_run["output"], prefix)
    ]
    assert sorted([*sources_stored, *logged]) == sorted(every_file)
    assert metadata[contract.META_NUM_INPUTS] == len(every_file) == 15
    splits = metadata[contract.META_SPLITS]
    assert {name: split[contract.META_NUM_EXAMPLES] for name, split in splits.items()} == {
        "train": 6,
        "validation": 3,
        "test": 3,
    }


@pytest.mark.slow
def test_counters_of_a_run_equal_its_metadata(split_folder_run):
    metadata = split_folder_run["metadata"]
    counters = metrics.job_counters(split_folder_run["result"])
    assert counters == {
        metrics.INPUTS_READ: metadata[contract.META_NUM_INPUTS],
        metrics.DUPLICATES: metadata[contract.META_NUM_DUPLICATES],
        **{
            metrics.rejected_counter(reason): count
            for reason, count in metadata[contract.META_REJECTED_REASONS].items()
        },
        **{
            metrics.written_counter(name): split[contract.META_NUM_EXAMPLES]
            for name, split in metadata[contract.META_SPLITS].items()
        },
        # Decoded: every stored record, every duplicate and every label conflict.
        metrics.IMAGES_DECODED: sum(
            split[contract.META_NUM_EXAMPLES] for split in metadata[contract.META_SPLITS].values()
        )
        + metadata[contract.META_NUM_DUPLICATES]
        + metadata[contract.META_REJECTED_REASONS].get(LABEL_CONFLICT, 0),
    }
    assert counters[metrics.INPUTS_READ] == 15
    assert counters[metrics.written_counter("train")] == 6


@pytest.mark.slow
def test_csv_manifest_run_respects_named_splits_and_hashes_the_others(tmp_path, capsys):
    images = tmp_path / "photos"
    rows = ["uri,label,split"]
    for index in range(8):
        label = "cat" if index % 2 else "dog"
        write(images / f"{index}.png", encode(noise(index), "PNG"))
        split = {0: "test", 1: "val", 2: "train"}.get(index, "")
        rows.append(f"photos/{index}.png,{label},{split}")
    # Rows repeated: each is counted and logged once per row, one entry carried per file.
    rows.extend(["photos/missing.png,cat,"] * 3)
    rows.extend(["photos/3.png,cat,"] * 2)  # the same row thrice: two duplicates of itself
    rows.append(f"{images / '4.png'},cat,")  # the same bytes under another label
    manifest_uri = write_text(tmp_path / "m.csv", "\n".join(rows) + "\n")

    metadata = run_job(manifest_uri, tmp_path / "out", "--image_size", "16", "--split", "train=1")

    assert metadata[contract.META_INPUT_LAYOUT] == inputs.MANIFEST
    assert metadata[contract.META_NUM_INPUTS] == 14
    # The end-of-run summary: 7 stored, 5 rejected, 2 duplicates = 14 rows.
    assert capsys.readouterr().out.splitlines()[-3:] == [
        f"Wrote {tmp_path / 'out'}: 7 examples of 14 inputs (train 5 in 5 files, "
        "validation 1 in 1 file, test 1 in 1 file).",
        "Classes: 2, smallest dog with 3.",  # dog: 0, 2, 6 (4 is a conflict)
        "Rejected: 5 (label_conflict 2, unreadable 3); duplicates: 2; label conflicts: 1.",
    ]
    stored = split_of_each_source(tmp_path / "out")
    assert stored == {
        str(images / "0.png"): "test",
        str(images / "1.png"): "validation",
        str(images / "2.png"): "train",
        **{str(images / f"{index}.png"): "train" for index in (3, 5, 6, 7)},  # --split train=1
    }
    rejected = read_log(tmp_path / "out", contract.REJECTED_PREFIX)
    assert sorted((entry[contract.LOG_URI], entry[contract.LOG_REASON]) for entry in rejected) == [
        (str(images / "4.png"), LABEL_CONFLICT),
        (str(images / "4.png"), LABEL_CONFLICT),
        *[(str(images / "missing.png"), transforms.UNREADABLE)] * 3,
    ]
    duplicate = {
        contract.LOG_URI: str(images / "3.png"),
        contract.LOG_DUPLICATE_OF: str(images / "3.png"),
        contract.LOG_LABEL: "cat",
    }
    assert read_log(tmp_path / "out", contract.DUPLICATES_PREFIX) == [duplicate] * 2


@pytest.mark.slow
def test_jsonl_manifest_in_a_bucket_with_relative_uris(gcs_bucket, tmp_path):  # noqa: F811
    for index in range(3):
        data = encode(noise(index), "JPEG")
        gcs_bucket.blob(f"photos/{index}.jpg").upload_from_string(data)
    lines = [
        json.dumps({"uri": f"../photos/{index}.jpg", "label": "cat" if index else "dog"})
        for index in range(3)
    ]
    lines.append(json.dumps({"uri": "gs://objrec-test/photos/gone.jpg", "label": "cat"}))
    gcs_bucket.blob("lists/m.jsonl").upload_from_string("\n".join(lines) + "\n")

    metadata = run_job(
        "gs://objrec-test/lists/m.jsonl", "gs://objrec-test/out", "--image_size", "16"
    )

    assert metadata[contract.META_LABELS] == ["cat", "dog"]
    assert metadata[contract.META_REJECTED_REASONS] == {transforms.UNREADABLE: 1}
    for split in metadata[contract.META_SPLITS].values():
        for name in split[contract.META_FILES]:
            gcs_bucket.blob(f"out/{name}").download_to_filename(str(tmp_path / name))
    sources_stored = sorted(r[contract.FEATURE_SOURCE].decode() for r in read_records(tmp_path))
    assert sources_stored == [f"gs://objrec-test/photos/{index}.jpg" for index in range(3)]
    assert report.num_examples(metadata) == 3


# hostile listings: every path the listing meets is a record, a rejection or a duplicate


def hostile_folder(root: pathlib.Path) -> dict[str, str]:
    """Class folders holding good images next to paths no glob would report; returns the
    expected rejection reason of each hostile path (as the log prints it)."""
    for index, label in enumerate(["cat", "dog"]):
        write(root / label / f"good{index}.png", encode(noise(index), "PNG"))
    cat = root / "cat"
    os.mkfifo(cat / "pipe.jpg")  # opening it would block forever
    (cat / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    (cat / "self.jpg").symlink_to(cat / "self.jpg")
    (cat / "loop").symlink_to(cat)  # a directory cycle, walked once
    non_utf8 = os.fsdecode(b"bad-\xff.png")
    (cat / non_utf8).write_bytes(encode(noise(7), "PNG"))
    write(root / "back\\slash" / "img.png", encode(noise(8), "PNG"))
    write(root / "two\nlines" / "img.png", encode(noise(9), "PNG"))
    write(root / "para\u2028graph" / "img.png", encode(noise(10), "PNG"))
    return {
        str(cat / "pipe.jpg"): sources.NOT_A_REGULAR_FILE,
        str(cat / "dangling.jpg"): sources.BROKEN_LINK,
        str(cat / "self.jpg"): sources.BROKEN_LINK,
        str(cat) + "/bad-\\xff.png": sources.UNDECODABLE_NAME,
        str(root / "two\nlines" / "img.png"): sources.INVALID_LABEL,
        str(root / "para\u2028graph" / "img.png"): sources.INVALID_LABEL,
    }


def test_every_path_of_a_hostile_listing_is_accounted_for(tmp_path):
    expected = hostile_folder(tmp_path / "in")
    summary = run_job(tmp_path / "in", tmp_path / "out", "--image_size", "16")
    rejected = {entry["uri"]: entry["reason"] for entry in read_log(tmp_path / "out", "rejected")}
    assert rejected == expected
    records = {r[contract.FEATURE_SOURCE].decode() for r in read_records(tmp_path / "out")}
    assert records == {
        str(tmp_path / "in" / "cat" / "good0.png"),
        str(tmp_path / "in" / "dog" / "good1.png"),
        str(tmp_path / "in" / "back\\slash" / "img.png"),
    }
    metadata = json.loads((tmp_path / "out" / contract.METADATA_FILE).read_text())
    assert metadata[contract.META_NUM_INPUTS] == len(records) + len(rejected) == 9
    labels = (tmp_path / "out" / contract.LABELS_FILE).read_text().splitlines()
    assert labels == sorted(["back\\slash", "cat", "dog"]) == metadata[contract.META_LABELS]
    assert summary is not None


def test_a_manifest_row_naming_a_fifo_is_rejected_without_opening_it(tmp_path):
    write(tmp_path / "img" / "good.png", encode(noise(1), "PNG"))
    os.mkfifo(tmp_path / "img" / "pipe.png")
    listing = write_text(tmp_path / "labels.csv", "uri,label\nimg/good.png,a\nimg/pipe.png,b\n")
    run_job(listing, tmp_path / "out", "--image_size", "16")
    (entry,) = read_log(tmp_path / "out", "rejected")
    assert entry["reason"] == sources.NOT_A_REGULAR_FILE
    assert entry["uri"].endswith("img/pipe.png")
