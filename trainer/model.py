"""ResNet50 backbone with a new classification head, and which layers each phase trains."""

import json
import os
import tempfile
from collections.abc import Iterator

import keras
import tensorflow as tf

from objrec import contract

BACKBONE_NAME = "resnet50"

# ResNet50's ImageNet normalisation ("caffe" mode): BGR order, per-channel mean removed.
_BGR_MEAN = (103.939, 116.779, 123.68)


class WeightsError(ValueError):
    """`--weights` names something that cannot be loaded into the backbone."""


@keras.saving.register_keras_serializable(package="objrec")
class ResNetNormalization(keras.layers.Layer):
    """RGB pixels in [0, 255] to ResNet50's input: BGR with the ImageNet mean removed."""

    def call(self, images: tf.Tensor) -> tf.Tensor:
        bgr = keras.ops.flip(images, axis=-1)
        return bgr - keras.ops.convert_to_tensor(_BGR_MEAN, dtype=bgr.dtype)


def _local_weights_file(path: str) -> str:
    """Keras loads weights from local files only: copy a gs:// (or any) path to a temp file."""
    if not tf.io.gfile.exists(path):
        raise WeightsError(
            f"--weights {path}: no such file or job directory; give imagenet, none, a "
            ".weights.h5 file or a finished objrec job directory"
        )
    if tf.io.gfile.isdir(path):
        raise WeightsError(
            f"--weights {path}: a directory without {contract.RUN_FILE}, so not an objrec job "
            "directory; give the job's own directory (the --job_dir it trained with)"
        )
    local = os.path.join(tempfile.mkdtemp(prefix="objrec-weights-"), os.path.basename(path))
    tf.io.gfile.copy(path, local, overwrite=True)
    return local


def is_job_dir(path: str) -> bool:
    """Whether `path` is an objrec job directory (it has a run.json) rather than a file."""
    return tf.io.gfile.isdir(path) and tf.io.gfile.exists(tf.io.gfile.join(path, contract.RUN_FILE))


def _job_record(job_dir: str) -> dict:
    with tf.io.gfile.GFile(tf.io.gfile.join(job_dir, contract.RUN_FILE)) as file:
        return json.load(file)


def check_job_weights(job_dir: str) -> tuple[str, dict]:
    """The final weights and run.json of a finished job whose backbone this one can take.

    Raises:
        WeightsError: the job has no final weights, or trained another backbone.
    """
    final = tf.io.gfile.join(job_dir, contract.CHECKPOINTS_DIR, contract.FINAL_WEIGHTS)
    if not tf.io.gfile.exists(final + ".index"):
        raise WeightsError(
            f"--weights {job_dir}: that job has no final weights ({final}); let it finish "
            "(rerun its objrec-train command to resume it) or give another job"
        )
    record = _job_record(job_dir)
    found = record.get("backbone", BACKBONE_NAME)
    if found != BACKBONE_NAME:
        raise WeightsError(
            f"--weights {job_dir}: that job trained a {found} backbone, this one is "
            f"{BACKBONE_NAME}; give a {BACKBONE_NAME} job, a weights file, imagenet or none"
        )
    return final, record


def check_weights(weights: str) -> None:
    """Refuses a `--weights` value that cannot be loaded, before anything is built."""
    if weights.lower() in ("imagenet", "none"):
        return
    if is_job_dir(weights):
        check_job_weights(weights)
    elif not tf.io.gfile.exists(weights) or tf.io.gfile.isdir(weights):
        _local_weights_file(weights)  # raises the error that fits


def load_job_backbone(backbone: keras.Model, job_dir: str) -> None:
    """Copies the trained backbone of a finished objrec job into `backbone`.

    Raises:
        WeightsError: the job has no final weights, or another backbone or input channels.
    """
    final, record = check_job_weights(job_dir)
    job_model = build_model(
        len(record["dataset"]["labels"]), record["config"]["input_size"], "none"
    )
    try:
        tf.train.Checkpoint(model=job_model).read(final).assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.OpError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise WeightsError(
            f"--weights {job_dir}: its final weights do not fit a {BACKBONE_NAME} over RGB "
            f"images ({first_line}); give a job trained by objrec-train"
        ) from None
    backbone.set_weights(backbone_of(job_model).get_weights())


