"""Errors with a canonical status code, as TF Serving returns them over gRPC and REST."""

import grpc
import tensorflow as tf

# TF Serving cuts error messages at 1024 characters (model_servers/grpc_status_util.cc).
MAX_MESSAGE_CHARS = 1024

# gRPC status code → HTTP status of TF Serving's REST API (model_servers/http_server.cc);
# UNKNOWN, INTERNAL and DATA_LOSS fall through to 500.
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# TensorFlow's error codes are the canonical codes gRPC uses: same numbers, same names.
_GRPC_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """A request the server refuses, with the status code TF Serving would give it."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = truncate(message)

    @property
    def http_status(self) -> int:
        """The HTTP status TF Serving's REST API answers with for this code."""
        return _HTTP_STATUS.get(self.code, 500)


def truncate(message: str) -> str:
    """`message`, cut to TF Serving's 1024-character limit."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[:MAX_MESSAGE_CHARS] + "...TRUNCATED"


def from_op_error(error: tf.errors.OpError) -> ServingError:
    """The ServingError for a TensorFlow runtime error, keeping its code."""
    code = _GRPC_CODE_BY_NUMBER.get(error.error_code, grpc.StatusCode.UNKNOWN)
    return ServingError(code, error.message)


def invalid_argument(message: str) -> ServingError:
    """INVALID_ARGUMENT: the request itself is wrong."""
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    """NOT_FOUND: no such model or version is being served."""
    return ServingError(grpc.StatusCode.NOT_FOUND, message)
