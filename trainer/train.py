"""The training loop: two phases, distributed, checkpointed, resumable mid-epoch.

A custom loop rather than `Model.fit`: Keras 3 `fit` under MultiWorkerMirroredStrategy has
open bugs, and `BackupAndRestore` keeps no phase or early-stopping state. Everything needed to
resume (phase, epoch, step, optimizer slots, learning-rate schedule position, early stopping,
best weights) lives in one `tf.train.Checkpoint`, saved every `checkpoint_every_steps`, at each
epoch end, and when any worker receives SIGTERM (all workers agree on the step through the
same all-reduce that carries the gradients, and all of them take part in the save).
"""

import dataclasses
import json
import logging
import math
import signal
import sys
import time
import uuid

import keras
import numpy as np
import tensorflow as tf

from objrec import contract
from trainer import distribution, input_pipeline, lineage, plots, recipes
from trainer import evaluate as evaluate_lib
from trainer import export as export_lib
from trainer import model as model_lib
from trainer.config import TrainConfig

# Exit code after a preemption save: Kubernetes Jobs treat it as retriable (podFailurePolicy).
EXIT_PREEMPTED = 42


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str  # "head" (backbone frozen) or "fine_tune" (backbone from fine_tune_from)
    epochs: int
    learning_rate: float


def plan_phases(config: TrainConfig) -> list[Phase]:
    """The phases that run, in order; a phase with no epochs is left out."""
    phases = [
        Phase("head", config.head_epochs, config.learning_rate),
        Phase("fine_tune", config.fine_tune_epochs, config.fine_tune_learning_rate),
    ]
    return [phase for phase in phases if phase.epochs > 0]


def steps_per_epoch(num_train_examples: int, global_batch_size: int) -> int:
    """Whole global batches per epoch: 10,000 images / (32 x 2 replicas) = 156 steps."""
    return max(1, num_train_examples // global_batch_size)


def learning_rate_schedule(phase: Phase, steps: int, warmup_epochs: float):
    """Linear warmup to the phase's rate, then cosine decay to 1% of it by the phase's end."""
    total_steps = phase.epochs * steps
    warmup_steps = min(int(warmup_epochs * steps), total_steps // 2)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else phase.learning_rate,
        decay_steps=max(1, total_steps - warmup_steps),
        alpha=0.01,
        warmup_target=phase.learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def cpu_computes_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX), which oneDNN uses."""
    try:
        with open(cpuinfo) as file:
            flags = {flag for line in file if line.startswith("flags") for flag in line.split()}
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision_policy(requested: str, num_gpus: int, cpu_bfloat16: bool = False) -> str:
    """`auto`: float16 compute on GPUs (tensor cores); on a CPU with bfloat16 instructions,
    bfloat16 compute (ResNet50 at 32 px on 2 such cores: 160 against 137 images/s); float32
    on other CPUs, where half precision only slows. Variables and the export stay float32."""
    policies = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
    if requested == "auto":
        if num_gpus:
            return "mixed_float16"
        return "mixed_bfloat16" if cpu_bfloat16 else "float32"
    if requested not in policies:
        raise ValueError(f"--mixed_precision {requested}: choose auto, off, float16 or bfloat16")
    return policies[requested]


def make_optimizer(phase: Phase, steps: int, config: TrainConfig, variables: list):
    """Adam for one phase, built on that phase's variables (so a checkpoint restores slots)."""
    optimizer = keras.optimizers.Adam(
        learning_rate_schedule(phase, steps, config.warmup_epochs),
        weight_decay=config.weight_decay or None,
        name=f"{phase.name}_adam",
    )
    if config.weight_decay:
        # AdamW's practice: BatchNorm scales and shifts and biases are not decayed.
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    if keras.mixed_precision.global_policy().compute_dtype == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, name=f"{phase.name}_scale")
    optimizer.build(variables)
    return optimizer


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


class BestWeights(tf.Module):
    """A copy of the model weights at the best validation loss of the current phase."""

    def __init__(self, model: keras.Model, name: str = "best_weights"):
        super().__init__(name=name)
        self._model = model
        self.copies = [tf.Variable(v.value, trainable=False) for v in model.weights]

    @tf.function
    def keep(self):
        for copy, variable in zip(self.copies, self._model.weights, strict=True):
            copy.assign(variable.value)

    @tf.function
    def restore_into_model(self):
        for copy, variable in zip(self.copies, self._model.weights, strict=True):
            variable.assign(copy)


