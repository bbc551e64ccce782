"""The client of a served objrec model: library (`library`), command line (`cli`,
`objrec-predict`), folder evaluation and what it prints.

    from serving.client import PredictionClient
"""

import importlib

# Loaded on first use (PEP 562), so that `objrec-predict --help`, which imports this package,
# does not wait for TensorFlow behind the gRPC client and the TF Serving protos.
_EXPORTS = {
    "PredictionClient": "serving.client.library",
    "Prediction": "serving.values",
    "VersionStatus": "serving.values",
    "ModelMetadata": "serving.values",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
