"""objrec-batch-predict: the exported model over a folder, a gs:// prefix or a manifest.

Local, in process (Beam's FnApiRunner, as preprocessing):

    objrec-batch-predict --model_dir work/job/export/objrec --input ./photos --output ./predicted

Dataflow (workers install this repository with --setup_file, or run the trainer image, which
holds the package and TensorFlow, with --sdk_container_image; everything on gs://):

    objrec-batch-predict \\
        --model_dir gs://BUCKET/jobs/v1/export/objrec \\
        --input gs://BUCKET/incoming --output gs://BUCKET/predictions/2026-12-02 \\
        --runner DataflowRunner --project PROJECT --region us-central1 \\
        --temp_location gs://BUCKET/tmp --setup_file ./setup.py --machine_type n2-standard-4

Steps: list the inputs (preprocessing's listing and manifest reader) -> read each file
(regular files only, at most --max_file_bytes, never blocking on a FIFO) -> RunInference in
batches of up to --batch_size through the SavedModel's serving_default -> one JSON line per
input in predictions-*.jsonl -> summary.json (and report.html): counts, invalid inputs by
reason, predictions per class and, where the input names labels, accuracy, per-class
precision and recall and the confusion matrix (objrec.metrics, as `objrec-predict --evaluate`).
"""

import collections
import json
import logging
import os
from typing import NamedTuple

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from batch_predict import config as config_lib
from batch_predict import model_handler
from objrec import contract, html_report
from objrec.metrics import score_predictions
from preprocessing import image_io, manifest, report, sources, transforms
from preprocessing import pipeline as preprocessing_pipeline
from preprocessing.errors import PreprocessError

PROGRAM = "objrec-batch-predict"
PREDICTIONS_PREFIX = "predictions"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"

# The output line of one input.
URI, LABEL, VALID = "uri", "label", "valid"
TOP_K_CLASSES, TOP_K_SCORES = contract.OUTPUT_TOP_K_CLASSES, contract.OUTPUT_TOP_K_SCORES
REASON, ERROR = "reason", "error"
# The reason of a file the model could not decode (the graph answers valid = false).
NOT_DECODABLE = "not_decodable"
NOT_DECODABLE_DETAIL = (
    "the model cannot decode it: not a JPEG, PNG, GIF or BMP, corrupt or truncated, or over "
    "the export's pixel limit"
)
_INVALID = "invalid"


class Input(NamedTuple):
    """One file to predict, and its label when the manifest names one."""

    uri: str
    label: str | None


def invalid_row(element: Input, reason: str, detail: str) -> dict:
    row = {URI: element.uri, VALID: False, REASON: reason, ERROR: detail}
    return row if element.label is None else {**row, LABEL: element.label}


def unlisted_row(entry: dict) -> dict:
    """The output line of a listed path that is no file to read (preprocessing's rejection)."""
    return invalid_row(
        Input(entry[contract.LOG_URI], None), entry[contract.LOG_REASON], entry[contract.LOG_DETAIL]
    )


class ListLocalFilesFn(beam.DoFn):
    """A local folder -> every regular file under it; rejected-log entries for the rest
    (FIFOs, dangling or looping links, names that are not UTF-8), as preprocessing lists."""

    def process(self, root: str):
        for path in sources.walk_local(root):
            listed = sources.local_entry(path)
            if isinstance(listed, dict):
                yield pvalue.TaggedOutput(_INVALID, listed)
            else:
                yield listed


