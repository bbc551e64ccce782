"""Finding and reading the image files objrec-predict is given (local paths or gs://)."""

import dataclasses
import os
from collections.abc import Sequence

import tensorflow as tf

from objrec import contract

# Formats the exported model decodes (docs/contracts.md); folders are searched for these only,
# while a file named on the command line is always sent, whatever its name.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


@dataclasses.dataclass(frozen=True)
class ImageFile:
    """A file's bytes, or why they cannot be sent."""

    path: str
    data: bytes | None
    error: str | None = None


def find(paths: Sequence[str]) -> list[str]:
    """Files named, plus image files under folders named (recursively, sorted, no hidden ones).

    Raises:
        FileNotFoundError: a path does not exist.
    """
    files = []
    for path in paths:
        if tf.io.gfile.isdir(path):
            files.extend(images_under(path))
        elif tf.io.gfile.exists(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return files


def images_under(folder: str) -> list[str]:
    """Image files anywhere under `folder`, sorted; hidden files and folders skipped."""
    found = []
    for directory, subdirectories, names in tf.io.gfile.walk(folder):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        found.extend(
            os.path.join(directory, name)
            for name in names
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)
        )
    return sorted(found)


def read(path: str, max_bytes: int) -> ImageFile:
    """The file's bytes if it can be read and fits in a request."""
    try:
        size = tf.io.gfile.stat(path).length
        if size > max_bytes:
            return ImageFile(
                path,
                None,
                f"too large to send: {size_text(size)}, over {size_text(max_bytes)} per request",
            )
        with tf.io.gfile.GFile(path, "rb") as file:
            return ImageFile(path, file.read())
    except (OSError, tf.errors.OpError) as error:
        return ImageFile(path, None, f"cannot read: {getattr(error, 'message', error)}")


def size_text(size: int) -> str:
    """`3.2 MiB`, or `100 bytes` below a tenth of a MiB."""
    return f"{size / contract.MIB:.1f} MiB" if size >= contract.MIB / 10 else f"{size} bytes"
