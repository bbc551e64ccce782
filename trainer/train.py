"""The training loop: two phases, distributed, checkpointed, resumable mid-epoch.

A custom loop rather than `Model.fit`: Keras 3 `fit` under MultiWorkerMirroredStrategy has
open bugs, and `BackupAndRestore` keeps no phase or early-stopping state. Everything needed to
resume (phase, epoch, step, optimizer slots, learning-rate schedule position, early stopping,
best weights) lives in one `tf.train.Checkpoint`, saved every `checkpoint_every_steps`, at each
epoch end, and when any worker receives SIGTERM (all workers agree on the step through the
same all-reduce that carries the gradients, and all of them take part in the save).
"""

import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from objrec import contract
from trainer import (
    checkpoints,
    distribution,
    fused_adam,
    fused_batchnorm,
    history,
    input_pipeline,
    kept_weights,
    matmul_convolutions,
)
from trainer import model as model_lib
from trainer.config import TrainConfig


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


def learning_rate_schedule(
    phase: Phase, steps: int, warmup_epochs: float
) -> float | keras.optimizers.schedules.LearningRateSchedule:
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


def make_optimizer(
    phase: Phase, steps: int, config: TrainConfig, variables: list
) -> keras.optimizers.Optimizer:
    """Adam for one phase, built on that phase's variables (so a checkpoint restores slots)."""
    optimizer = fused_adam.FusedAdam(
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


def make_train_step(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    variables: list,
    strategy: tf.distribute.Strategy,
    config: TrainConfig,
    class_weights: list[float] | None = None,
    averaged: kept_weights.AveragedWeights | None = None,
) -> Callable:
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


def make_eval_step(model: keras.Model, strategy: tf.distribute.Strategy) -> Callable:
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


def eval_pass(eval_step: Callable, dataset: tf.distribute.DistributedDataset, steps: int) -> dict:
    """Loss and accuracy over exactly one pass of a padded evaluation dataset."""
    iterator = iter(dataset)
    totals = sum(eval_step(next(iterator)) for _ in range(steps))
    loss_sum, correct, count = (float(x) for x in totals.numpy())
    return {"loss": loss_sum / count, "accuracy": correct / count}


@dataclasses.dataclass
class Trainee:
    """What training builds under the strategy's scope, and checkpoints as one."""

    model: keras.Model
    optimizers: dict  # phase name -> optimizer built on that phase's variables
    state: checkpoints.TrainState
    best: kept_weights.BestWeights
    averaged: kept_weights.AveragedWeights | None  # with --ema_momentum

    def checkpoint(self) -> tf.train.Checkpoint:
        extra = {"averaged": self.averaged} if self.averaged is not None else {}
        return tf.train.Checkpoint(
            model=self.model, state=self.state, best=self.best, **self.optimizers, **extra
        )


def uses_matmul_convolutions(config: TrainConfig) -> bool:
    """--convolutions: auto is matmul unless training on GPUs (cuDNN is fast there)."""
    if config.convolutions == "auto":
        return not tf.config.list_physical_devices("GPU")
    return config.convolutions == "matmul"


def prepare_layers(model: keras.Model, config: TrainConfig) -> None:
    """Gives the training model the faster kernels --convolutions and --batchnorm ask for."""
    if uses_matmul_convolutions(config):
        count = matmul_convolutions.use_matmul_convolutions(model)
        logging.info("%d convolutions train as matrix products (--convolutions)", count)
    if config.batchnorm == "fused":
        count = fused_batchnorm.use_fused_batchnorm(model)
        logging.info("%d BatchNormalization layers run the fused kernel (--batchnorm)", count)


def build_trainee(
    config: TrainConfig,
    info: input_pipeline.DatasetInfo,
    strategy: tf.distribute.Strategy,
    phases: list[Phase],
    steps: int,
) -> Trainee:
    """Model, one optimizer per phase, loop state and best-weights copy, all distributed."""
    with strategy.scope():
        model = model_lib.build_model(
            info.num_classes, config.input_size, config.weights, config.dropout
        )
        model_lib.set_batchnorm_momentum(model, config.batchnorm_momentum)
        prepare_layers(model, config)
        optimizers = {}
        for phase in phases:
            variables = model_lib.set_phase_trainable(
                model, phase.name, config.fine_tune_from, config.train_batchnorm
            )
            optimizers[phase.name] = make_optimizer(phase, steps, config, variables)
        averaged = (
            kept_weights.AveragedWeights(model, config.ema_momentum)
            if config.ema_momentum
            else None
        )
        return Trainee(
            model, optimizers, checkpoints.TrainState(), kept_weights.BestWeights(model), averaged
        )


def run_steps(
    train_step: Callable,
    train_data: Iterator,
    state: checkpoints.TrainState,
    steps: int,
    watch: checkpoints.PreemptionWatch,
    backup: checkpoints.Backup,
    config: TrainConfig,
    progress: keras.utils.Progbar | None = None,
) -> tuple[float, float, int]:
    """The rest of the current epoch's steps; returns (loss sum, correct count, steps run).

    Runs `steps_per_execution` steps a call, never past a backup step or the epoch's end;
    saves every `checkpoint_every_steps`; when any worker got SIGTERM, saves and exits.
    `progress` shows the mean loss and the images per second so far after each call.
    """
    loss_sum = correct = 0.0
    done_before = int(state.step.numpy())
    done = done_before
    started = time.monotonic()
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
        if progress is not None:
            ran = done - done_before
            seconds = time.monotonic() - started
            progress.update(
                done, [("loss", loss_sum / ran), ("images/s", ran * config.batch_size / seconds)]
            )
        state.step.assign(done)
        state.global_step.assign(global_step + count)
        if float(preempted) > 0:
            backup.save(global_step + count)
            logging.warning("preemption checkpoint saved; exiting to be restarted")
            sys.exit(checkpoints.EXIT_PREEMPTED)
        if count == to_backup:
            backup.save(global_step + count)
    return loss_sum, correct, steps - done_before


def finish_phase(trainee: Trainee, backup: checkpoints.Backup) -> None:
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
    config: TrainConfig,
    info: input_pipeline.DatasetInfo,
    strategy: tf.distribute.Strategy,
    watch: checkpoints.PreemptionWatch,
) -> list[dict]:
    """Runs (or resumes) both phases and saves the final weights; returns every epoch's
    record (eval/history.json), those of a run before a restart included."""
    steps = steps_per_epoch(info.num_examples[contract.TRAIN], config.batch_size)
    log_batch_plan(config, strategy.num_replicas_in_sync, steps)
    phases = plan_phases(config)
    chief = distribution.is_chief(strategy)
    trainee = build_trainee(config, info, strategy, phases, steps)
    state = trainee.state
    backup = checkpoints.Backup(trainee.checkpoint(), config.resolved_backup_dir, strategy)
    backup.restore()
    epochs = history.History(config.job_dir, chief)
    epochs.keep_until(int(state.phase.numpy()), int(state.epoch.numpy()))
    writer = history.summary_writer(config.resolved_log_dir, chief)
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
        variables = model_lib.set_phase_trainable(
            trainee.model, phase.name, config.fine_tune_from, config.train_batchnorm
        )
        optimizer = trainee.optimizers[phase.name]
        train_step = make_train_step(
            trainee.model, optimizer, variables, strategy, config, weights, trainee.averaged
        )
        logging.info("phase %s: %d trainable weights, up to %d epochs",
                     phase.name, len(variables), phase.epochs)  # fmt: skip
        stop = False
        while int(state.epoch.numpy()) < phase.epochs and not stop:
            started = time.monotonic()
            bar = history.progress_bar(steps, config.verbose, chief)
            sums = run_steps(train_step, train_data, state, steps, watch, backup, config, bar)
            record = epoch_record(phase, phase_index, state, sums, optimizer, config.batch_size)
            if validate:
                stop = validate_and_keep(trainee, validate, record, config.early_stopping_patience)
            logging.info("%s", history.epoch_line(record, phase.epochs, time.monotonic() - started))
            epochs.add(record)
            history.write_scalars(writer, record, int(state.global_step.numpy()))
            state.epoch.assign_add(1)
            state.step.assign(0)
            backup.save(int(state.global_step.numpy()))
        finish_phase(trainee, backup)
    checkpoints.save_final_weights(trainee.model, config.job_dir, strategy)
    return epochs.epochs


