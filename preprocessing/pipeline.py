"""objrec-preprocess: labelled images to a sharded TFRecord dataset (Apache Beam).

--input is a folder of class folders (SRC/<class>/<image>), the same split into
SRC/train/, SRC/validation/ (or val/), SRC/test/, or a manifest .csv/.jsonl of
uri,label[,split] (see inputs.py); local or gs://, through one code path.

Local, in process (the default runner here is Beam's in-process FnApiRunner: `DirectRunner`
would first try to download the Prism runner binary):

    python -m preprocessing.pipeline --input ./images --output ./dataset
    python -m preprocessing.pipeline --input ./labels.csv --output ./dataset --image_size 224

Dataflow (workers install this repository with --setup_file; inputs and output on gs://):

    python -m preprocessing.pipeline \
        --input gs://BUCKET/images --output gs://BUCKET/datasets/v1 \
        --runner DataflowRunner --project PROJECT --region us-central1 \
        --temp_location gs://BUCKET/tmp --setup_file ./setup.py \
        --machine_type n2-standard-4 --max_num_workers 20

n2-standard-4: 4 vCPUs and 16 GB, one SDK process per vCPU, so 4 GB for each: room for the
largest image --max_pixels allows (100 M pixels = 300 MB decoded) and its copies. The job is
CPU-bound (decoding): more workers, not bigger ones, make it faster.

Faster worker start-up with a custom container that already holds the package (its Python
minor version must be the launcher's, 3.11 here), then drop --setup_file:

    FROM apache/beam_python3.11_sdk:2.77.0
    COPY . /objrec
    RUN pip install --no-cache-dir -c /objrec/constraints.txt /objrec

    ... --sdk_container_image us-central1-docker.pkg.dev/PROJECT/objrec/beam-worker:TAG

Add `--dry_run True` to build the Dataflow job (and stage the package in a local temporary
folder) without credentials or submitting it: tests/preprocessing/test_dataflow.py does.

Steps: list the inputs -> count rows that list the same file -> read each file once: SHA-256,
decode, orient, convert, resize, JPEG-encode -> group the sources by hash (keep one copy, log
duplicates, reject label conflicts) and join one JPEG per hash to its keeper -> split
(named by the input, else by hash) -> shard by hash -> write shards, logs, labels.txt and,
last, metadata.json; print a summary. Progress: the Beam counters of metrics.py, which a
local run also shows as it goes (progress.py).
"""

import difflib
import json
import logging
import sys
from collections.abc import Callable, Sequence

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    TestOptions,
)
from apache_beam.runners.runner import PipelineResult

from objrec import contract, html_report
from preprocessing import config as config_lib
from preprocessing import inputs, metrics, progress, records, report, transforms
from preprocessing.errors import PreprocessError

LOCAL_RUNNER = "FnApiRunner"
_WRITE_CHECK_FILE = ".objrec-write-check"


def check_output_outside_input(input_dir: str, output: str) -> None:
    """Fails fast when the dataset would be written into the folder it is made from."""
    if (output.rstrip("/") + "/").startswith(input_dir.rstrip("/") + "/"):
        raise PreprocessError(
            f"--output {output} is inside --input {input_dir}: its files would become images "
            "of a class next time; write the dataset outside the input folder"
        )


def check_output_dir(output: str) -> None:
    """Fails fast unless `output` is new or empty, and writable."""
    try:
        found = FileSystems.match([FileSystems.join(output, "**")], limits=[1])[0].metadata_list
    except BeamIOError as error:
        raise PreprocessError(f"cannot list --output {output}: {error}") from None
    if found:
        raise PreprocessError(
            f"--output {output} is not empty (it holds {found[0].path}): choose a new "
            "directory, or delete this one to rebuild the dataset"
        )
    probe = FileSystems.join(output, _WRITE_CHECK_FILE)
    try:
        transforms.write_file(probe, b"")
        FileSystems.delete([probe])
    except OSError as error:
        raise PreprocessError(
            f"cannot write to --output {output} ({error}): check the path and permissions"
        ) from None


def _label_ids(labels: list[str]) -> dict[str, int]:
    return {label: index for index, label in enumerate(labels)}


