"""TF Serving's model APIs answered from a ServerCore, shared by the gRPC and REST servers."""

from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    status_pb2,
)

from objrec import contract
from serving.dev_server import status
from serving.dev_server.model_manager import VersionState
from serving.dev_server.server_core import ServerCore

SIGNATURE_DEF_FIELD = "signature_def"
_UNKNOWN_ERROR_CODE = 2  # tensorflow.error.Code.UNKNOWN, for a version that failed to load


def model_metadata(
    core: ServerCore, request: get_model_metadata_pb2.GetModelMetadataRequest
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """The served version's SignatureDefMap packed into Any, as TF Serving answers it."""
    if not request.HasField("model_spec"):
        raise status.invalid_argument("Missing ModelSpec")
    if not request.metadata_field:
        raise status.invalid_argument(
            "GetModelMetadataRequest must specify at least one metadata_field"
        )
    for field in request.metadata_field:
        if field != SIGNATURE_DEF_FIELD:
            raise status.invalid_argument(f"Metadata field {field} is not supported")
    servable = core.servable(request.model_spec)
    signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in servable.signature_defs.items():
        signature_def_map.signature_def[key].CopyFrom(signature)
    response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=servable.model_spec())
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_def_map)
    return response


def model_status(
    core: ServerCore, request: get_model_status_pb2.GetModelStatusRequest
) -> get_model_status_pb2.GetModelStatusResponse:
    """Every version's state, or the pinned version's, as TF Serving's GetModelStatus."""
    if not request.HasField("model_spec"):
        raise status.invalid_argument("Missing ModelSpec")
    spec = request.model_spec
    # A version label is ignored here, as in TF Serving's GetModelStatusImpl: all versions.
    version = spec.version.value if spec.HasField("version") else None
    states = core.version_states(spec.name, version)
    return get_model_status_pb2.GetModelStatusResponse(
        model_version_status=[version_status(state) for state in states]
    )


def version_status(state: VersionState) -> get_model_status_pb2.ModelVersionStatus:
    """One ModelVersionStatus: state enum plus an OK or error StatusProto."""
    error_code = _UNKNOWN_ERROR_CODE if state.error_message else 0
    return get_model_status_pb2.ModelVersionStatus(
        version=state.version,
        state=get_model_status_pb2.ModelVersionStatus.State.Value(state.state),
        status=status_pb2.StatusProto(error_code=error_code, error_message=state.error_message),
    )


# What TF Serving's classifier.cc, regressor.cc and multi_inference.cc answer for a model
# whose signatures are all Predict signatures, as objrec's are.
_METHOD_NAMES = {"classify": "tensorflow/serving/classify", "regress": "tensorflow/serving/regress"}
_SIGNATURE_KINDS = {"classify": "classification", "regress": "regression"}


def refuse_for_predict_signature(
    core: ServerCore, model_spec: model_pb2.ModelSpec, api: str
) -> None:
    """Classify, Regress and MultiInference on a predict-only model: TF Serving's error.

    Raises:
        status.ServingError: NOT_FOUND for an unknown model or version, else INVALID_ARGUMENT.
    """
    served = core.servable(model_spec)
    name = model_spec.signature_name or contract.SERVING_SIGNATURE
    signature = served.signature_defs.get(name)
    if signature is None:
        raise status.invalid_argument(f"No signature was found with the name: {name}")
    if api == "multi_inference":
        raise status.invalid_argument(f"Unsupported signature method_name: {signature.method_name}")
    raise status.invalid_argument(
        f"Expected {_SIGNATURE_KINDS[api]} signature method_name to be {_METHOD_NAMES[api]}. "
        f"Was: {signature.method_name}"
    )