def log_batch_plan(config: TrainConfig, replicas: int, steps: int) -> None:
    # e.g. a global batch of 64 = 32 per replica x 2 GPUs; the learning rates are not scaled.
    logging.info(
        "global batch %d = %d per replica x %d replicas; %d steps per epoch; learning rates "
        "%g (head) and %g (fine-tuning) for that global batch",
        config.batch_size, config.batch_size // replicas, replicas, steps,
        config.learning_rate, config.fine_tune_learning_rate,
    )  # fmt: skip


def epoch_record(
    phase: Phase,
    phase_index: int,
    state: checkpoints.TrainState,
    sums: tuple[float, float, int],
    optimizer: keras.optimizers.Optimizer,
    batch_size: int,
) -> dict:
    """An epoch's line of eval/history.json from its (loss sum, correct count, steps run)."""
    loss_sum, correct, ran = sums
    return {
        "phase": phase.name,
        "phase_index": phase_index,
        "epoch": int(state.epoch.numpy()),
        "loss": loss_sum / max(1, ran),
        "accuracy": correct / (max(1, ran) * batch_size),
        "learning_rate": float(optimizer.learning_rate),
    }


def validate_and_keep(
    trainee: Trainee, validate: Callable[[], dict], record: dict, patience: int
) -> bool:
    """Adds the validation loss and accuracy to `record` and keeps the best weights; True when
    early stopping ends the phase. With a weight average, the average is what is validated
    and kept."""
    if trainee.averaged is not None:
        trainee.averaged.swap()
    record.update(validate())
    stop = kept_weights.update_early_stopping(
        trainee.state, trainee.best, record["val_loss"], patience
    )
    if trainee.averaged is not None:
        trainee.averaged.swap()
    return stop


def make_validation(
    config: TrainConfig,
    info: input_pipeline.DatasetInfo,
    strategy: tf.distribute.Strategy,
    model: keras.Model,
) -> Callable[[], dict] | None:
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
        result = eval_pass(eval_step, data, steps)
        return {"val_loss": result["loss"], "val_accuracy": result["accuracy"]}

    return validate
