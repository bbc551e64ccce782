"""What objrec's tests and benchmarks share: a free loopback port and the tiniest training run.

Like `apache_beam.testing`, it ships with the package so that the benchmarks (plain scripts
outside the test suite) and the tests use one copy.
"""

import socket

# One head epoch and one fine-tuning epoch of the last block, 32-pixel input, random
# initialisation: seconds on a CPU, for tests of what surrounds the model, not its accuracy.
# A flag given again after these wins (argparse keeps the last value).
TINY_TRAINING_FLAGS = (
    "--weights", "none", "--input_size", "32", "--batch_size", "8",
    "--head_epochs", "1", "--fine_tune_epochs", "1", "--fine_tune_from", "conv5_block3",
    "--seed", "1", "--strategy", "one_device",
)  # fmt: skip


def free_port() -> int:
    """A port nothing listens on right now, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
