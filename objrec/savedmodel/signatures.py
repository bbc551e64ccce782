"""The exported signatures: the model plus raw-bytes decoding, labels and top-k.

`serving_default` takes encoded image files (`image_bytes`, DT_STRING [N]); `images` takes
pixels already at the model input (uint8 [N, S, S, 3]). Both answer `probabilities`,
`top_k_classes`, `top_k_scores`, `top_k_class_ids` and `valid` (docs/contracts.md, "SavedModel
signatures"). `write_saved_model` writes them in the form TF Serving loads.

`predict_probabilities` is the model's answer for a batch, which the trainer's evaluation
calls too: with `flip_average` it is the mean of the answers for each image and its mirror
image (test-time augmentation by the horizontal flip training uses), one forward pass of
the two stacked.
"""

import keras
import tensorflow as tf

from objrec import contract
from objrec.savedmodel import decode


def predict_probabilities(model: keras.Model, images: tf.Tensor, flip_average: bool) -> tf.Tensor:
    """Class probabilities [N, classes] of model-input images [N, S, S, 3] (float32)."""
    if not flip_average:
        return model(images, training=False)
    count = tf.shape(images)[0]
    both = model(tf.concat([images, tf.reverse(images, axis=[2])], axis=0), training=False)
    return (both[:count] + both[count:]) / 2.0


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
        jpeg_quality: int | None = None,
        flip_average: bool = False,
    ):
        self.model = model
        self.flip_average = flip_average
        self.jpeg_quality = jpeg_quality
        self.labels = tuple(labels)
        self.top_k = contract.top_k_for(len(labels))
        self.image_size = image_size
        self.resize_mode = resize_mode
        self.input_size = input_size
        self.max_pixels = max_pixels

    def _outputs(self, images: tf.Tensor, valid: tf.Tensor) -> dict:
        probabilities = predict_probabilities(self.model, images, self.flip_average)
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
        images, valid = decode.decode_raw_batch(
            image_bytes,
            self.image_size,
            self.resize_mode,
            self.input_size,
            self.max_pixels,
            self.jpeg_quality,
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


def write_saved_model(functions: ServingFunctions, export_dir: str) -> None:
    """Writes the SavedModel with both signatures to `export_dir`.

    Keras's ExportArchive, not `tf.saved_model.save`: only its variable tracking gives a
    SavedModel whose graph TF Serving (a TF1-style session over the SignatureDefs) can run.
    `add_endpoint` tracks the variables the signatures use. The model itself is not tracked
    (`archive.track`): that would store every weight a second time, once per Keras variable
    wrapper, doubling the files (ResNet50: 192 MB against 96) and every load's restore time.
    """
    archive = keras.export.ExportArchive()
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
    archive.write_out(export_dir, verbose=False)