class AveragedWeights(BestWeights):
    """An exponential moving average of every model weight, BatchNorm statistics included.

    Keras's optimizer option (`use_ema`) averages only the trainable variables, pairing the
    averaged kernels with the raw weights' BatchNorm statistics, and shows the average only
    when training ends; validation and early stopping need it every epoch. The momentum warms
    up as (1 + n) / (10 + n) over the first updates, so the random start is soon forgotten.
    """

    def __init__(self, model: keras.Model, momentum: float):
        super().__init__(model, name="averaged_weights")
        self._momentum = momentum
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False)

    def update(self):
        """One step of the average (called in the train function, cross-replica)."""
        count = tf.cast(self.updates, tf.float32)
        momentum = tf.minimum(self._momentum, (1.0 + count) / (10.0 + count))
        for copy, variable in zip(self.copies, self._model.weights, strict=True):
            value = tf.cast(variable.value, copy.dtype)
            copy.assign(momentum * copy + (1.0 - momentum) * value)
        self.updates.assign_add(1)

    @tf.function
    def swap(self):
        """Exchanges the model's weights and the average (twice restores both)."""
        for copy, variable in zip(self.copies, self._model.weights, strict=True):
            raw = tf.identity(variable.value)
            variable.assign(copy)
            copy.assign(raw)

    def reset(self):
        """Starts the average again from the model's weights (a new phase)."""
        self.keep()
        self.updates.assign(0)


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

    def __init__(self, checkpoint: tf.train.Checkpoint, directory: str, strategy):
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

    def save(self, global_step: int):
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


def make_train_step(
    model, optimizer, variables, strategy, config: TrainConfig, class_weights=None, averaged=None
):
    """Runs `num_steps` distributed steps in one call; returns (loss sum, correct count, any
    worker preempted).

    Several steps per call (Keras's `steps_per_execution`) keep the host out of the loop: the
    sums stay on the device and the preemption flag is all-reduced once per call, so every
    worker stops after the same step. `class_weights` (one per class) scales each example's
    loss by its true class's weight; `averaged` (AveragedWeights) is updated after each step.
    """

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            per_example = keras.losses.categorical_crossentropy(
                labels, probabilities, label_smoothing=config.label_smoothing
            )
            if class_weights is not None:
                per_example *= tf.reduce_sum(labels * tf.constant(class_weights), axis=-1)
            # Sum over the replica's examples / global batch: replicas' gradients then add up
            # to the gradient of the global mean loss.
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=config.batch_size)
            scaled = optimizer.scale_loss(loss)  # only LossScaleOptimizer (float16) scales
        gradients = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
        correct = tf.reduce_sum(
            tf.cast(tf.argmax(probabilities, -1) == tf.argmax(labels, -1), tf.float32)
        )
        return loss, correct

    def replica_any(preempted):
        # Summed over every replica of every worker: > 0 when any worker got SIGTERM.
        context = tf.distribute.get_replica_context()
        return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(preempted))

    sum_ = tf.distribute.ReduceOp.SUM

    @tf.function(jit_compile=config.jit_compile)
    def one_step(batch):
        loss, correct = strategy.run(replica_step, batch)
        return strategy.reduce(sum_, loss, axis=None), strategy.reduce(sum_, correct, axis=None)

    @tf.function
    def steps(iterator, num_steps, preempted):
        loss_sum = tf.constant(0.0)
        correct = tf.constant(0.0)
        for _ in tf.range(num_steps):
            loss, step_correct = one_step(next(iterator))
            if averaged is not None:
                averaged.update()
            loss_sum += loss
            correct += step_correct
        any_preempted = strategy.reduce(sum_, strategy.run(replica_any, (preempted,)), axis=None)
        return loss_sum, correct, any_preempted

    return steps