def _write_dataset_index(metadata: dict, output: str) -> None:
    # labels.txt, then metadata.json: written last, its presence marks a complete dataset.
    labels = "".join(label + "\n" for label in metadata[contract.META_LABELS])
    transforms.write_file(FileSystems.join(output, contract.LABELS_FILE), labels.encode())
    text = json.dumps(metadata, indent=2, ensure_ascii=False) + "\n"
    transforms.write_file(FileSystems.join(output, contract.METADATA_FILE), text.encode())


def _reason_and_rows(logged: report.Logged) -> tuple[str, int]:
    return logged.entry[contract.LOG_REASON], logged.times


def build_pipeline(
    pipeline: beam.Pipeline, config: config_lib.PreprocessConfig, spec: inputs.InputSpec
) -> None:
    """Adds the whole job to `pipeline` (see the module docstring for the steps)."""
    output = config.output
    files, misplaced = pipeline | "ReadInputs" >> inputs.ReadInputs(spec)
    labels = files | "CollectLabels" >> transforms.CollectLabels()

    encoded = (
        files
        | "CountRepeats" >> transforms.CountRepeats()
        | "ReadAndEncode"
        >> beam.ParDo(transforms.EncodeImageFn(config)).with_outputs(
            metrics.REJECTED, main="encoded"
        )
    )
    resolved = encoded.encoded | "ResolveDuplicates" >> transforms.ResolveDuplicates()
    label_ids = labels | "LabelIds" >> beam.Map(_label_ids)
    stored_records = resolved["unique"] | "BuildRecord" >> beam.Map(
        transforms.build_record,
        label_ids=pvalue.AsSingleton(label_ids),
        split_fractions=config.split_fractions,
    )

    shard_files = stored_records | "WriteShards" >> transforms.WriteShards(
        output, config.num_shards
    )
    rejected = (
        misplaced,
        encoded[metrics.REJECTED],
        resolved[metrics.REJECTED],
    ) | "AllRejected" >> beam.Flatten()
    rejected_log = FileSystems.join(output, contract.log_file_name(contract.REJECTED_PREFIX))
    duplicates_log = FileSystems.join(output, contract.log_file_name(contract.DUPLICATES_PREFIX))
    listed_rows = (
        files | "FileRow" >> beam.Map(lambda source: 1),
        misplaced | "MisplacedRows" >> beam.Map(lambda logged: logged.times),
    ) | "AllInputs" >> beam.Flatten()

    summary = {
        "labels": labels,
        "num_inputs": listed_rows | "CountInputs" >> beam.CombineGlobally(sum),
        "num_rejected": rejected | "WriteRejectedLog" >> transforms.WriteJsonLines(rejected_log),
        "rejected_reasons": (
            rejected
            | "Reason" >> beam.Map(_reason_and_rows)
            | "CountPerReason" >> beam.CombinePerKey(sum)
            | "ReasonCounts" >> beam.combiners.ToDict()
        ),
        "num_duplicates": resolved[transforms.DUPLICATES]
        | "WriteDuplicatesLog" >> transforms.WriteJsonLines(duplicates_log),
        "num_label_conflicts": resolved[transforms.CONFLICTS]
        | "CountConflicts" >> beam.combiners.Count.Globally(),
        "split_class_counts": (
            stored_records
            | "SplitAndLabel" >> beam.Map(lambda record: (record.split, record.label))
            | "CountPerSplitAndLabel" >> beam.combiners.Count.PerElement()
            | "ClassCounts" >> beam.combiners.ToList()
        ),
        "shard_files": shard_files | "ShardFiles" >> beam.combiners.ToList(),
    }
    # One element, once every part is known: the shards and logs are written by then.
    _ = (
        pipeline
        | "Finish" >> beam.Create([None])
        | "BuildMetadata"
        >> beam.Map(
            lambda _, **parts: report.build_metadata(config, input_layout=spec.layout, **parts),
            **{name: pvalue.AsSingleton(part) for name, part in summary.items()},
        )
        | "WriteLabelsAndMetadata" >> beam.Map(_write_dataset_index, output=output)
    )


