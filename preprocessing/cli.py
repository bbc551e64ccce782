"""objrec-preprocess: answers --help and usage errors before Apache Beam loads, then runs the
job (`preprocessing.pipeline`, also `python -m preprocessing.pipeline`)."""

import sys

from preprocessing import config as config_lib


def main() -> None:
    config_lib.parse_args(sys.argv[1:])  # exits on --help or a usage error
    from preprocessing import pipeline  # Beam and TensorFlow load here

    pipeline.main()
