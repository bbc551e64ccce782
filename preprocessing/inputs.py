"""What `--input` is, found out before any work starts, and the PTransform that reads it.

    class folders    SRC/<class>/<image>                    split by content hash
    split folders    SRC/{train,validation|val,test}/<class>/<image>   split from the folder
    manifest         a .csv or .jsonl file: uri,label[,split]          split from the row, or hash

Every layout yields the same `SourceFile(uri, label, split)` elements (sources.py, manifest.py).
"""

import dataclasses

import apache_beam as beam

from preprocessing import metrics, sources
from preprocessing.errors import PreprocessError
from preprocessing.manifest import ManifestInfo, ManifestSource, check_manifest, manifest_format

CLASS_FOLDERS = sources.CLASS_FOLDERS
SPLIT_FOLDERS = sources.SPLIT_FOLDERS
MANIFEST = "manifest"


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """A checked `--input`: its URI, its layout, and for a manifest what checking it found."""

    uri: str
    layout: str
    manifest: ManifestInfo | None = None

    @property
    def names_every_split(self) -> bool:
        """True when the input itself puts every image in a split: `--split` has no use."""
        if self.manifest is not None:
            return self.manifest.num_rows_with_split == self.manifest.num_rows
        return self.layout == SPLIT_FOLDERS


def inspect_input(uri: str) -> InputSpec:
    """The layout of `uri`, checked before any work (a manifest is read in full).

    Raises:
        PreprocessError: the input is missing, empty, or not one of the layouts.
    """
    if manifest_format(uri) is not None:
        return InputSpec(uri, MANIFEST, check_manifest(uri))
    sources.check_class_folders(uri)
    return InputSpec(uri, sources.folder_layout(uri))


def check_split_option(spec: InputSpec, split_given: bool) -> None:
    """Fails when `--split` is given for an input that names the split of every image."""
    if not (split_given and spec.names_every_split):
        return
    if spec.layout == SPLIT_FOLDERS:
        named_by = "its train/, validation/ (or val/), test/ folders name"
    else:
        named_by = "its split column names"
    raise PreprocessError(
        f"--split cannot apply to --input {spec.uri}: {named_by} the split of every image; "
        "drop --split"
    )


class ReadInputs(beam.PTransform):
    """The input's files: (SourceFiles, rejected-log entries of files that fit no class)."""

    def __init__(self, spec: InputSpec):
        super().__init__()
        self._spec = spec

    def expand(self, pbegin: beam.pvalue.PBegin):
        if self._spec.manifest is not None:
            files = pbegin | "Manifest" >> ManifestSource(self._spec.manifest)
            # Every row names its class: a manifest has no misplaced files.
            return files, pbegin | "NoMisplacedFiles" >> beam.Create([])
        listed = pbegin | "Folders" >> sources.FolderSource(self._spec.uri, self._spec.layout)
        return listed["files"], listed[metrics.REJECTED]