def read_metadata(output: str) -> dict:
    """metadata.json of a dataset directory."""
    with FileSystems.open(FileSystems.join(output, contract.METADATA_FILE)) as file:
        return json.loads(file.read())


def write_dataset_page(output: str, metadata: dict, per_class: int = 6) -> str:
    """DATASET_DIR/report.html: class counts per split, rejections by reason, duplicates and
    the first stored images of each class."""
    train = metadata[contract.META_SPLITS].get(contract.TRAIN, {})
    shards = [FileSystems.join(output, name) for name in train.get(contract.META_FILES, [])]
    found = records.class_samples(shards, per_class, max_records=2000)
    samples = [
        html_report.Example(image, label)
        for label in metadata[contract.META_LABELS]
        for image in found.get(label, [])
    ]
    facts = {"dataset": output, "input": metadata[contract.META_CONFIG].get("input", "")}
    page = html_report.page(
        "objrec dataset",
        [html_report.summary_section("objrec dataset", facts),
         html_report.dataset_section(metadata, samples)],
    )  # fmt: skip
    path = FileSystems.join(output, contract.REPORT_FILE)
    with FileSystems.create(path, mime_type="text/html") as file:
        file.write(page.encode())
    return path


def check_class_sizes(metadata: dict, config: config_lib.PreprocessConfig) -> None:
    """Warns about classes below --min_images_per_class; with --strict, fails."""
    below = report.classes_below(metadata, config.min_images_per_class)
    if not below:
        return
    listed = ", ".join(f"{label} ({count})" for label, count in below.items())
    message = (
        f"{len(below)} classes have fewer than --min_images_per_class "
        f"{config.min_images_per_class} stored images: {listed}; add images of those classes "
        f"to {config.input} (see {contract.log_file_name(contract.REJECTED_PREFIX)})"
    )
    if config.strict:
        raise PreprocessError(message)
    logging.warning(message)


def unknown_flags_message(
    beam_args: list[str],
    unknown: list[str],
    program: str = "objrec-preprocess",
    own_flags: Sequence[str] | None = None,
) -> str:
    """Names each unknown flag as the user typed it (Beam reads `--image-size` as
    `image_size`), with the job's own flag (`own_flags`, without dashes) it most likely meant."""
    own_flags = config_lib.flag_names() if own_flags is None else own_flags
    typed = {}
    for arg in beam_args:
        spelled = arg.split("=", 1)[0]
        typed.setdefault(spelled.lstrip("-").replace("-", "_"), spelled)
    parts = []
    for name in unknown:
        spelled = typed.get(name, f"--{name}")
        close = difflib.get_close_matches(name, own_flags, n=1)
        parts.append(f"{spelled} (did you mean --{close[0]}?)" if close else spelled)
    return (
        f"unknown flag {', '.join(parts)}: neither {program} nor Apache Beam has it; "
        f"check the spelling ({program} --help lists the job's own flags)"
    )


def pipeline_options(
    beam_args: list[str],
    save_main_session: bool,
    program: str = "objrec-preprocess",
    own_flags: Sequence[str] | None = None,
) -> PipelineOptions:
    """Beam's options from the flags the job does not know; the in-process runner by default.

    Raises:
        PreprocessError: a flag neither `program` nor Beam has, with the closest own flag.
    """
    options = PipelineOptions(beam_args)
    unknown = sorted(
        set(options.get_all_options(retain_unknown_options=True)) - set(options.get_all_options())
    )
    if unknown:
        raise PreprocessError(unknown_flags_message(beam_args, unknown, program, own_flags))
    # build_pipeline's functions use this module's imports; run as __main__ on Dataflow,
    # workers only have them through the saved main session.
    options.view_as(SetupOptions).save_main_session = save_main_session
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = LOCAL_RUNNER
    return options


def is_dataflow(options: PipelineOptions) -> bool:
    runner = str(options.view_as(StandardOptions).runner).lower()
    return runner.removesuffix("runner") == "dataflow"


def only_builds_the_job(options: PipelineOptions) -> bool:
    """True for `--dry_run`: the runner builds the job and submits nothing.

    Beam's own rule, so that both agree: any non-empty value, `--dry_run False` included.
    """
    return bool(options.view_as(TestOptions).dry_run)