def make_eval_step(model, strategy):
    """Sums of (loss, correct, weight) over one distributed batch of weighted examples."""

    def replica_step(images, labels, weights):
        probabilities = model(images, training=False)
        loss = keras.losses.categorical_crossentropy(labels, probabilities)
        correct = tf.cast(tf.argmax(probabilities, -1) == tf.argmax(labels, -1), tf.float32)
        return tf.stack(
            [
                tf.reduce_sum(loss * weights),
                tf.reduce_sum(correct * weights),
                tf.reduce_sum(weights),
            ]
        )

    @tf.function
    def step(batch):
        sums = strategy.run(replica_step, batch)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)

    return step


def evaluate(eval_step, dataset, steps: int) -> dict:
    """Loss and accuracy over exactly one pass of a padded evaluation dataset."""
    iterator = iter(dataset)
    totals = sum(eval_step(next(iterator)) for _ in range(steps))
    loss_sum, correct, count = (float(x) for x in totals.numpy())
    return {"loss": loss_sum / count, "accuracy": correct / count}


def update_early_stopping(
    state: TrainState, best: BestWeights, val_loss: float, patience: int
) -> bool:
    """Records an epoch's validation loss; True when the phase should stop."""
    if val_loss < float(state.best_val_loss.numpy()):
        state.best_val_loss.assign(val_loss)
        state.epochs_without_improvement.assign(0)
        state.has_best.assign(True)
        best.keep()
        return False
    state.epochs_without_improvement.assign_add(1)
    return patience > 0 and int(state.epochs_without_improvement.numpy()) >= patience


class History:
    """Per-epoch metrics across both phases, kept in eval/history.json by the chief."""

    def __init__(self, job_dir: str, enabled: bool):
        self.directory = tf.io.gfile.join(job_dir, contract.EVAL_DIR)
        self.path = tf.io.gfile.join(self.directory, "history.json")
        self.enabled = enabled
        self.epochs = []
        if enabled and tf.io.gfile.exists(self.path):
            with tf.io.gfile.GFile(self.path) as file:
                self.epochs = json.load(file)

    def keep_until(self, phase: int, epoch: int):
        """Drops epochs the restored checkpoint does not include (written after it)."""
        self.epochs = [e for e in self.epochs if (e["phase_index"], e["epoch"]) < (phase, epoch)]

    def add(self, record: dict):
        self.epochs.append(record)
        if self.enabled:
            tf.io.gfile.makedirs(self.directory)
            with tf.io.gfile.GFile(self.path, "w") as file:
                json.dump(self.epochs, file, indent=1)


def _summary_writer(log_dir: str, chief: bool):
    if chief:
        return tf.summary.create_file_writer(log_dir)
    return tf.summary.create_noop_writer()


@dataclasses.dataclass
class Trainee:
    """What training builds under the strategy's scope, and checkpoints as one."""

    model: keras.Model
    optimizers: dict  # phase name -> optimizer built on that phase's variables
    state: TrainState
    best: BestWeights
    averaged: AveragedWeights | None  # with --ema_momentum

    def checkpoint(self) -> tf.train.Checkpoint:
        extra = {"averaged": self.averaged} if self.averaged is not None else {}
        return tf.train.Checkpoint(
            model=self.model, state=self.state, best=self.best, **self.optimizers, **extra
        )


def build_trainee(config: TrainConfig, info, strategy, phases: list[Phase], steps: int):
    """Model, one optimizer per phase, loop state and best-weights copy, all distributed."""
    with strategy.scope():
        model = model_lib.build_model(
            info.num_classes, config.input_size, config.weights, config.dropout
        )
        model_lib.set_batchnorm_momentum(model, config.batchnorm_momentum)
        optimizers = {}
        for phase in phases:
            variables = model_lib.set_phase_trainable(model, phase.name, config.fine_tune_from)
            optimizers[phase.name] = make_optimizer(phase, steps, config, variables)
        averaged = AveragedWeights(model, config.ema_momentum) if config.ema_momentum else None
        return Trainee(model, optimizers, TrainState(), BestWeights(model), averaged)