class ListInputs(beam.PTransform):
    """--input -> {"inputs": Input, "invalid": output rows of paths that are no file}."""

    def __init__(self, uri: str, checked_manifest: manifest.ManifestInfo | None):
        super().__init__()
        self._uri = uri
        self._manifest = checked_manifest

    def expand(self, pbegin: beam.pvalue.PBegin):
        if self._manifest is not None:
            listed = pbegin | "Manifest" >> manifest.ManifestSource(self._manifest)
            # A row without a label reads as "": no label, as a folder's files.
            found = listed | "AsInput" >> beam.Map(
                lambda source: Input(source.uri, source.label or None)
            )
            return {"inputs": found, _INVALID: pbegin | "NoneUnlisted" >> beam.Create([])}
        if sources.is_local(self._uri):
            listed = (
                pbegin
                | "Root" >> beam.Create([self._uri])
                | "List" >> beam.ParDo(ListLocalFilesFn()).with_outputs(_INVALID, main="paths")
            )
            paths, unlisted = listed.paths, listed[_INVALID]
        else:
            paths = (
                pbegin
                | "Pattern" >> beam.Create([sources.all_files_pattern(self._uri)])
                | "Match" >> fileio.MatchAll()
                | "Path" >> beam.FlatMap(sources.file_path)
            )
            unlisted = pbegin | "NoneUnlisted" >> beam.Create([])
        found = (
            paths
            # Listing runs on one worker; spread the files before the per-file work.
            | "Spread" >> beam.Reshuffle()
            | "AsInput" >> beam.Map(lambda path: Input(path, None))
        )
        return {"inputs": found, _INVALID: unlisted | "UnlistedRow" >> beam.Map(unlisted_row)}


class ReadFileFn(beam.DoFn):
    """Input -> (Input, bytes); an output row on `invalid` for a file that cannot be sent."""

    def __init__(self, max_file_bytes: int):
        self._max_file_bytes = max_file_bytes

    def process(self, element: Input):
        try:
            with transforms.open_uncompressed(element.uri) as file:
                size = file.seek(0, os.SEEK_END)  # known without reading, local or GCS
                if size == 0:
                    raise image_io.ImageError(image_io.EMPTY_FILE, "the file has zero bytes")
                if size > self._max_file_bytes:
                    raise image_io.ImageError(
                        image_io.FILE_TOO_LARGE,
                        f"{size:,} bytes, over --max_file_bytes {self._max_file_bytes:,}",
                    )
                file.seek(0)
                data = file.read()
        except image_io.ImageError as error:
            yield pvalue.TaggedOutput(_INVALID, invalid_row(element, error.reason, error.detail))
            return
        except transforms.UNREADABLE_ERRORS as error:
            yield pvalue.TaggedOutput(
                _INVALID, invalid_row(element, transforms.UNREADABLE, str(error))
            )
            return
        yield element, data


def prediction_row(keyed: tuple[Input, PredictionResult], top_k: int) -> dict:
    """The output line of an image the model answered (valid or not)."""
    element, result = keyed
    outputs = result.inference
    if not outputs[contract.OUTPUT_VALID]:
        return invalid_row(element, NOT_DECODABLE, NOT_DECODABLE_DETAIL)
    row = {
        URI: element.uri,
        VALID: True,
        TOP_K_CLASSES: [name.decode() for name in outputs[TOP_K_CLASSES][:top_k]],
        TOP_K_SCORES: [round(float(score), 6) for score in outputs[TOP_K_SCORES][:top_k]],
    }
    return row if element.label is None else {**row, LABEL: element.label}


class SummaryFn(beam.CombineFn):
    """Output rows -> the counts of summary.json, in memory bounded by the classes."""

    def create_accumulator(self):
        return collections.Counter(), collections.Counter(), collections.Counter()

    def add_input(self, accumulator, row: dict):
        counts, reasons, pairs = accumulator
        counts["inputs"] += 1
        predicted = row[TOP_K_CLASSES][0] if row[VALID] else None
        if row[VALID]:
            counts["valid"] += 1
            counts["predicted:" + predicted] += 1
        else:
            reasons[row[REASON]] += 1
        if LABEL in row:
            pairs[(row[LABEL], predicted)] += 1
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for total, part in zip(merged, accumulator, strict=True):
                total.update(part)
        return merged

    def extract_output(self, accumulator) -> dict:
        counts, reasons, pairs = accumulator
        return build_summary(counts, reasons, pairs)