def zero_init_residual_branches(backbone: keras.Model) -> None:
    """Starts every residual block as the identity: the last BatchNorm of each block's branch
    scales by zero (Goyal et al., 2017, "zero-gamma"), so a network trained from scratch first
    learns through its shortcuts, and its 16 blocks join in as they learn."""
    for layer in backbone.layers:
        if layer.name.endswith("_3_bn"):
            layer.gamma.assign(keras.ops.zeros_like(layer.gamma))


def leaf_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer of `model` that is not itself a model, those of nested models included."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


def set_batchnorm_momentum(model: keras.Model, momentum: float) -> None:
    """The moving statistics' momentum of every BatchNorm layer (used when BatchNorm trains).

    After n steps, momentum**n of the statistics is still their start (mean 0, variance 1):
    at Keras's 0.99 that is 20% after 160 steps (a few hundred images, 20 epochs), whose
    evaluation then normalises with statistics the network never had; at 0.9 nothing.
    """
    for layer in backbone_of(model).layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def build_backbone(input_size: int, weights: str) -> keras.Model:
    """ResNet50 without its top; `weights` is imagenet, none, a `.weights.h5` path or a job
    directory whose trained backbone is the starting point."""
    keyword = weights.lower()
    backbone = keras.applications.ResNet50(
        include_top=False,
        weights="imagenet" if keyword == "imagenet" else None,
        input_shape=(input_size, input_size, 3),
    )
    if keyword == "none":
        zero_init_residual_branches(backbone)
    if keyword in ("imagenet", "none"):
        return backbone
    if is_job_dir(weights):
        load_job_backbone(backbone, weights)
        return backbone
    try:
        backbone.load_weights(_local_weights_file(weights))
    except (ValueError, KeyError) as error:
        raise WeightsError(
            f"--weights {weights}: not weights of a ResNet50 without its top ({error}); "
            "save them with `backbone.save_weights(...)` of keras.applications.ResNet50"
            "(include_top=False)"
        ) from error
    return backbone


def build_model(
    num_classes: int, input_size: int, weights: str, dropout: float = 0.2
) -> keras.Model:
    """Pixels [0, 255] -> class probabilities (float32 even under mixed precision).

    Whether BatchNorm normalises by the batch while training is `set_phase_trainable`'s: a
    frozen layer runs in inference mode.
    """
    images = keras.Input((input_size, input_size, 3), name="images")
    backbone = build_backbone(input_size, weights)
    normalized = ResNetNormalization(name="normalization")(images)
    features = backbone(normalized)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    dropped = keras.layers.Dropout(dropout, name="dropout")(pooled)
    probabilities = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="probabilities"
    )(dropped)
    return keras.Model(images, probabilities, name="objrec_resnet50")


def backbone_of(model: keras.Model) -> keras.Model:
    return model.get_layer(BACKBONE_NAME)


def fine_tune_start(backbone: keras.Model, fine_tune_from: str) -> int:
    """Index of the first backbone layer fine-tuning trains (a name or a name prefix)."""
    if fine_tune_from == "all":
        return 0
    for index, layer in enumerate(backbone.layers):
        if layer.name == fine_tune_from or layer.name.startswith(fine_tune_from):
            return index
    stages = sorted({layer.name.split("_")[0] for layer in backbone.layers if "_" in layer.name})
    raise ValueError(
        f"--fine_tune_from {fine_tune_from}: no such ResNet50 layer; give `all`, a layer name "
        f"or a stage prefix such as {', '.join(s + '_block1' for s in stages if s[-1].isdigit())}"
    )


def set_phase_trainable(
    model: keras.Model, phase: str, fine_tune_from: str, train_batchnorm: bool = True
) -> list:
    """Marks what `phase` (head or fine_tune) trains; returns its trainable variables.

    Without `train_batchnorm`, every BatchNorm layer stays frozen: it normalises with the
    backbone's moving statistics (inference mode) and keeps its scale and shift, as a
    pretrained backbone needs on small batches of new data. Freezing is the one way to get
    that in Keras 3: a functional model passes its caller's `training=True` to every layer
    it calls, so `backbone(x, training=False)` does not hold while fitting
    (keras-team/keras#20285).
    """
    backbone = backbone_of(model)
    if phase == "head":
        backbone.trainable = False
    else:
        backbone.trainable = True
        start = fine_tune_start(backbone, fine_tune_from)
        for index, layer in enumerate(backbone.layers):
            batchnorm = isinstance(layer, keras.layers.BatchNormalization)
            layer.trainable = index >= start and (train_batchnorm or not batchnorm)
    return list(model.trainable_variables)
