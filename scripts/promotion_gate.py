"""Promotion gate: may a newly trained objrec model replace the one being served?

cloudbuild.yaml runs it after the real TF Serving has loaded the candidate export, replayed its
warmup requests and answered the golden requests, and before the rollout:

    python scripts/promotion_gate.py \\
        --candidate_job_dir gs://BUCKET/jobs/RUN \\
        --serving_model_base_path gs://BUCKET/jobs/EARLIER_RUN/export/objrec \\
        --golden_report golden.json --min_golden_accuracy 0.9

    python scripts/promotion_gate.py --candidate_job_dir work/job   # local paths work the same

The candidate's eval/metrics.json must not be worse than the serving model's on any gated
metric (accuracy and f1_macro unless --metric says otherwise; --tolerance allows an absolute
slack), and both must have been evaluated on the same labels. Without a serving model (an empty
--serving_model_base_path: the first release) there is nothing to compare with. The golden
report is `objrec-predict --evaluate FOLDER --json` run against the candidate: every golden
image must be decoded, and enough of them classified right.

Exit status: 0 promote, 1 reject (every reason is printed), 2 an input cannot be read.
"""

import argparse
import dataclasses
import json
import posixpath
import sys
from collections.abc import Mapping, Sequence

import tensorflow as tf

from objrec import contract

DEFAULT_METRICS = (contract.METRIC_ACCURACY, contract.METRIC_F1_MACRO)
EXIT_PROMOTE, EXIT_REJECT, EXIT_INPUT_ERROR = 0, 1, 2


class GateInputError(Exception):
    """A metrics file or report that cannot be read or lacks a number the gate needs."""


@dataclasses.dataclass(frozen=True)
class Decision:
    """The verdict: `reasons` to reject (empty: promote) and `lines` that explain it."""

    reasons: tuple[str, ...]
    lines: tuple[str, ...]

    @property
    def promote(self) -> bool:
        return not self.reasons


def metrics_path(job_dir: str) -> str:
    """JOB_DIR/eval/metrics.json."""
    return posixpath.join(job_dir, contract.EVAL_DIR, contract.METRICS_FILE)


def job_dir_of(model_base_path: str) -> str:
    """The job directory of a served export: JOB_DIR/export/<model_name> -> JOB_DIR.

    Raises:
        GateInputError: the path is not of the job directory layout (docs/contracts.md).
    """
    export_dir = posixpath.dirname(model_base_path.rstrip("/"))
    if posixpath.basename(export_dir) != contract.EXPORT_DIR:
        raise GateInputError(
            f"--serving_model_base_path {model_base_path} is not JOB_DIR/"
            f"{contract.EXPORT_DIR}/<model_name>: cannot find the serving model's metrics"
        )
    return posixpath.dirname(export_dir)


def read_json(path: str, what: str) -> dict:
    """A JSON file, local or gs://."""
    try:
        with tf.io.gfile.GFile(path, "r") as file:
            return json.load(file)
    except (tf.errors.OpError, json.JSONDecodeError) as error:
        raise GateInputError(f"cannot read the {what} {path}: {error}") from None


def metric_value(metrics: Mapping, name: str, source: str) -> float:
    if not isinstance(metrics.get(name), (int, float)):
        raise GateInputError(f"{source} has no number {name!r}")
    return float(metrics[name])


def compare_metrics(
    candidate: Mapping, serving: Mapping, names: Sequence[str], tolerance: float
) -> tuple[list[str], list[str]]:
    """(reasons to reject, report lines): each metric must reach serving - tolerance."""
    reasons, lines = [], [f"{'metric':<16}{'candidate':>10}{'serving':>10}{'change':>10}"]
    for name in names:
        new = metric_value(candidate, name, "the candidate's metrics")
        old = metric_value(serving, name, "the serving model's metrics")
        worse = new < old - tolerance
        lines.append(
            f"{name:<16}{new:>10.4f}{old:>10.4f}{new - old:>+10.4f}  {'WORSE' if worse else 'ok'}"
        )
        if worse:
            reasons.append(f"{name} {new:.4f} is below the serving model's {old:.4f}")
    return reasons, lines