def run_steps(train_step, train_data, state: TrainState, steps: int, watch, backup, config):
    """The rest of the current epoch's steps; returns (loss sum, correct count, steps run).

    Runs `steps_per_execution` steps a call, never past a backup step or the epoch's end;
    saves every `checkpoint_every_steps`; when any worker got SIGTERM, saves and exits.
    """
    loss_sum = correct = 0.0
    done_before = int(state.step.numpy())
    done = done_before
    while done < steps:
        global_step = int(state.global_step.numpy())
        to_backup = config.checkpoint_every_steps - global_step % config.checkpoint_every_steps
        count = min(config.steps_per_execution, steps - done, to_backup)
        loss, call_correct, preempted = train_step(
            train_data, tf.constant(count), tf.constant(float(watch.received))
        )
        loss_sum += float(loss)
        correct += float(call_correct)
        done += count
        state.step.assign(done)
        state.global_step.assign(global_step + count)
        if float(preempted) > 0:
            backup.save(global_step + count)
            logging.warning("preemption checkpoint saved; exiting to be restarted")
            sys.exit(EXIT_PREEMPTED)
        if count == to_backup:
            backup.save(global_step + count)
    return loss_sum, correct, steps - done_before


def epoch_line(record: dict, epochs: int, seconds: float) -> str:
    """`fine_tune epoch 3/20 (41 s): loss 0.612 accuracy 0.801 val_loss 0.55 ...`."""
    metrics = " ".join(
        f"{key} {record[key]:.4g}"
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
        if key in record
    )
    return f"{record['phase']} epoch {record['epoch'] + 1}/{epochs} ({seconds:.0f} s): {metrics}"


def write_scalars(writer, record: dict, step: int):
    with writer.as_default(step=step):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
            if key in record:
                tf.summary.scalar(f"{record['phase']}/{key}", record[key])


def finish_phase(trainee: Trainee, backup: Backup):
    """Keeps the phase's best weights (early stopping; else the average, if kept) and moves
    the state to the next phase, whose average starts from those weights."""
    state = trainee.state
    if bool(state.has_best.numpy()):
        trainee.best.restore_into_model()
    elif trainee.averaged is not None:
        trainee.averaged.restore_into_model()
    if trainee.averaged is not None:
        trainee.averaged.reset()
    state.phase.assign_add(1)
    state.epoch.assign(0)
    state.best_val_loss.assign(np.inf)
    state.epochs_without_improvement.assign(0)
    state.has_best.assign(False)
    backup.save(int(state.global_step.numpy()))


def train(
    config: TrainConfig, info: input_pipeline.DatasetInfo, strategy, watch: PreemptionWatch
) -> str:
    """Runs (or resumes) both phases; returns the directory of the final weights."""
    steps = steps_per_epoch(info.num_examples[contract.TRAIN], config.batch_size)
    replicas = strategy.num_replicas_in_sync
    # e.g. a global batch of 64 = 32 per replica x 2 GPUs; the learning rates are not scaled.
    logging.info(
        "global batch %d = %d per replica x %d replicas; %d steps per epoch; learning rates "
        "%g (head) and %g (fine-tuning) for that global batch",
        config.batch_size, config.batch_size // replicas, replicas, steps,
        config.learning_rate, config.fine_tune_learning_rate,
    )  # fmt: skip
    phases = plan_phases(config)
    chief = distribution.is_chief(strategy)
    trainee = build_trainee(config, info, strategy, phases, steps)
    state = trainee.state
    backup = Backup(trainee.checkpoint(), config.resolved_backup_dir, strategy)
    backup.restore()
    history = History(config.job_dir, chief)
    history.keep_until(int(state.phase.numpy()), int(state.epoch.numpy()))
    writer = _summary_writer(config.resolved_log_dir, chief)
    train_data = iter(
        strategy.distribute_datasets_from_function(
            lambda context: input_pipeline.make_train_dataset(info, config, context)
        )
    )
    validate = make_validation(config, info, strategy, trainee.model)
    weights = input_pipeline.class_weights(info) if config.class_weights else None

    for phase_index, phase in enumerate(phases):
        if phase_index < int(state.phase.numpy()):
            continue  # finished before a restart
        variables = model_lib.set_phase_trainable(trainee.model, phase.name, config.fine_tune_from)
        optimizer = trainee.optimizers[phase.name]
        train_step = make_train_step(
            trainee.model, optimizer, variables, strategy, config, weights, trainee.averaged
        )
        logging.info(
            "phase %s: %d trainable weights, up to %d epochs",
            phase.name,
            len(variables),
            phase.epochs,
        )
        stop = False
        while int(state.epoch.numpy()) < phase.epochs and not stop:
            started = time.monotonic()
            loss_sum, correct, ran = run_steps(
                train_step, train_data, state, steps, watch, backup, config
            )
            record = {
                "phase": phase.name,
                "phase_index": phase_index,
                "epoch": int(state.epoch.numpy()),
                "loss": loss_sum / max(1, ran),
                "accuracy": correct / (max(1, ran) * config.batch_size),
                "learning_rate": float(optimizer.learning_rate),
            }
            if validate:
                if trainee.averaged is not None:
                    trainee.averaged.swap()  # the average is validated and kept as the best
                record.update(validate())
                stop = update_early_stopping(
                    state, trainee.best, record["val_loss"], config.early_stopping_patience
                )
                if trainee.averaged is not None:
                    trainee.averaged.swap()
            logging.info("%s", epoch_line(record, phase.epochs, time.monotonic() - started))
            history.add(record)
            write_scalars(writer, record, int(state.global_step.numpy()))
            state.epoch.assign_add(1)
            state.step.assign(0)
            backup.save(int(state.global_step.numpy()))
        finish_phase(trainee, backup)
    return save_final_weights(trainee.model, config.job_dir, strategy)


