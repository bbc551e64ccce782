"""objrec-batch-predict: answers --help and usage errors before Apache Beam and TensorFlow
load, then runs the job (`batch_predict.pipeline`)."""

import sys

from batch_predict import config as config_lib


def main() -> None:
    config_lib.parse_args(sys.argv[1:])  # exits on --help or a usage error
    from batch_predict import pipeline  # Beam and TensorFlow load here

    pipeline.main()
