"""Folder inputs: each layout a PTransform producing `SourceFile(uri, label, split)` elements.

Two layouts of a folder SRC (local or gs://):

- class folders: `SRC/<class>/<image>`; the split comes from the content hash (`split` None);
- split folders: `SRC/<split>/<class>/<image>` with `<split>` one of train, validation (or
  val), test; the folder names the split.

A manifest (manifest.py) produces the same elements; everything downstream (hashing,
de-duplication, decoding, sharding) sees only those. Files are listed inside the pipeline
(`fileio.MatchAll`), so the job graph holds one glob, not a million URIs, and labels are
collected from the listed files: Beam's FileSystems cannot list only the "folders" of a bucket
without listing every object under it. For the same reason a file that does not fit the layout
is found while listing, and rejected (`outside_split_folders`, `no_class_folder`) rather than
silently skipped.
"""

import os
import stat
from collections.abc import Iterator
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import BeamIOError, FileMetadata
from apache_beam.io.filesystems import FileSystems

from objrec import contract
from preprocessing import metrics, report
from preprocessing.errors import PreprocessError

CLASS_FOLDERS = "class_folders"
SPLIT_FOLDERS = "split_folders"
# A split folder's (or a manifest's split column's) name -> the split, `val` as a short form.
SPLIT_NAMES = contract.SPLIT_NAMES
FOLDER_LAYOUT_HINT = (
    "expected SRC/<class_name>/<image files>, one folder per class, optionally inside "
    "SRC/train/, SRC/validation/ (or val/), SRC/test/; or a manifest .csv/.jsonl"
)
# Rejection reasons of files that do not fit the split-folder layout.
OUTSIDE_SPLIT_FOLDERS = "outside_split_folders"
NO_CLASS_FOLDER = "no_class_folder"
INVALID_LABEL = "invalid_label"
# Rejection reasons of listed paths that are no file to read (local inputs).
UNDECODABLE_NAME = "undecodable_name"
BROKEN_LINK = "broken_link"
NOT_A_REGULAR_FILE = "not_a_regular_file"


class SourceFile(NamedTuple):
    """One input file, its class name, and its split if the input names one (else None)."""

    uri: str
    label: str
    split: str | None


class MisplacedFileError(ValueError):
    """A listed file that does not fit the folder layout; `reason` is a rejection reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def split_of_name(name: str) -> str:
    """The split a folder or manifest names (`val` is validation); ValueError if none."""
    try:
        return SPLIT_NAMES[name]
    except KeyError:
        raise ValueError(
            f"{name!r} is not a split; the splits are {', '.join(SPLIT_NAMES)}"
        ) from None


def is_local(path: str) -> bool:
    """A path on this machine's file system, not a URI such as gs://."""
    return "://" not in path


def files_pattern(root: str) -> str:
    """Glob of every file inside a folder of `root`, at any depth (`root/*/**`)."""
    return FileSystems.join(root, "*", "**")


def relative_parts(root: str, uri: str) -> list[str]:
    """The path of `uri` below `root`, split into its folder and file names."""
    return uri[len(root.rstrip("/")) :].lstrip("/").split("/")


def label_of(root: str, uri: str) -> str:
    """The class of a file under `root/<class>/`: the first folder of its path below `root`.

    Raises:
        MisplacedFileError: INVALID_LABEL for a folder name that cannot be one line of
            labels.txt (a line break, U+2028 and the like, or only blanks).
    """
    return checked_label(relative_parts(root, uri)[0])


def checked_label(label: str) -> str:
    """`label` if it can be a class name, one line of labels.txt; MisplacedFileError if not."""
    if label.splitlines() != [label] or not label.strip():
        raise MisplacedFileError(
            INVALID_LABEL,
            f"class folder {label!r} cannot be a label (labels.txt holds one per line): rename "
            "it without line breaks",
        )
    return label


def class_folder_file(root: str, uri: str) -> SourceFile:
    """The SourceFile of a file under `root/<class>/`: no split named."""
    return SourceFile(uri, label_of(root, uri), None)


def split_folder_file(root: str, uri: str) -> SourceFile:
    """The SourceFile of a file under `root/<split>/<class>/`; MisplacedFileError otherwise."""
    split_folder, *rest = relative_parts(root, uri)
    if split_folder not in SPLIT_NAMES:
        raise MisplacedFileError(
            OUTSIDE_SPLIT_FOLDERS,
            f"{split_folder}/ is not a split folder, yet {root} is split into "
            f"{'/, '.join(SPLIT_NAMES)}/: move it into SRC/<split>/<class>/ or drop it",
        )
    if len(rest) < 2:
        raise MisplacedFileError(
            NO_CLASS_FOLDER,
            f"the file lies in {split_folder}/ itself; its class folder is missing: move it "
            f"into {split_folder}/<class>/",
        )
    return SourceFile(uri, checked_label(rest[0]), split_of_name(split_folder))


def _has_match(pattern: str) -> bool:
    try:
        # limits=[1]: stops listing at the first object, even in a bucket of a million.
        return bool(FileSystems.match([pattern], limits=[1])[0].metadata_list)
    except BeamIOError as error:
        raise PreprocessError(f"cannot list {pattern}: {error}") from None


def all_files_pattern(root: str) -> str:
    """Every object under `root`, at any depth."""
    return FileSystems.join(root, "**")