def make_validation(config: TrainConfig, info, strategy, model):
    """A function returning {val_loss, val_accuracy}; None without a validation split."""
    if not info.has_split(contract.VALIDATION):
        logging.warning("no validation split: early stopping is off")
        return None
    data = strategy.distribute_datasets_from_function(
        lambda context: input_pipeline.make_eval_dataset(info, contract.VALIDATION, config, context)
    )
    steps = input_pipeline.eval_steps(info.num_examples[contract.VALIDATION], config.batch_size)
    eval_step = make_eval_step(model, strategy)

    def validate() -> dict:
        result = evaluate(eval_step, data, steps)
        return {"val_loss": result["loss"], "val_accuracy": result["accuracy"]}

    return validate


def save_final_weights(model: keras.Model, job_dir: str, strategy) -> str:
    """Saves the trained weights to JOB_DIR/checkpoints (every worker takes part)."""
    directory = tf.io.gfile.join(job_dir, contract.CHECKPOINTS_DIR)
    write_dir = distribution.worker_write_dir(directory, strategy)
    tf.train.Checkpoint(model=model).write(tf.io.gfile.join(write_dir, contract.FINAL_WEIGHTS))
    if write_dir != directory:
        tf.io.gfile.rmtree(write_dir)
    return directory


def check_setup(config: TrainConfig, info: input_pipeline.DatasetInfo, replicas: int):
    """Errors a user can make, each reported before any training starts."""
    if not info.has_split(contract.TRAIN):
        raise input_pipeline.DatasetError(
            f"--data_dir {config.data_dir}: the train split has no examples; "
            "add images or lower the validation/test fractions of --split"
        )
    if config.batch_size < replicas or config.batch_size % replicas:
        suggestion = math.ceil(config.batch_size / replicas) * replicas
        raise ValueError(
            f"--batch_size {config.batch_size}: the global batch must be a multiple of the "
            f"{replicas} replicas; use {suggestion}"
        )
    if not plan_phases(config):
        raise ValueError("--head_epochs and --fine_tune_epochs are both 0: nothing to train")
    model_lib.check_weights(config.weights)


def check_job_dir_writable(job_dir: str):
    try:
        tf.io.gfile.makedirs(job_dir)
        # One probe per process: every worker of a cluster checks the same directory at once.
        probe = tf.io.gfile.join(job_dir, f".objrec-write-probe-{uuid.uuid4().hex}")
        with tf.io.gfile.GFile(probe, "w") as file:
            file.write("ok")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as error:
        raise ValueError(
            f"--job_dir {job_dir}: cannot write there ({error}); choose a writable directory"
        ) from error


