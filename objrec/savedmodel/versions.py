"""Version directories under a model base path: numbering, completeness, atomic publishing.

TF Serving's file-system source serves every integer-named directory that holds a SavedModel
(`saved_model.pb`) and ignores other names. An export is therefore written to a staging
directory (`.tmp-*`, a name servers ignore) and published whole as the next integer version.
"""

import logging
import os
import uuid

import tensorflow as tf

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")

STAGING_PREFIX = ".tmp-"  # a name servers ignore: not an integer version


def list_versions(model_base_path: str) -> list[int]:
    """Integer-named version directories holding a complete SavedModel, newest first.

    Other entries (`tmp-3`, `3.partial`, files) are ignored, as TF Serving does; a version
    directory without `saved_model.pb` yet is still being written and is skipped until it has one.
    """
    versions = []
    for entry in tf.io.gfile.listdir(model_base_path):
        name = entry.rstrip("/")
        if name.isdigit() and is_saved_model_dir(tf.io.gfile.join(model_base_path, name)):
            versions.append(int(name))
    return sorted(versions, reverse=True)


def is_saved_model_dir(path: str) -> bool:
    """Whether `path` holds a SavedModel's graph file."""
    return any(tf.io.gfile.exists(tf.io.gfile.join(path, name)) for name in SAVED_MODEL_FILES)


def staging_path(model_base_path: str) -> str:
    """A new, unique staging directory under the base path (not created)."""
    return tf.io.gfile.join(model_base_path, f"{STAGING_PREFIX}{uuid.uuid4().hex}")


def next_version(model_base_path: str) -> int:
    """One more than the highest integer version directory; 1 for a new model."""
    if not tf.io.gfile.isdir(model_base_path):
        return 1
    versions = [
        int(name.strip("/"))
        for name in tf.io.gfile.listdir(model_base_path)
        if name.strip("/").isdigit()
    ]
    return max(versions, default=0) + 1


def remove_unfinished_exports(model_base_path: str) -> None:
    """Deletes what an export killed part-way left: staging directories, and version
    directories without saved_model.pb (a copy to an object store cut short). Servers never
    load either, so nothing served goes; the export then publishes the next version whole."""
    if not tf.io.gfile.isdir(model_base_path):
        return
    for entry in tf.io.gfile.listdir(model_base_path):
        name = entry.rstrip("/")
        path = tf.io.gfile.join(model_base_path, name)
        unfinished_version = name.isdigit() and not tf.io.gfile.exists(
            tf.io.gfile.join(path, "saved_model.pb")
        )
        if name.startswith(STAGING_PREFIX) or unfinished_version:
            logging.warning("removing the unfinished export %s", path)
            tf.io.gfile.rmtree(path)


def copy_saved_model(source: str, target: str) -> None:
    """Copies a SavedModel directory's files under `target`, saved_model.pb last (a reader
    that waits for that file never sees the variables missing); existing files are replaced."""
    # ram:// matches children by name prefix (it lists `assets/.extra` next to the real
    # `assets.extra/`): copy only what exists.
    files = [
        tf.io.gfile.join(directory, name)
        for directory, _, names in tf.io.gfile.walk(source)
        for name in names
        if tf.io.gfile.exists(tf.io.gfile.join(directory, name))
    ]
    relative = [path[len(source) :].lstrip("/") for path in files]
    for path, name in sorted(
        zip(files, relative, strict=True), key=lambda pair: pair[1] == "saved_model.pb"
    ):
        destination = tf.io.gfile.join(target, name)
        tf.io.gfile.makedirs(destination.rsplit("/", 1)[0])
        tf.io.gfile.copy(path, destination, overwrite=True)


def publish(staging: str, version_dir: str) -> None:
    """Moves `staging` to `version_dir`, whole or not at all.

    On a local disk a directory rename is atomic. Object stores copy object by object (and
    ram:// drops a renamed directory's children), so there the files are copied with
    saved_model.pb last, since a version counts as present once that file exists; a copy
    cut short is removed by the next export (`remove_unfinished_exports`).
    """
    if "://" not in staging:
        os.rename(staging, version_dir)
        return
    copy_saved_model(staging, version_dir)
    try:
        tf.io.gfile.rmtree(staging)
    except tf.errors.NotFoundError:  # ram:// again; a leftover `.tmp-*` is ignored by servers
        logging.warning("could not remove the staging directory %s", staging)
