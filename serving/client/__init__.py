"""The client of a served objrec model: library (`library`), command line (`cli`,
`objrec-predict`), folder evaluation and what it prints.

    from serving.client import PredictionClient
"""

from serving.client.library import PredictionClient
from serving.values import ModelMetadata, Prediction, VersionStatus

__all__ = ["ModelMetadata", "Prediction", "PredictionClient", "VersionStatus"]
