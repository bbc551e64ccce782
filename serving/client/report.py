"""What objrec-predict prints: a table or JSON lines per image, and the model's status."""

import dataclasses
import json
from collections.abc import Sequence

from google.protobuf import json_format
from tensorflow.core.protobuf import meta_graph_pb2

from objrec.savedmodel import tensors
from serving.values import ModelMetadata, Prediction, VersionStatus

NOT_DECODABLE = "not a decodable image"
# Scores are float32 (about 7 significant digits); 0.678258 reads better than 0.6782584190368652.
SCORE_DIGITS = 6


@dataclasses.dataclass(frozen=True)
class Row:
    """One input file's outcome: a prediction, or the reason there is none."""

    path: str
    prediction: "Prediction | None"
    error: str | None = None

    @property
    def problem(self) -> str | None:
        """Why the file has no label: unreadable, too large, or not an image."""
        if self.error is not None:
            return self.error
        if self.prediction is None or not self.prediction.valid:
            return NOT_DECODABLE
        return None


class Formatter:
    """Formats rows as an aligned table or as JSON lines."""

    def __init__(self, as_json: bool, path_width: int):
        self.as_json = as_json
        self.path_width = max(path_width, len("path"))

    def header(self) -> str:
        """The table's header line (with newline); nothing for JSON lines."""
        if self.as_json:
            return ""
        return f"{'path':<{self.path_width}}  {'label':<16} {'score':>6}  top-k\n"

    def row(self, row: Row) -> str:
        """One line for one file."""
        return json.dumps(json_row(row)) if self.as_json else self.table_row(row)

    def table_row(self, row: Row) -> str:
        """`path  label  score  label score, label score, ...` or the problem."""
        path = f"{row.path:<{self.path_width}}"
        if row.problem is not None:
            return f"{path}  {'-':<16} {'-':>6}  {row.problem}"
        prediction = row.prediction
        ranked = ", ".join(f"{label} {score:.3f}" for label, score in prediction.top_k)
        return f"{path}  {prediction.label:<16} {prediction.score:>6.3f}  {ranked}"


def json_row(row: Row) -> dict:
    """The JSON object of one file: its prediction, or `valid: false` and the error."""
    if row.problem is not None:
        return {"path": row.path, "valid": False, "error": row.problem}
    prediction = row.prediction
    return {
        "path": row.path,
        "valid": True,
        "label": prediction.label,
        "score": round(prediction.score, SCORE_DIGITS),
        "class_id": prediction.class_id,
        "top_k": [
            {"label": label, "score": round(score, SCORE_DIGITS)}
            for label, score in prediction.top_k
        ],
    }


def status_text(
    model_name: str,
    versions: Sequence[VersionStatus],
    metadata: ModelMetadata,
    as_json: bool,
) -> str:
    """Version states and signatures, as text lines or one JSON object (with newline)."""
    if as_json:
        document = {
            "model_name": model_name,
            "versions": [dataclasses.asdict(version) for version in versions],
            "served_version": metadata.version,
            "signature_defs": {
                key: json_format.MessageToDict(signature, preserving_proto_field_name=True)
                for key, signature in metadata.signature_defs.items()
            },
        }
        return json.dumps(document) + "\n"
    lines = [f"model {model_name}"]
    for version in versions:
        error = f" ({version.error_message})" if version.error_message else ""
        lines.append(f"  version {version.version}: {version.state}{error}")
    lines.append(f"signatures of version {metadata.version}:")
    for key, signature in sorted(metadata.signature_defs.items()):
        if key.startswith("__"):  # __saved_model_init_op: graph plumbing, not an API
            continue
        lines.append(f"  {key}")
        lines += [
            f"    input  {tensor_text(name, info)}" for name, info in signature.inputs.items()
        ]
        lines += [
            f"    output {tensor_text(name, info)}" for name, info in signature.outputs.items()
        ]
    return "\n".join(lines) + "\n"


def tensor_text(name: str, info: meta_graph_pb2.TensorInfo) -> str:
    """`image_bytes DT_STRING [-1]`."""
    dims = [dim.size for dim in info.tensor_shape.dim]
    shape = "unknown" if info.tensor_shape.unknown_rank else str(dims)
    return f"{name} {tensors.dtype_name(info.dtype)} {shape}"
