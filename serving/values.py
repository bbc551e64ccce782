"""The values the client returns and the server reports: one module both sides import."""

import dataclasses
from collections.abc import Mapping

from tensorflow.core.protobuf import meta_graph_pb2


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The model's answer for one image.

    Attributes:
        label: the most likely class; None when the image is not `valid`.
        score: its probability; 0.0 when not `valid`.
        top_k: (label, score) of the most likely classes, best first; empty when not `valid`.
        valid: False when the model could not decode the image.
        class_id: index of `label` in the model's labels; None when not `valid`.
    """

    label: str | None
    score: float
    top_k: tuple[tuple[str, float], ...]
    valid: bool
    class_id: int | None


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """One model version as GetModelStatus reports it (state: AVAILABLE, LOADING, END...)."""

    version: int
    state: str
    error_message: str = ""


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """The served version and its SignatureDefs, from GetModelMetadata."""

    model_name: str
    version: int
    signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]