def build_summary(counts, reasons, pairs) -> dict:
    """summary.json: counts, invalid inputs by reason, top-1 predictions per class and, for
    the labelled inputs, objrec.metrics' scores."""
    per_class = {
        name.removeprefix("predicted:"): count
        for name, count in sorted(counts.items())
        if name.startswith("predicted:")
    }
    summary = {
        "num_inputs": counts["inputs"],
        "num_valid": counts["valid"],
        "num_invalid": counts["inputs"] - counts["valid"],
        "invalid_reasons": dict(sorted(reasons.items())),
        "predictions_per_class": per_class,
        "num_labelled": sum(pairs.values()),
    }
    if pairs:
        ordered = sorted(pairs.items(), key=lambda item: (item[0][0], item[0][1] or ""))
        true = [label for (label, _), count in ordered for _ in range(count)]
        predicted = [guess for (_, guess), count in ordered for _ in range(count)]
        summary["metrics"] = score_predictions(true, predicted)
    return summary


def write_summary(summary: dict, output: str) -> None:
    text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    transforms.write_file(FileSystems.join(output, REPORT_FILE), report_page(summary).encode())
    # Written last: its presence marks a finished job.
    transforms.write_file(FileSystems.join(output, SUMMARY_FILE), text.encode())


def report_page(summary: dict) -> str:
    """report.html: the summary's counts and, with labels, per-class figures and confusions."""
    facts = {
        "inputs": summary["num_inputs"],
        "predicted": summary["num_valid"],
        "invalid": summary["num_invalid"],
        **{f"invalid: {reason}": n for reason, n in summary["invalid_reasons"].items()},
    }
    sections = [html_report.summary_section("Batch prediction", facts)]
    sections.append(
        html_report.summary_section("Top-1 predictions per class", summary["predictions_per_class"])
    )
    metrics = summary.get("metrics")
    if metrics:
        accuracy = {
            "labelled inputs": summary["num_labelled"],
            "accuracy": round(metrics[contract.METRIC_ACCURACY], 4),
        }
        sections.append(html_report.summary_section("Against the labels", accuracy))
        sections.append(html_report.per_class_section(metrics))
        sections.append(html_report.confusion_section(metrics))
    return html_report.page("objrec batch prediction", sections)


def build_pipeline(
    pipeline: beam.Pipeline,
    config: config_lib.BatchPredictConfig,
    saved_model_dir: str,
    checked_manifest: manifest.ManifestInfo | None,
) -> None:
    """Adds the whole job to `pipeline` (see the module docstring for the steps)."""
    listed = pipeline | "ListInputs" >> ListInputs(config.input, checked_manifest)
    read = listed["inputs"] | "Read" >> beam.ParDo(ReadFileFn(config.max_file_bytes)).with_outputs(
        _INVALID, main="files"
    )
    handler = model_handler.SavedModelHandler(saved_model_dir, config.batch_size)
    predicted = (
        read.files
        | "RunInference" >> RunInference(KeyedModelHandler(handler))
        | "Row" >> beam.Map(prediction_row, top_k=config.top_k)
    )
    rows = (predicted, read[_INVALID], listed[_INVALID]) | "AllRows" >> beam.Flatten()
    _ = (
        rows
        | "Line" >> beam.Map(report.json_line)
        | "WritePredictions"
        >> beam.io.WriteToText(
            FileSystems.join(config.output, PREDICTIONS_PREFIX),
            file_name_suffix=".jsonl",
            shard_name_template="-SSSSS-of-NNNNN",
        )
    )
    _ = (
        rows
        | "Summarize" >> beam.CombineGlobally(SummaryFn())
        | "WriteSummary" >> beam.Map(write_summary, output=config.output)
    )


