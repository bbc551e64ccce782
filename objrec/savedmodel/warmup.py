"""TF Serving warmup records: `assets.extra/tf_serving_warmup_requests` in a SavedModel version.

TF Serving replays these PredictionLogs right after loading a version and before marking it
AVAILABLE, so the first user request doesn't pay for graph initialisation. The trainer writes
them at export (`write_warmup_file`); the development server replays them like TF Serving does.
"""

from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from objrec import contract
from objrec.savedmodel import tensors

# TF Serving refuses a warmup file with more records (saved_model_warmup_util.cc).
MAX_WARMUP_RECORDS = 1000


def warmup_file_path(export_dir: str) -> str:
    """`export_dir/assets.extra/tf_serving_warmup_requests`."""
    return tf.io.gfile.join(export_dir, contract.ASSETS_EXTRA_DIR, contract.WARMUP_FILE)


def predict_log(
    images: Sequence[bytes],
    model_name: str = contract.DEFAULT_MODEL_NAME,
    signature_name: str = contract.SERVING_SIGNATURE,
) -> prediction_log_pb2.PredictionLog:
    """One warmup record: a Predict request for encoded `images`, as a client would send it."""
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
    )
    request.inputs[contract.INPUT_IMAGE_BYTES].CopyFrom(
        tensors.to_tensor_proto(np.array(list(images), dtype=object))
    )
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )


def write_warmup_file(export_dir: str, logs: Sequence[prediction_log_pb2.PredictionLog]) -> str:
    """Writes `logs` as the version's warmup file; returns its path.

    Raises:
        ValueError: more records than TF Serving accepts.
    """
    if len(logs) > MAX_WARMUP_RECORDS:
        raise ValueError(
            f"{len(logs)} warmup records: TF Serving accepts at most {MAX_WARMUP_RECORDS}"
        )
    path = warmup_file_path(export_dir)
    tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def read_warmup_file(export_dir: str) -> Iterator[prediction_log_pb2.PredictionLog]:
    """The version's warmup records, none if it has no warmup file.

    Raises:
        ValueError: the file holds more records than TF Serving accepts.
    """
    path = warmup_file_path(export_dir)
    if not tf.io.gfile.exists(path):
        return
    for count, record in enumerate(tf.data.TFRecordDataset(path), start=1):
        if count > MAX_WARMUP_RECORDS:
            raise ValueError(
                f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
            )
        yield prediction_log_pb2.PredictionLog.FromString(record.numpy())
