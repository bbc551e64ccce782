"""scripts/promotion_gate.py: the Cloud Build step that decides whether a new model is served."""

import importlib.util
import json
import pathlib

import pytest
import tensorflow as tf

from tests import REPO

SCRIPT = REPO / "scripts" / "promotion_gate.py"
LABELS = ["cat", "dog", "frog"]


def load_gate():
    spec = importlib.util.spec_from_file_location("promotion_gate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gate = load_gate()


def metrics(accuracy: float, f1_macro: float, labels=LABELS, **extra) -> dict:
    """An eval/metrics.json as trainer/evaluate.py writes it (the fields the gate reads)."""
    return {
        "accuracy": accuracy,
        "f1_macro": f1_macro,
        "top_k_accuracy": 1.0,
        "labels": list(labels),
        "split": "test",
        "num_examples": 120,
        **extra,
    }


def write_job(root: pathlib.Path | str, name: str, metrics_json: dict) -> str:
    """A job directory with eval/metrics.json (and the export path TF Serving would serve)."""
    job_dir = f"{root}/{name}"
    tf.io.gfile.makedirs(f"{job_dir}/eval")
    tf.io.gfile.makedirs(f"{job_dir}/export/objrec/1")
    with tf.io.gfile.GFile(f"{job_dir}/eval/metrics.json", "w") as file:
        json.dump(metrics_json, file)
    return job_dir


def golden(accuracy=1.0, num_invalid=0, num_examples=20) -> dict:
    """`objrec-predict --evaluate --json` output (the fields the gate reads)."""
    return {"accuracy": accuracy, "num_invalid": num_invalid, "num_examples": num_examples}


def args(*argv: str):
    return gate.parse_args(["--candidate_job_dir", "unused", *argv])


def test_job_dir_of_an_export_path():
    assert gate.job_dir_of("gs://b/jobs/run-7/export/objrec") == "gs://b/jobs/run-7"
    assert gate.job_dir_of("/data/jobs/run-7/export/objrec/") == "/data/jobs/run-7"
    with pytest.raises(gate.GateInputError, match="JOB_DIR/export/<model_name>"):
        gate.job_dir_of("gs://b/serving/objrec")


def test_better_or_equal_candidate_is_promoted():
    decision = gate.decide(metrics(0.91, 0.90), metrics(0.90, 0.90), None, args())
    assert decision.promote
    assert any(line.startswith("accuracy") and "+0.0100" in line for line in decision.lines)


def test_any_worse_gated_metric_rejects():
    decision = gate.decide(metrics(0.95, 0.80), metrics(0.90, 0.85), None, args())
    assert not decision.promote
    assert decision.reasons == ("f1_macro 0.8000 is below the serving model's 0.8500",)


def test_tolerance_allows_a_small_drop():
    candidate, serving = metrics(0.898, 0.90), metrics(0.90, 0.90)
    assert not gate.decide(candidate, serving, None, args()).promote
    assert gate.decide(candidate, serving, None, args("--tolerance", "0.005")).promote


def test_gated_metrics_are_chosen_by_flag():
    candidate, serving = metrics(0.95, 0.80), metrics(0.90, 0.85)
    assert gate.decide(candidate, serving, None, args("--metric", "accuracy")).promote


def test_changed_labels_reject_unless_allowed():
    candidate = metrics(0.95, 0.95, labels=["cat", "dog", "frog", "owl"])
    serving = metrics(0.90, 0.90)
    rejected = gate.decide(candidate, serving, None, args())
    assert not rejected.promote and "labels changed" in rejected.reasons[0]
    allowed = gate.decide(candidate, serving, None, args("--allow_label_change"))
    assert allowed.promote
    assert any("labels changed" in line for line in allowed.lines)


def test_first_release_needs_only_the_golden_check():
    assert gate.decide(metrics(0.5, 0.5), None, None, args()).promote
    low = gate.decide(metrics(0.5, 0.5), None, golden(0.8), args("--min_golden_accuracy", "0.9"))
    assert low.reasons == ("golden accuracy 0.8000 is below --min_golden_accuracy 0.9",)


def test_undecodable_golden_image_rejects():
    decision = gate.decide(metrics(0.9, 0.9), None, golden(num_invalid=1), args())
    assert decision.reasons == ("the served model could not decode 1 of 20 golden images",)


def test_missing_metric_is_an_input_error():
    candidate = metrics(0.9, 0.9)
    del candidate["f1_macro"]
    with pytest.raises(gate.GateInputError, match="no number 'f1_macro'"):
        gate.decide(candidate, metrics(0.9, 0.9), None, args())


def test_main_reads_gs_style_paths_through_one_code_path(capsys):
    # ram:// goes through tf.io.gfile exactly as gs:// does.
    root = "ram://promotion-gate"
    candidate = write_job(root, "new", metrics(0.93, 0.92))
    serving = write_job(root, "old", metrics(0.92, 0.92))
    code = gate.main(
        ["--candidate_job_dir", candidate, "--serving_model_base_path", f"{serving}/export/objrec"]
    )
    assert code == gate.EXIT_PROMOTE
    assert f"PROMOTE {candidate}" in capsys.readouterr().out


def test_main_rejects_with_every_reason(tmp_path, capsys):
    candidate = write_job(tmp_path, "new", metrics(0.80, 0.70))
    serving = write_job(tmp_path, "old", metrics(0.90, 0.90))
    report = tmp_path / "golden.json"
    report.write_text(json.dumps(golden(accuracy=0.5, num_invalid=2)))
    code = gate.main(
        [
            "--candidate_job_dir",
            candidate,
            "--serving_model_base_path",
            f"{serving}/export/objrec",
            "--golden_report",
            str(report),
            "--min_golden_accuracy",
            "0.9",
        ]
    )
    out = capsys.readouterr().out
    assert code == gate.EXIT_REJECT
    assert "REJECT" in out
    for reason in ("accuracy 0.8000", "f1_macro 0.7000", "could not decode 2", "golden accuracy"):
        assert reason in out


def test_main_reports_unreadable_metrics_as_input_error(tmp_path, capsys):
    code = gate.main(["--candidate_job_dir", str(tmp_path / "missing")])
    assert code == gate.EXIT_INPUT_ERROR
    assert "cannot read the candidate's metrics" in capsys.readouterr().err


@pytest.mark.slow
def test_metrics_written_by_the_trainer_pass_the_gate(trained_job):
    """The real eval/metrics.json of the session's tiny trained job has what the gate reads."""
    job_dir = trained_job["job_dir"]
    code = gate.main(
        ["--candidate_job_dir", job_dir, "--serving_model_base_path", f"{job_dir}/export/objrec"]
    )
    assert code == gate.EXIT_PROMOTE
