"""NumPy arrays ↔ TensorProto, the way TF Serving writes them on the wire."""

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

# The typed repeated field TF Serving fills for each dtype: its Predict answers with
# Tensor::AsProtoField, and clients written against it read e.g. `outputs[k].float_val`.
_VALUE_FIELDS = {
    tf.float32: "float_val",
    tf.float64: "double_val",
    tf.int8: "int_val",
    tf.int16: "int_val",
    tf.int32: "int_val",
    tf.uint8: "int_val",
    tf.uint16: "int_val",
    tf.int64: "int64_val",
    tf.uint32: "uint32_val",
    tf.uint64: "uint64_val",
    tf.bool: "bool_val",
}


def to_tensor_proto(values: np.ndarray) -> tensor_pb2.TensorProto:
    """A TensorProto with typed value fields (`float_val`, `string_val`, ...), not tensor_content.

    Strings (NumPy object, bytes or str arrays) become DT_STRING; a dtype without a typed
    field of its own falls back to `tf.make_tensor_proto`.
    """
    values = np.asarray(values)
    if values.dtype.kind in "OSU":
        proto = _empty_proto(types_pb2.DT_STRING, values.shape)
        proto.string_val.extend(_as_bytes(value) for value in values.flat)
        return proto
    dtype = tf.as_dtype(values.dtype)
    field = _VALUE_FIELDS.get(dtype)
    if field is None:
        return tf.make_tensor_proto(values)
    proto = _empty_proto(dtype.as_datatype_enum, values.shape)
    getattr(proto, field).extend(values.ravel().tolist())
    return proto


def to_compact_tensor_proto(values: np.ndarray) -> tensor_pb2.TensorProto:
    """A TensorProto to send: numbers packed in `tensor_content`, strings in `string_val`.

    What `tf.make_tensor_proto` writes and TF Serving's example clients send. A 224x224 uint8
    image parses back in 0.03 ms instead of 6 ms through `int_val`, and takes 1 byte per value.
    """
    values = np.asarray(values)
    if values.dtype.kind in "OSU":
        return to_tensor_proto(values)
    return tf.make_tensor_proto(values)


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """The NumPy array a TensorProto holds, in either encoding; strings come back as bytes."""
    return tf.make_ndarray(proto)


def shape_of(proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
    """The shape a TensorProto declares, without decoding its values."""
    return tuple(dim.size for dim in proto.tensor_shape.dim)


def dtype_name(dtype: int) -> str:
    """`DT_STRING` for types_pb2.DT_STRING: the spelling TF Serving's messages use."""
    try:
        return types_pb2.DataType.Name(dtype)
    except ValueError:  # an enum value no TensorFlow defines
        return f"DataType({dtype})"


# Typed fields holding the values of dtypes without one of their own in _VALUE_FIELDS.
_OTHER_VALUE_FIELDS = {
    tf.float16: "half_val",
    tf.bfloat16: "half_val",
    tf.complex64: "scomplex_val",
    tf.complex128: "dcomplex_val",
}
_VALUES_PER_ELEMENT = {"scomplex_val": 2, "dcomplex_val": 2}


def value_count(proto: tensor_pb2.TensorProto) -> int | None:
    """How many values a TensorProto holds, counted without decoding any; None for a dtype
    that TensorFlow does not define or that has no value field.

    TensorFlow fills a tensor whose proto holds fewer values than its shape by repeating the
    last one (or with zeros): a 37-byte proto can declare a shape of gigabytes.
    """
    if proto.dtype == types_pb2.DT_STRING:
        return len(proto.string_val)
    try:
        dtype = tf.dtypes.as_dtype(proto.dtype)
    except TypeError:
        return None
    if proto.tensor_content:
        return len(proto.tensor_content) // dtype.size
    field = _VALUE_FIELDS.get(dtype) or _OTHER_VALUE_FIELDS.get(dtype)
    if field is None:
        return None
    return len(getattr(proto, field)) // _VALUES_PER_ELEMENT.get(field, 1)


def _empty_proto(dtype: int, shape: tuple[int, ...]) -> tensor_pb2.TensorProto:
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape]
    return tensor_pb2.TensorProto(
        dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims)
    )


def _as_bytes(value: object) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)
