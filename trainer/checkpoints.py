"""Checkpointing and preemption: the loop's state, the preemption backup, the final weights.

Everything needed to resume (phase, epoch, step, optimizer slots, early stopping, kept
weights) is one `tf.train.Checkpoint`, saved to JOB_DIR/backup every `checkpoint_every_steps`,
at each epoch end and when any worker gets SIGTERM; rerunning the same command restores the
newest intact one. The trained weights end in JOB_DIR/checkpoints/final, which the export and
`--weights JOB_DIR` read.
"""

import logging
import signal

import keras
import numpy as np
import tensorflow as tf

from objrec import contract
from trainer import (
    distribution,
)
from trainer import model as model_lib
from trainer.config import TrainConfig

# Exit code after a preemption save: Kubernetes Jobs treat it as retriable (podFailurePolicy).
EXIT_PREEMPTED = 42


class TrainState(tf.Module):
    """Where training is, saved in every checkpoint."""

    def __init__(self):
        super().__init__(name="train_state")
        int_variable = lambda: tf.Variable(0, dtype=tf.int64, trainable=False)  # noqa: E731
        self.phase = int_variable()  # index into plan_phases()
        self.epoch = int_variable()  # epochs done in the current phase
        self.step = int_variable()  # steps done in the current epoch
        self.global_step = int_variable()
        self.epochs_without_improvement = int_variable()
        self.best_val_loss = tf.Variable(np.inf, dtype=tf.float32, trainable=False)
        self.has_best = tf.Variable(False, trainable=False)

    def as_dict(self) -> dict:
        return {
            name: getattr(self, name).numpy().item()
            for name in (
                "phase",
                "epoch",
                "step",
                "global_step",
                "epochs_without_improvement",
                "best_val_loss",
                "has_best",
            )
        }


class PreemptionWatch:
    """Notes SIGTERM (what Kubernetes and Vertex AI send before killing a pod)."""

    def __init__(self):
        self.received = False
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame):
        logging.warning("SIGTERM received: checkpointing after the current step")
        self.received = True


class Backup:
    """The preemption backup: every worker saves, only the chief's copy is kept."""

    def __init__(
        self, checkpoint: tf.train.Checkpoint, directory: str, strategy: tf.distribute.Strategy
    ):
        self.directory = directory
        self._checkpoint = checkpoint
        write_dir = distribution.worker_write_dir(self.directory, strategy)
        self._manager = tf.train.CheckpointManager(checkpoint, write_dir, max_to_keep=2)
        self._is_chief = distribution.is_chief(strategy)

    def restore(self) -> bool:
        """Restores the newest intact backup, if there is one; every worker reads the chief's.

        A backup that cannot be read (cut short, checksum mismatch) or whose files are gone
        is skipped with a warning for the one before it, whatever the `checkpoint` index
        file says.
        """
        for path in backup_candidates(self.directory):
            try:
                self._checkpoint.restore(path).assert_existing_objects_matched()
            # IndexError: the checkpoint reader's "Read less bytes than requested".
            except (tf.errors.OpError, ValueError, AssertionError, IndexError) as error:
                message = str(error).strip().splitlines()[0]
                logging.warning("backup %s is unreadable (%s): trying an older one", path, message)
                continue
            logging.info("resumed from %s", path)
            return True
        return False

    def save(self, global_step: int) -> None:
        self._manager.save(checkpoint_number=global_step)
        if not self._is_chief:
            tf.io.gfile.rmtree(self._manager.directory)


def backup_candidates(directory: str) -> list[str]:
    """Checkpoint prefixes of `directory` (`ckpt-<step>` with an index file), newest first."""
    pattern = tf.io.gfile.join(directory, "ckpt-*.index")
    prefixes = [path[: -len(".index")] for path in tf.io.gfile.glob(pattern)]
    steps = {prefix: prefix.rsplit("-", 1)[1] for prefix in prefixes}
    return sorted(
        (prefix for prefix, step in steps.items() if step.isdigit()),
        key=lambda prefix: int(steps[prefix]),
        reverse=True,
    )


def save_final_weights(model: keras.Model, job_dir: str, strategy: tf.distribute.Strategy) -> str:
    """Saves the trained weights to JOB_DIR/checkpoints (every worker takes part)."""
    directory = tf.io.gfile.join(job_dir, contract.CHECKPOINTS_DIR)
    write_dir = distribution.worker_write_dir(directory, strategy)
    tf.train.Checkpoint(model=model).write(tf.io.gfile.join(write_dir, contract.FINAL_WEIGHTS))
    if write_dir != directory:
        tf.io.gfile.rmtree(write_dir)
    return directory


def final_weights_path(job_dir: str) -> str:
    """Where training leaves its final (early-stopping best) weights."""
    return tf.io.gfile.join(job_dir, contract.CHECKPOINTS_DIR, contract.FINAL_WEIGHTS)


def restore_trained_model(config: TrainConfig, num_classes: int) -> keras.Model:
    """A fresh float32 model with a job's final weights, whatever the training precision."""
    keras.mixed_precision.set_global_policy("float32")
    model = model_lib.build_model(num_classes, config.input_size, "none", config.dropout)
    status = tf.train.Checkpoint(model=model).read(final_weights_path(config.job_dir))
    status.assert_existing_objects_matched()
    return model
