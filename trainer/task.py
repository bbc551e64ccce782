"""Entry point of `objrec-train`: parse flags, then train, evaluate and export.

Local (CPU, a few minutes on 32-pixel images):

    python -m trainer.task --data_dir work/dataset --job_dir work/job \\
        --weights none --input_size 32 --batch_size 32 --head_epochs 0 --fine_tune_epochs 3

Cloud (GPUs; several machines when TF_CONFIG names them, as Vertex AI and k8s/ set it):

    objrec-train --data_dir gs://BUCKET/dataset --job_dir gs://BUCKET/jobs/run-1

Rerunning the same command after an interruption resumes where the job stopped.
"""

import logging
import os
import sys
from collections.abc import Sequence

from trainer import flags as train_flags


def prefer_onednn_kernels() -> None:
    """TensorFlow's oneDNN kernels for training, unless TF_ENABLE_ONEDNN_OPTS says otherwise.

    TensorFlow's x86 builds turn them on by themselves only on CPUs with AVX-512 or AMX
    features. On an AVX2-only CPU (2 cores of an AMD EPYC) its default kernels train ResNet50
    at 6.2 images/s whatever the input size; oneDNN's at 30 (32 px, 4.8x) and 13.8 (64 px,
    2.2x). Inference gains nothing there, so only the trainer sets it. Read once, when
    TensorFlow loads.
    """
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    logging.info("TF_ENABLE_ONEDNN_OPTS=%s", os.environ["TF_ENABLE_ONEDNN_OPTS"])


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # TensorFlow's own INFO lines (one per checkpoint: "Sharding callback duration", logged
    # through absl) are noise.
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.WARNING)
    config = train_flags.parse_flags(argv)
    if config.verbose == "0":
        logging.getLogger().setLevel(logging.WARNING)
    prefer_onednn_kernels()
    from trainer import job  # TensorFlow loads here, after --help and usage errors

    try:
        summary = job.train_and_evaluate(config)
    except ValueError as error:  # DatasetError, WeightsError and flag errors: the user's to fix
        print(f"objrec-train: error: {error}", file=sys.stderr)
        return 2
    if summary:
        print(
            f"{summary['split']} accuracy {summary['accuracy']:.4f} "
            f"({summary['num_examples']} images); SavedModel: {summary['export_dir']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
