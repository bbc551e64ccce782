"""SavedModel export in TF Serving's layout, with the signatures DESIGN.md specifies.

Re-export a job's trained weights without training:

    python -m trainer.export --data_dir DATASET_DIR --job_dir JOB_DIR
"""

import keras
import tensorflow as tf

from objrec import contract
from trainer import image_ops


class ServingFunctions:
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
        self.model = model
        self.labels = tuple(labels)
        self.top_k = contract.top_k_for(len(labels))
        self.image_size = image_size
        self.resize_mode = resize_mode
        self.input_size = input_size
        self.max_pixels = max_pixels

    def _outputs(self, images: tf.Tensor, valid: tf.Tensor) -> dict:
        probabilities = self.model(images, training=False)
        probabilities = tf.where(valid[:, tf.newaxis], probabilities, 0.0)
        scores, class_ids = tf.math.top_k(probabilities, k=self.top_k)
        return {
            contract.OUTPUT_PROBABILITIES: probabilities,
            contract.OUTPUT_TOP_K_CLASSES: tf.gather(tf.constant(self.labels), class_ids),
            contract.OUTPUT_TOP_K_SCORES: scores,
            contract.OUTPUT_TOP_K_CLASS_IDS: tf.cast(class_ids, tf.int64),
            contract.OUTPUT_VALID: valid,
        }

    def from_image_bytes(self, image_bytes: tf.Tensor) -> dict:
        """`serving_default`: encoded JPEG/PNG/GIF/BMP files of any size."""
        images, valid = image_ops.decode_raw_batch(
            image_bytes, self.image_size, self.resize_mode, self.input_size, self.max_pixels
        )
        return self._outputs(images, valid)

    def from_images(self, images: tf.Tensor) -> dict:
        """`images`: pixels already decoded, oriented and resized to the model input."""
        valid = tf.ones([tf.shape(images)[0]], tf.bool)
        return self._outputs(tf.cast(images, tf.float32), valid)

    def input_signatures(self) -> dict:
        size = self.input_size
        return {
            contract.SERVING_SIGNATURE: tf.TensorSpec(
                [None], tf.string, name=contract.INPUT_IMAGE_BYTES
            ),
            contract.PIXELS_SIGNATURE: tf.TensorSpec(
                [None, size, size, 3], tf.uint8, name=contract.INPUT_IMAGES
            ),
        }


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


def export_saved_model(functions: ServingFunctions, model_base_path: str) -> str:
    """Writes the SavedModel to MODEL_BASE_PATH/<next version>/ and returns that path.

    Keras's ExportArchive, not `tf.saved_model.save`: only its variable tracking gives a
    SavedModel whose graph TF Serving (a TF1-style session over the SignatureDefs) can run.
    """
    archive = keras.export.ExportArchive()
    archive.track(functions.model)
    signatures = functions.input_signatures()
    archive.add_endpoint(
        contract.SERVING_SIGNATURE,
        functions.from_image_bytes,
        input_signature=[signatures[contract.SERVING_SIGNATURE]],
    )
    archive.add_endpoint(
        contract.PIXELS_SIGNATURE,
        functions.from_images,
        input_signature=[signatures[contract.PIXELS_SIGNATURE]],
    )
    version_dir = tf.io.gfile.join(model_base_path, str(next_version(model_base_path)))
    archive.write_out(version_dir, verbose=False)
    return version_dir