def draw_pictures(job_dir: str, log_dir: str, predictions, metrics: dict):
    """eval/training_curves.png, confusion_matrix.png and sample_predictions.png, also shown
    in TensorBoard's Images tab."""
    eval_dir = tf.io.gfile.join(job_dir, contract.EVAL_DIR)
    history = History(job_dir, enabled=True).epochs
    if history:
        plots.plot_training_curves(history, tf.io.gfile.join(eval_dir, "training_curves.png"))
    plots.plot_confusion_matrix(
        metrics["confusion_matrix"],
        metrics["labels"],
        tf.io.gfile.join(eval_dir, "confusion_matrix.png"),
    )
    count = len(predictions.sample_images)
    plots.plot_sample_predictions(
        predictions.sample_images,
        predictions.true_ids[:count],
        predictions.probabilities[:count],
        metrics["labels"],
        tf.io.gfile.join(eval_dir, "sample_predictions.png"),
    )
    with tf.summary.create_file_writer(log_dir).as_default(step=0):
        for name in ("training_curves", "confusion_matrix", "sample_predictions"):
            path = tf.io.gfile.join(eval_dir, f"{name}.png")
            if tf.io.gfile.exists(path):
                png = tf.io.decode_png(tf.io.read_file(path), channels=3)
                tf.summary.image(f"eval/{name}", png[tf.newaxis])


def export_and_evaluate(
    config: TrainConfig, info: input_pipeline.DatasetInfo, watch: PreemptionWatch
) -> dict:
    """The non-distributed step after training: evaluate and export the final weights.

    A fresh float32 model (whatever the training precision) is restored from
    JOB_DIR/checkpoints, so the export is the same for every strategy. SIGTERM before the
    export is published exits 42 with nothing published; the rerun exports again.
    """

    def exit_if_preempted():
        if watch.received:
            logging.warning("SIGTERM received during the export: exiting before publishing")
            sys.exit(EXIT_PREEMPTED)

    model = export_lib.restore_trained_model(config, info.num_classes)
    split = evaluate_lib.evaluation_split(info)
    predictions = evaluate_lib.predict_split(model, info, split, config)
    metrics = evaluate_lib.classification_metrics(
        predictions.true_ids,
        predictions.probabilities,
        info.labels,
        contract.top_k_for(info.num_classes),
    )
    metrics["split"] = split
    evaluate_lib.write_metrics(config.job_dir, metrics)
    draw_pictures(config.job_dir, config.resolved_log_dir, predictions, metrics)
    export_dir = export_lib.export_model(model, config, info, before_publish=exit_if_preempted)
    epochs_trained = len(History(config.job_dir, enabled=True).epochs)
    lineage.report_to_hypertune(metrics["accuracy"], global_step=epochs_trained)
    logging.info(
        "%s accuracy %.4f on %d examples; exported %s",
        split,
        metrics["accuracy"],
        metrics["num_examples"],
        export_dir,
    )
    return {
        "export_dir": export_dir,
        "split": split,
        "accuracy": metrics["accuracy"],
        "num_examples": metrics["num_examples"],
    }


def train_and_evaluate(config: TrainConfig) -> dict:
    """Trains (or resumes), then the chief evaluates and exports. Returns a summary."""
    num_gpus = len(tf.config.list_physical_devices("GPU"))
    policy = resolve_precision_policy(
        config.mixed_precision, num_gpus, cpu_bfloat16=not num_gpus and cpu_computes_bfloat16()
    )
    keras.mixed_precision.set_global_policy(policy)
    logging.info("precision policy %s (--mixed_precision %s)", policy, config.mixed_precision)
    strategy = distribution.create_strategy(config.strategy)
    info = input_pipeline.load_dataset_info(config.data_dir)
    config = recipes.resolve(config, info.image_size)
    check_setup(config, info, strategy.num_replicas_in_sync)
    check_job_dir_writable(config.job_dir)
    chief = distribution.is_chief(strategy)
    if chief:
        with tf.io.gfile.GFile(tf.io.gfile.join(config.job_dir, contract.CONFIG_FILE), "w") as file:
            file.write(config.to_json())
        record = lineage.run_record(
            config, info, type(strategy).__name__, strategy.num_replicas_in_sync
        )
        lineage.write_json(tf.io.gfile.join(config.job_dir, contract.RUN_FILE), record)
    watch = PreemptionWatch()
    train(config, info, strategy, watch)
    if not chief:
        return {}
    return export_and_evaluate(config, info, watch)