def check_has_files(root: str, hint: str) -> None:
    """Fails fast, before any work, when `root` does not exist or holds no files."""
    if not _has_match(all_files_pattern(root)):
        raise PreprocessError(f"--input {root} does not exist or holds no files; {hint}")


def check_class_folders(root: str) -> None:
    """Fails fast, before any work, when `root` has no files or no class folders."""
    check_has_files(root, FOLDER_LAYOUT_HINT)
    if not _has_match(files_pattern(root)):
        raise PreprocessError(
            f"--input {root} holds files but no class folders; {FOLDER_LAYOUT_HINT}"
        )


def folder_layout(root: str) -> str:
    """SPLIT_FOLDERS if `root` has a split folder holding class folders, else CLASS_FOLDERS.

    Costs one short listing per split name (4), never a listing of the whole input.
    """
    for name in SPLIT_NAMES:
        if _has_match(files_pattern(FileSystems.join(root, name))):
            return SPLIT_FOLDERS
    return CLASS_FOLDERS


def file_path(metadata: FileMetadata) -> list[str]:
    """The path of a listed object; none for a folder placeholder (a name ending in `/`).

    The Cloud Console's "Create folder" makes such zero-byte objects: they are not images.
    """
    return [] if metadata.path.endswith("/") else [metadata.path]


class ClassifyFileFn(beam.DoFn):
    """A listed file's path -> its SourceFile, or a rejected-log entry if it is misplaced."""

    def __init__(self, root: str, layout: str):
        self._root = root
        self._source_file = split_folder_file if layout == SPLIT_FOLDERS else class_folder_file

    def process(self, uri: str):
        metrics.increment(metrics.INPUTS_READ)
        try:
            yield self._source_file(self._root, uri)
        except MisplacedFileError as error:
            yield metrics.rejected_output(report.rejection(uri, error.reason, error.detail))


def printable(path: str) -> str:
    """`path` as UTF-8 text: bytes of a name that is not UTF-8 shown as backslash escapes."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def local_entry(path: str) -> str | dict:
    """A listed local path: the path of a regular file to read, or its rejected-log entry.

    Never opens the path (a FIFO named `x.jpg` would block the open forever).
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        detail = "the file name is not UTF-8, so no record can name it: rename the file"
        return report.rejection(printable(path), UNDECODABLE_NAME, detail)
    try:
        mode = os.stat(path).st_mode
    except OSError as error:  # dangling, or a symbolic link loop
        detail = f"a symbolic link to nothing readable ({error.strerror}): fix or drop it"
        return report.rejection(path, BROKEN_LINK, detail)
    if not stat.S_ISREG(mode):
        detail = "not a regular file (a FIFO, socket or device): only files are read"
        return report.rejection(path, NOT_A_REGULAR_FILE, detail)
    return path


def walk_local(folder: str) -> Iterator[str]:
    """Every non-directory path under `folder`, following directory links once each."""
    seen = set()
    for directory, subdirectories, names in os.walk(folder, followlinks=True):
        identity = os.stat(directory)
        if (identity.st_dev, identity.st_ino) in seen:
            subdirectories.clear()  # a link back to a folder already walked
            continue
        seen.add((identity.st_dev, identity.st_ino))
        subdirectories.sort()
        for name in sorted(names):
            yield os.path.join(directory, name)


class ListLocalFolderFn(beam.DoFn):
    """root -> every path under its folders: regular files, and rejections of the rest.

    Beam's local glob silently leaves out dangling and looping links, names that are not
    UTF-8 (its coder then fails the whole job) and names with a backslash (a glob escape);
    this listing reports each of them, so the accounting holds for every path it meets.
    """

    def process(self, root: str):
        for entry in sorted(os.listdir(root)):
            folder = os.path.join(root, entry)
            if not os.path.isdir(folder):
                continue  # files directly in root belong to no class
            for path in walk_local(folder):
                listed = local_entry(path)
                if isinstance(listed, dict):
                    metrics.increment(metrics.INPUTS_READ)
                    yield metrics.rejected_output(listed)
                else:
                    yield listed


class FolderSource(beam.PTransform):
    """Every file under `root/*/` (nested folders included), classified for `layout`.

    Outputs SourceFiles (main) and rejected-log entries of misplaced files (`REJECTED`).
    Files directly in `root` belong to no class and are not inputs.
    """

    def __init__(self, root: str, layout: str):
        super().__init__()
        self._root = root
        self._layout = layout

    def expand(self, pbegin: beam.pvalue.PBegin):
        if is_local(self._root):
            listed = (
                pbegin
                | "Root" >> beam.Create([self._root])
                | "List"
                >> beam.ParDo(ListLocalFolderFn()).with_outputs(metrics.REJECTED, main="paths")
            )
            paths, unlisted = listed.paths, listed[metrics.REJECTED]
        else:
            paths = (
                pbegin
                | "Pattern" >> beam.Create([files_pattern(self._root)])
                | "Match" >> fileio.MatchAll()
                | "Path" >> beam.FlatMap(file_path)
            )
            unlisted = pbegin | "NoneUnlisted" >> beam.Create([])
        classified = (
            paths
            # Listing runs on one worker; spread the files before the per-file work.
            | "Spread" >> beam.Reshuffle()
            | "Classify"
            >> beam.ParDo(ClassifyFileFn(self._root, self._layout)).with_outputs(
                metrics.REJECTED, main="files"
            )
        )
        rejected = (classified[metrics.REJECTED], unlisted) | "Rejected" >> beam.Flatten()
        return {"files": classified.files, metrics.REJECTED: rejected}
