"""RunInference's model handler for an objrec export: the SavedModel is loaded once per worker
process and called through its `serving_default` signature on the files' raw bytes, the graph
TF Serving runs (decode, pixel limit, resize, crop, model, top k), so batch and online
predictions cannot differ."""

from collections.abc import Iterable, Sequence
from typing import Any

import tensorflow as tf
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from objrec import contract
from objrec.savedmodel import versions

# What the job reads of each prediction (the probabilities of every class stay in the graph).
OUTPUTS = (contract.OUTPUT_VALID, contract.OUTPUT_TOP_K_CLASSES, contract.OUTPUT_TOP_K_SCORES)


class ModelDirError(ValueError):
    """--model_dir holds no complete SavedModel version."""


def _matches(patterns: list[str]) -> list[str]:
    try:
        results = FileSystems.match(patterns)
    except BeamIOError as error:
        raise ModelDirError(f"cannot list {patterns[0]}: {error}") from None
    return [found.path for result in results for found in result.metadata_list]


def version_dir(model_dir: str) -> str:
    """`model_dir` itself if it is a version directory, else its newest complete version
    (an integer directory holding saved_model.pb, as TF Serving chooses). Listed through
    Beam's FileSystems, as the rest of the job's paths.

    Raises:
        ModelDirError: naming the directory and what to give instead.
    """
    model_dir = model_dir.rstrip("/")
    graphs = versions.SAVED_MODEL_FILES
    if _matches([FileSystems.join(model_dir, name) for name in graphs]):
        return model_dir
    numbers = set()
    for path in _matches([FileSystems.join(model_dir, "*", name) for name in graphs]):
        name = FileSystems.split(FileSystems.split(path)[0])[1]
        if name.isdigit():
            numbers.add(int(name))
    if not numbers:
        raise ModelDirError(
            f"--model_dir {model_dir}: no complete SavedModel version there (an integer "
            "directory with saved_model.pb); give JOB_DIR/export/<model> of a finished job, "
            "or one of its version directories"
        )
    return FileSystems.join(model_dir, str(max(numbers)))


class SavedModelHandler(ModelHandler[bytes, PredictionResult, Any]):
    """Raw image bytes -> PredictionResult whose inference is {output name: numpy value}."""

    def __init__(self, saved_model_dir: str, max_batch_size: int):
        super().__init__()
        self._saved_model_dir = saved_model_dir
        self._max_batch_size = max_batch_size

    def load_model(self) -> Any:
        return tf.saved_model.load(self._saved_model_dir)

    def run_inference(
        self, batch: Sequence[bytes], model: Any, inference_args: dict | None = None
    ) -> Iterable[PredictionResult]:
        serve = model.signatures[contract.SERVING_SIGNATURE]
        outputs = serve(**{contract.INPUT_IMAGE_BYTES: tf.constant(list(batch), tf.string)})
        arrays = {name: outputs[name].numpy() for name in OUTPUTS}
        return [
            PredictionResult(data, {name: values[index] for name, values in arrays.items()})
            for index, data in enumerate(batch)
        ]

    def get_num_bytes(self, batch: Sequence[bytes]) -> int:
        return sum(len(data) for data in batch)

    def batch_elements_kwargs(self) -> dict:
        # Full batches from the start: BatchElements' default grows them from 1 while it
        # times the calls, which for a few thousand images is most of the job.
        return {"min_batch_size": self._max_batch_size, "max_batch_size": self._max_batch_size}