def check_before_work(
    config: config_lib.BatchPredictConfig, options: PipelineOptions
) -> tuple[str, manifest.ManifestInfo | None]:
    """Every check that can fail before the job starts: (the version directory to load, the
    checked manifest or None for a folder).

    Raises:
        PreprocessError: naming the flag or input, and the fix.
    """
    if preprocessing_pipeline.is_dataflow(options):
        for flag, path in (("--model_dir", config.model_dir), ("--input", config.input),
                           ("--output", config.output)):  # fmt: skip
            if FileSystems.get_scheme(path) is None:
                raise PreprocessError(
                    f"{flag} {path} is a local path, which Dataflow workers cannot reach: "
                    "copy it to a gs:// bucket and pass its gs:// URI"
                )
    try:
        saved_model_dir = model_handler.version_dir(config.model_dir)
    except model_handler.ModelDirError as error:
        raise PreprocessError(str(error)) from None
    checked = None
    if manifest.manifest_format(config.input):
        checked = manifest.check_manifest(config.input, label_required=False)
    else:
        sources.check_has_files(
            config.input, "give a folder of images, a gs:// prefix or a .csv/.jsonl manifest"
        )
    preprocessing_pipeline.check_output_outside_input(config.input, config.output)
    preprocessing_pipeline.check_output_dir(config.output)
    return saved_model_dir, checked


def read_summary(output: str) -> dict:
    with FileSystems.open(FileSystems.join(output, SUMMARY_FILE)) as file:
        return json.loads(file.read())


def format_summary(summary: dict, output: str) -> str:
    reasons = ", ".join(f"{reason} {n}" for reason, n in summary["invalid_reasons"].items())
    lines = [
        f"Wrote {output}: {summary['num_valid']:,} predictions of {summary['num_inputs']:,} "
        f"inputs; invalid: {summary['num_invalid']:,}" + (f" ({reasons})" if reasons else "")
    ]
    metrics = summary.get("metrics")
    if metrics:
        lines.append(
            f"Accuracy {metrics[contract.METRIC_ACCURACY]:.4f} on {summary['num_labelled']:,} "
            f"labelled inputs (per class and confusion matrix in {SUMMARY_FILE})"
        )
    return "\n".join(lines)


def run(argv: list[str] | None = None, save_main_session: bool = True) -> dict | None:
    """Runs the job on `argv` (its flags and Beam's mixed); returns summary.json, or None for
    `--dry_run` (the job is built, nothing runs).

    Raises:
        PreprocessError: for a problem the user can fix (flags, model, input, output).
    """
    config, beam_args = config_lib.parse_args(argv)
    options = preprocessing_pipeline.pipeline_options(
        beam_args, save_main_session, PROGRAM, config_lib.flag_names()
    )
    saved_model_dir, checked = check_before_work(config, options)
    logging.info("predicting with %s", saved_model_dir)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, config, saved_model_dir, checked)
    result = pipeline.run()
    result.wait_until_finish()
    if preprocessing_pipeline.only_builds_the_job(options):
        print(f"Dry run: built the batch prediction job for {config.output}; submitted nothing.")
        return None
    summary = read_summary(config.output)
    if checked is not None and summary["num_inputs"] != checked.num_rows:
        raise RuntimeError(
            f"{checked.num_rows} manifest rows but {summary['num_inputs']} output lines: a bug"
        )
    print(format_summary(summary, config.output))
    return summary


class _DropMemoryProbeWarning(logging.Filter):
    """Beam 2.77's RunInference warns "Resource module is not available" on every batch
    where torch is not installed: its `import resource` shares a try block with a module that
    imports torch. The warning says nothing about this job (Linux has the module)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Resource module is not available")


def main() -> None:
    """Console script `objrec-batch-predict`."""
    logging.getLogger().addFilter(_DropMemoryProbeWarning())
    preprocessing_pipeline.run_command(PROGRAM, run)


if __name__ == "__main__":
    main()