def check_runner_options(config: config_lib.PreprocessConfig, options: PipelineOptions) -> None:
    """Fails fast on runner options the job cannot honour."""
    if options.view_as(GoogleCloudOptions).template_location:
        raise PreprocessError(
            "--template_location is not supported: --input and --output are fixed when the "
            "job is built; run the job directly (or build it offline with --dry_run True)"
        )
    if not is_dataflow(options):
        return
    for flag, path in (("--input", config.input), ("--output", config.output)):
        if FileSystems.get_scheme(path) is None:
            raise PreprocessError(
                f"{flag} {path} is a local path, which Dataflow workers cannot reach: "
                "copy the data to a gs:// bucket and pass its gs:// URI"
            )


def check_before_work(
    config: config_lib.PreprocessConfig, options: PipelineOptions
) -> inputs.InputSpec:
    """Every check that can fail before the job starts; returns the checked input.

    Raises:
        PreprocessError: naming the flag or input, and the fix.
    """
    check_runner_options(config, options)
    spec = inputs.inspect_input(config.input)
    inputs.check_split_option(spec, split_given=config.split is not None)
    check_output_outside_input(config.input, config.output)
    check_output_dir(config.output)
    return spec


def launch(
    config: config_lib.PreprocessConfig, spec: inputs.InputSpec, options: PipelineOptions
) -> PipelineResult:
    """Builds the job, runs it on the options' runner and waits for it to finish."""
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, config, spec)
    local_run = options.view_as(StandardOptions).runner == LOCAL_RUNNER
    with progress.local_progress(progress.wanted(config.progress, local_run)):
        result = pipeline.run()
        result.wait_until_finish()
    return result


def finish(config: config_lib.PreprocessConfig) -> dict:
    """After a run: checks the accounting, prints the summary and the class sizes."""
    metadata = read_metadata(config.output)
    unaccounted = report.unaccounted_inputs(metadata)
    if unaccounted:
        raise RuntimeError(f"{unaccounted} inputs are missing from records and logs: a bug")
    write_dataset_page(config.output, metadata)
    print(report.format_summary(metadata, config.output))
    train = metadata[contract.META_SPLITS].get(contract.TRAIN, {})
    if not train.get(contract.META_NUM_EXAMPLES):
        raise PreprocessError(
            f"no training example written to {config.output}: every input of {config.input} "
            f"was rejected or a duplicate (reasons in "
            f"{contract.log_file_name(contract.REJECTED_PREFIX)}), or --split gives train "
            "nothing; fix the inputs or the split and rerun into an empty --output"
        )
    check_class_sizes(metadata, config)
    return metadata


def run(argv: list[str] | None = None, save_main_session: bool = True) -> dict | None:
    """Runs the job on `argv` (app flags and Beam flags mixed); returns metadata.json.

    With `--dry_run True` the runner only builds the job (Dataflow: the job request, with
    the package staged locally); nothing runs, nothing is written, and None is returned.

    Raises:
        PreprocessError: for a problem the user can fix (flags, input, output, --strict).
    """
    config, beam_args = config_lib.parse_args(argv)
    options = pipeline_options(beam_args, save_main_session)
    spec = check_before_work(config, options)
    launch(config, spec, options)
    if only_builds_the_job(options):
        print(f"Dry run: built the {spec.layout} job for {config.output}; submitted nothing.")
        return None
    return finish(config)


def run_command(program: str, run_job: Callable[[], object]) -> None:
    """A Beam job's console script: INFO logging, and a user's error as one line, exit 2."""
    logging.getLogger().setLevel(logging.INFO)
    # Beam's own INFO lines (its state cache, its workers) say nothing a user acts on.
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    try:
        run_job()
    except PreprocessError as error:
        # Exit 2, as argparse's usage errors: the user's to fix (a Kubernetes Job or a
        # workflow does not retry it).
        print(f"{program}: error: {error}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    """Console script `objrec-preprocess`."""
    run_command("objrec-preprocess", run)


if __name__ == "__main__":
    main()
