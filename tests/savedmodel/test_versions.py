"""objrec.savedmodel.versions: integer version directories, numbering, atomic publishing."""

import os

import tensorflow as tf

from objrec.savedmodel import versions
from tests.serving_fixtures import copy_version


def test_publishing_renames_the_staged_directory_at_once(tmp_path, monkeypatch):
    staging = tmp_path / ".tmp-1"
    (staging / "variables").mkdir(parents=True)
    (staging / "saved_model.pb").write_bytes(b"graph")
    renames, rename = [], os.rename
    monkeypatch.setattr(os, "rename", lambda a, b: renames.append((a, b)) or rename(a, b))
    versions.publish(str(staging), str(tmp_path / "3"))
    assert renames == [(str(staging), str(tmp_path / "3"))]
    assert sorted(os.listdir(tmp_path / "3")) == ["saved_model.pb", "variables"]


def test_list_versions_keeps_complete_integer_directories_newest_first(toy_version, tmp_path):
    for version in (1, 10, 2):
        copy_version(toy_version, tmp_path, version)
    (tmp_path / "3").mkdir()  # still being written: no saved_model.pb yet
    copy_version(toy_version, tmp_path, 0).rename(tmp_path / "5.tmp")
    (tmp_path / "11").write_text("a file, not a directory")

    assert versions.list_versions(str(tmp_path)) == [10, 2, 1]


def test_the_next_version_is_one_more_than_the_highest_integer(tmp_path):
    assert versions.next_version(str(tmp_path / "new-model")) == 1
    for name in ("1", "7", ".tmp-abc", "8.partial"):
        (tmp_path / name).mkdir()
    assert versions.next_version(str(tmp_path)) == 8


def test_publishing_to_an_object_store_copies_saved_model_pb_last(monkeypatch):
    # ram:// takes tf.io.gfile's object-store code path, as gs:// does.
    base = "ram://publish-test/objrec"
    staging = versions.staging_path(base)
    for name, data in (("saved_model.pb", b"graph"), ("variables/variables.index", b"i"),
                       ("assets.extra/warmup", b"w")):  # fmt: skip
        tf.io.gfile.makedirs(f"{staging}/{name}".rsplit("/", 1)[0])
        with tf.io.gfile.GFile(f"{staging}/{name}", "wb") as file:
            file.write(data)
    copied, copy = [], tf.io.gfile.copy
    monkeypatch.setattr(
        tf.io.gfile, "copy", lambda a, b, **options: copied.append(b) or copy(a, b, **options)
    )
    versions.publish(staging, f"{base}/1")
    assert copied[-1] == f"{base}/1/saved_model.pb"
    assert sorted(copied) == sorted(f"{base}/1/{name}" for name in (
        "saved_model.pb", "variables/variables.index", "assets.extra/warmup"))  # fmt: skip
    assert versions.list_versions(base) == [1]


def test_unfinished_exports_are_removed_and_complete_versions_kept(tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"graph")
    (tmp_path / "2" / "variables").mkdir(parents=True)  # cut short: no saved_model.pb
    (tmp_path / ".tmp-0123").mkdir()
    versions.remove_unfinished_exports(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["1"]
