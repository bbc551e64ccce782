"""objrec.savedmodel.signatures: save, load, call each signature, compare with the model in
memory (one round trip per input type)."""

import numpy as np
import pytest
import tensorflow as tf

from objrec import contract
from objrec.savedmodel import signatures
from tests import serving_fixtures

LABELS = ("ant", "bee", "cow", "dog", "eel", "fox")
SIZE = 8


def serving_functions(seed: int, flip_average: bool = False) -> signatures.ServingFunctions:
    """The serving functions of a toy classifier of LABELS at SIZE pixels."""
    model = serving_fixtures.toy_classifier(LABELS, SIZE, seed=seed)
    return signatures.ServingFunctions(
        model, LABELS, image_size=SIZE, resize_mode="shorter_side", input_size=SIZE,
        max_pixels=10_000, flip_average=flip_average,
    )  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(ServingFunctions in memory, the same loaded back from its SavedModel)."""
    functions = serving_functions(seed=3)
    export_dir = str(tmp_path_factory.mktemp("export") / "1")
    signatures.write_saved_model(functions, export_dir)
    return functions, tf.saved_model.load(export_dir)


def assert_same_outputs(loaded: dict, in_memory: dict) -> None:
    assert sorted(loaded) == sorted(in_memory)
    for name, value in in_memory.items():
        if value.dtype == tf.string or value.dtype == tf.bool:
            np.testing.assert_array_equal(loaded[name].numpy(), value.numpy())
        else:
            np.testing.assert_allclose(loaded[name].numpy(), value.numpy(), rtol=1e-6, atol=1e-7)


def test_the_pixels_signature_answers_as_the_model_in_memory(exported):
    functions, loaded = exported
    pixels = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    served = loaded.signatures[contract.PIXELS_SIGNATURE](images=tf.constant(pixels))
    assert_same_outputs(served, functions.from_images(tf.constant(pixels)))
    expected = functions.model(pixels.astype(np.float32), training=False).numpy()
    np.testing.assert_allclose(served[contract.OUTPUT_PROBABILITIES], expected, rtol=1e-6)
    top = np.argsort(-expected, axis=1)[:, : contract.top_k_for(len(LABELS))]
    np.testing.assert_array_equal(served[contract.OUTPUT_TOP_K_CLASS_IDS], top)


def test_the_bytes_signature_answers_as_the_model_in_memory(exported):
    functions, loaded = exported
    files = [
        serving_fixtures.encode_png(serving_fixtures.random_pixels(1, 12, 10)),
        b"not an image",
        serving_fixtures.encode_jpeg(serving_fixtures.random_pixels(2, 30, 17)),
        serving_fixtures.encode_png(serving_fixtures.random_pixels(3, 200, 100)),  # > max_pixels
    ]
    served = loaded.signatures[contract.SERVING_SIGNATURE](image_bytes=tf.constant(files))
    assert_same_outputs(served, functions.from_image_bytes(tf.constant(files)))
    assert served[contract.OUTPUT_VALID].numpy().tolist() == [True, False, True, False]
    assert not served[contract.OUTPUT_PROBABILITIES].numpy()[[1, 3]].any()


def test_the_signatures_have_the_contract_names_dtypes_and_shapes(exported):
    _, loaded = exported
    k = contract.top_k_for(len(LABELS))
    expected_inputs = {
        contract.SERVING_SIGNATURE: {contract.INPUT_IMAGE_BYTES: (tf.string, [None])},
        contract.PIXELS_SIGNATURE: {contract.INPUT_IMAGES: (tf.uint8, [None, SIZE, SIZE, 3])},
    }
    for name, inputs in expected_inputs.items():
        function = loaded.signatures[name]
        specs = function.structured_input_signature[1]
        assert {key: (spec.dtype, spec.shape.as_list()) for key, spec in specs.items()} == inputs
        outputs = {key: (spec.dtype, spec.shape.as_list())
                   for key, spec in function.structured_outputs.items()}  # fmt: skip
        assert outputs == {
            contract.OUTPUT_PROBABILITIES: (tf.float32, [None, len(LABELS)]),
            contract.OUTPUT_TOP_K_CLASSES: (tf.string, [None, k]),
            contract.OUTPUT_TOP_K_SCORES: (tf.float32, [None, k]),
            contract.OUTPUT_TOP_K_CLASS_IDS: (tf.int64, [None, k]),
            contract.OUTPUT_VALID: (tf.bool, [None]),
        }


def test_the_export_stores_each_weight_once(tmp_path):
    functions = serving_functions(seed=4)
    signatures.write_saved_model(functions, str(tmp_path))
    reader = tf.train.load_checkpoint(str(tmp_path / "variables" / "variables"))
    stored = sum(
        int(np.prod(shape))
        for name, shape in reader.get_variable_to_shape_map().items()
        if reader.get_variable_to_dtype_map()[name].is_floating
    )
    assert stored == functions.model.count_params()


def test_flip_average_answers_the_mean_over_each_image_and_its_mirror_image(tmp_path):
    functions = serving_functions(seed=5, flip_average=True)
    signatures.write_saved_model(functions, str(tmp_path))
    served = tf.saved_model.load(str(tmp_path)).signatures[contract.PIXELS_SIGNATURE]
    pixels = np.random.default_rng(1).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    mirrored = pixels[:, :, ::-1]
    answer = served(images=tf.constant(pixels))[contract.OUTPUT_PROBABILITIES].numpy()

    plain = functions.model(pixels.astype(np.float32), training=False).numpy()
    of_mirror = functions.model(mirrored.astype(np.float32), training=False).numpy()
    np.testing.assert_allclose(answer, (plain + of_mirror) / 2, rtol=1e-5, atol=1e-7)
    assert np.abs(answer - plain).max() > 1e-3  # the toy model is not mirror-symmetric
    # An image and its mirror image get the same answer; each row is still a distribution.
    answer_of_mirror = served(images=tf.constant(np.ascontiguousarray(mirrored)))
    np.testing.assert_allclose(
        answer_of_mirror[contract.OUTPUT_PROBABILITIES].numpy(), answer, rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(answer.sum(axis=1), 1.0, rtol=1e-5)
