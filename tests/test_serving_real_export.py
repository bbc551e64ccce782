"""The trainer's real export, served by the local server: loads the TF Serving way, same answers."""

import pathlib

import numpy as np
import pytest
import tensorflow as tf

from objrec import contract
from serving.client import PredictionClient
from tests import dataset_fixtures, serving_fixtures


@pytest.mark.slow
def test_real_export_is_served_like_the_saved_model_answers(trained_job):
    job_dir = pathlib.Path(trained_job["job_dir"])
    model_base_path = job_dir / contract.EXPORT_DIR / contract.DEFAULT_MODEL_NAME
    (version_dir,) = sorted(model_base_path.iterdir())
    rng = np.random.default_rng(0)
    images = [
        dataset_fixtures.jpeg_bytes(dataset_fixtures.class_image(label, 48, rng))
        for label in range(3)
    ]
    images.insert(1, b"\xff\xd8\xff" + bytes(20))  # a truncated JPEG: valid False, batch fine
    signature = tf.saved_model.load(str(version_dir)).signatures[contract.SERVING_SIGNATURE]
    expected = signature(image_bytes=tf.constant(images))

    with (
        serving_fixtures.running_server(model_base_path) as server,
        PredictionClient(f"127.0.0.1:{server.port}", timeout=60) as client,
    ):
        predictions = client.predict(images)
        signatures = client.model_metadata().signature_defs

    assert [p.valid for p in predictions] == expected[contract.OUTPUT_VALID].numpy().tolist()
    assert [p.valid for p in predictions] == [True, False, True, True]
    for prediction, probabilities in zip(
        predictions, expected[contract.OUTPUT_PROBABILITIES].numpy(), strict=True
    ):
        if prediction.valid:
            assert prediction.score == pytest.approx(probabilities.max(), abs=1e-6)
    for name in (contract.SERVING_SIGNATURE, contract.PIXELS_SIGNATURE):
        assert contract.OUTPUT_VALID in signatures[name].outputs
