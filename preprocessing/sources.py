"""Where the inputs come from: each source is a PTransform producing `SourceFile` elements.

A source turns a pipeline root into `SourceFile(uri, label, split)`, where `split` is None
unless the input itself names it; everything downstream (hashing, de-duplication, decoding,
sharding) sees only those elements. Today's source is a folder of class folders; a CSV/JSONL
manifest (`uri,label[,split]`) or pre-split folders (`train/`, `validation/` or `val/`,
`test/`) would be further PTransforms producing the same elements.

Files are listed inside the pipeline (`fileio.MatchAll`), so the job graph holds one glob, not
a million URIs, and labels are collected from the listed files: Beam's FileSystems cannot
list only the "folders" of a bucket without listing every object under it.
"""

from typing import NamedTuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from preprocessing.errors import PreprocessError

FOLDER_LAYOUT_HINT = "expected SRC/<class_name>/<image files>, one folder per class"


class SourceFile(NamedTuple):
    """One input file, its class name, and its split if the input names one (else None)."""

    uri: str
    label: str
    split: str | None


def class_files_pattern(root: str) -> str:
    """Glob of every file inside a class folder of `root`, at any depth (`root/*/**`)."""
    return FileSystems.join(root, "*", "**")


def label_of(root: str, uri: str) -> str:
    """The class of a file under `root`: the first folder of its path below `root`."""
    relative = uri[len(root.rstrip("/")) :].lstrip("/")
    return relative.split("/", 1)[0]


def class_folder_file(root: str, uri: str) -> SourceFile:
    """The SourceFile of a file under `root/<class>/`: no split named."""
    return SourceFile(uri, label_of(root, uri), None)


def _has_match(pattern: str) -> bool:
    try:
        # limits=[1]: stops listing at the first object, even in a bucket of a million.
        return bool(FileSystems.match([pattern], limits=[1])[0].metadata_list)
    except BeamIOError as error:
        raise PreprocessError(f"cannot list {pattern}: {error}") from None


def check_class_folders(root: str) -> None:
    """Fails fast, before any work, when `root` has no files or no class folders."""
    if not _has_match(FileSystems.join(root, "**")):
        raise PreprocessError(
            f"--input {root} does not exist or holds no files; {FOLDER_LAYOUT_HINT}"
        )
    if not _has_match(class_files_pattern(root)):
        raise PreprocessError(
            f"--input {root} holds files but no class folders; {FOLDER_LAYOUT_HINT}"
        )


class ClassFolderSource(beam.PTransform):
    """Every file under `root/<class>/` (nested folders included) as a SourceFile.

    Files directly in `root` belong to no class and are not inputs.
    """

    def __init__(self, root: str):
        super().__init__()
        self._root = root

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        root = self._root
        return (
            pbegin
            | "Pattern" >> beam.Create([class_files_pattern(root)])
            | "Match" >> fileio.MatchAll()
            # Listing runs on one worker; spread the files before the per-file work.
            | "Spread" >> beam.Reshuffle()
            | "ToSourceFile" >> beam.Map(lambda metadata: class_folder_file(root, metadata.path))
        )
