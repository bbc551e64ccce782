"""SavedModel export in TF Serving's layout, with the signatures DESIGN.md specifies.

Re-export a job's trained weights without training:

    python -m trainer.export --data_dir DATASET_DIR --job_dir JOB_DIR
"""

import keras
import tensorflow as tf

from objrec import contract
from trainer import image_ops


class ServingModule(tf.Module):
    """The model plus raw-bytes decoding, labels and top-k: what TF Serving runs."""

    def __init__(
        self,
        model: keras.Model,
        labels: tuple[str, ...],
        image_size: int,
        resize_mode: str,
        input_size: int,
        max_pixels: int,
    ):
        super().__init__(name="objrec_serving")
        self.model = model
        self._labels = tf.constant(list(labels))
        self._top_k = contract.top_k_for(len(labels))
        self._image_size = image_size
        self._resize_mode = resize_mode
        self._input_size = input_size
        self._max_pixels = max_pixels
        self.serve_image_bytes = tf.function(
            self._serve_image_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name=contract.INPUT_IMAGE_BYTES)],
        )
        self.serve_images = tf.function(
            self._serve_images,
            input_signature=[
                tf.TensorSpec(
                    [None, input_size, input_size, 3], tf.uint8, name=contract.INPUT_IMAGES
                )
            ],
        )

    def _outputs(self, images: tf.Tensor, valid: tf.Tensor) -> dict:
        probabilities = self.model(images, training=False)
        probabilities = tf.where(valid[:, tf.newaxis], probabilities, 0.0)
        scores, class_ids = tf.math.top_k(probabilities, k=self._top_k)
        return {
            contract.OUTPUT_PROBABILITIES: probabilities,
            contract.OUTPUT_TOP_K_CLASSES: tf.gather(self._labels, class_ids),
            contract.OUTPUT_TOP_K_SCORES: scores,
            contract.OUTPUT_TOP_K_CLASS_IDS: tf.cast(class_ids, tf.int64),
            contract.OUTPUT_VALID: valid,
        }

    def _serve_image_bytes(self, image_bytes: tf.Tensor) -> dict:
        images, valid = image_ops.decode_raw_batch(
            image_bytes, self._image_size, self._resize_mode, self._input_size, self._max_pixels
        )
        return self._outputs(images, valid)

    def _serve_images(self, images: tf.Tensor) -> dict:
        valid = tf.ones([tf.shape(images)[0]], tf.bool)
        return self._outputs(tf.cast(images, tf.float32), valid)


def next_version(model_base_path: str) -> int:
    """One more than the highest integer version directory; 1 for a new model."""
    if not tf.io.gfile.isdir(model_base_path):
        return 1
    versions = [
        int(name.strip("/"))
        for name in tf.io.gfile.listdir(model_base_path)
        if name.strip("/").isdigit()
    ]
    return max(versions, default=0) + 1


def export_saved_model(module: ServingModule, model_base_path: str) -> str:
    """Writes the SavedModel to MODEL_BASE_PATH/<next version>/ and returns that path."""
    version_dir = tf.io.gfile.join(model_base_path, str(next_version(model_base_path)))
    tf.saved_model.save(
        module,
        version_dir,
        signatures={
            contract.SERVING_SIGNATURE: module.serve_image_bytes,
            contract.PIXELS_SIGNATURE: module.serve_images,
        },
    )
    return version_dir