def compare_evaluations(candidate: Mapping, serving: Mapping, allow_label_change: bool):
    """(reasons, notes) about what the two evaluations measured: labels, split, size."""
    reasons, notes = [], []
    if candidate.get(contract.METRIC_LABELS) != serving.get(contract.METRIC_LABELS):
        message = (
            f"the labels changed: {serving.get('labels')} -> {candidate.get('labels')}; "
            "the numbers are not comparable"
        )
        if allow_label_change:
            notes.append(message + " (allowed by --allow_label_change)")
        else:
            reasons.append(message + " (pass --allow_label_change to promote anyway)")
    for key in ("split", "num_examples"):
        if candidate.get(key) != serving.get(key):
            notes.append(
                f"{key} differs: serving {serving.get(key)}, candidate {candidate.get(key)}"
            )
    return reasons, notes


def check_golden(report: Mapping, min_accuracy: float) -> tuple[list[str], list[str]]:
    """(reasons, lines) for `objrec-predict --evaluate --json` run against the candidate."""
    accuracy = metric_value(report, contract.METRIC_ACCURACY, "the golden report")
    invalid = int(metric_value(report, "num_invalid", "the golden report"))
    total = int(metric_value(report, contract.METRIC_NUM_EXAMPLES, "the golden report"))
    lines = [f"golden: accuracy {accuracy:.4f} on {total} images, {invalid} not decoded"]
    reasons = []
    if invalid:
        reasons.append(f"the served model could not decode {invalid} of {total} golden images")
    if accuracy < min_accuracy:
        reasons.append(
            f"golden accuracy {accuracy:.4f} is below --min_golden_accuracy {min_accuracy}"
        )
    return reasons, lines


def decide(
    candidate: Mapping,
    serving: Mapping | None,
    golden: Mapping | None,
    config: argparse.Namespace,
) -> Decision:
    """Every check the inputs allow; pure, so that it is tested without files."""
    reasons, lines = [], []
    if serving is None:
        lines.append("no serving model: nothing to compare with (first release)")
    else:
        found, notes = compare_evaluations(candidate, serving, config.allow_label_change)
        reasons += found
        found, table = compare_metrics(candidate, serving, config.metric, config.tolerance)
        reasons += found
        lines += table + [f"note: {note}" for note in notes]
    if golden is not None:
        found, golden_lines = check_golden(golden, config.min_golden_accuracy)
        reasons += found
        lines += golden_lines
    return Decision(tuple(reasons), tuple(lines))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="promotion_gate.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidate_job_dir", required=True, help="the new run's JOB_DIR")
    parser.add_argument(
        "--serving_model_base_path",
        default="",
        help="model_base_path of the serving release (JOB_DIR/export/<model_name>); "
        "empty for the first release",
    )
    parser.add_argument(
        "--metric",
        action="append",
        help=f"a metrics.json number that must not get worse (repeatable; default: "
        f"{', '.join(DEFAULT_METRICS)})",
    )
    parser.add_argument(
        "--tolerance", type=float, default=0.0, help="allowed absolute drop of each metric"
    )
    parser.add_argument("--allow_label_change", action="store_true")
    parser.add_argument("--golden_report", default="", help="objrec-predict --evaluate --json")
    parser.add_argument("--min_golden_accuracy", type=float, default=0.0)
    args = parser.parse_args(argv)
    args.metric = tuple(args.metric or DEFAULT_METRICS)
    if args.tolerance < 0:
        parser.error(f"--tolerance {args.tolerance}: give a drop >= 0")
    return args


def read_inputs(args: argparse.Namespace) -> tuple[dict, dict | None, dict | None]:
    """The candidate's metrics, the serving model's (None: none) and the golden report."""
    candidate = read_json(metrics_path(args.candidate_job_dir), "candidate's metrics")
    serving = None
    if args.serving_model_base_path:
        serving_job_dir = job_dir_of(args.serving_model_base_path)
        serving = read_json(metrics_path(serving_job_dir), "serving model's metrics")
    golden = read_json(args.golden_report, "golden report") if args.golden_report else None
    return candidate, serving, golden


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        decision = decide(*read_inputs(args), args)
    except GateInputError as error:
        print(f"promotion_gate: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    print("\n".join(decision.lines))
    if decision.promote:
        print(f"PROMOTE {args.candidate_job_dir}")
        return EXIT_PROMOTE
    print(f"REJECT {args.candidate_job_dir}:", *decision.reasons, sep="\n  ")
    return EXIT_REJECT


if __name__ == "__main__":
    sys.exit(main())
