"""NumPy ↔ TensorProto as TF Serving writes tensors: typed value fields, exact round trips."""

import numpy as np
import pytest
import tensorflow as tf

from objrec.savedmodel import tensors


@pytest.mark.parametrize(
    ("values", "field"),
    [
        (np.array([[0.5, -1.25]], np.float32), "float_val"),
        (np.array([1e300], np.float64), "double_val"),
        (np.array([[1, 255]], np.uint8), "int_val"),
        (np.array([-7, 3], np.int32), "int_val"),
        (np.array([[2**40, -1]], np.int64), "int64_val"),
        (np.array([True, False]), "bool_val"),
        (np.array([b"\xff\xd8\xff", b""], dtype=object), "string_val"),
        (np.array([["cat", "dog"]]), "string_val"),
    ],
)
def test_round_trip_through_typed_fields(values, field):
    proto = tensors.to_tensor_proto(values)

    assert len(getattr(proto, field)) == values.size
    assert not proto.tensor_content
    assert tensors.shape_of(proto) == values.shape
    round_tripped = tensors.to_ndarray(proto)
    if values.dtype.kind == "U":
        values = np.char.encode(values, "utf-8").astype(object)
    np.testing.assert_array_equal(round_tripped, values)


def test_dtype_without_a_typed_field_falls_back_to_tensorflow():
    values = np.array([1.5, 2.0], np.float16)
    proto = tensors.to_tensor_proto(values)
    assert proto.dtype == tf.float16.as_datatype_enum
    np.testing.assert_array_equal(tensors.to_ndarray(proto), values)


def test_reads_tensor_content_as_other_clients_send_it():
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(tensors.to_ndarray(tf.make_tensor_proto(values)), values)


@pytest.mark.parametrize(
    "values",
    [np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3), np.array([[0.5, -1.25]], np.float32)],
)
def test_compact_protos_pack_numbers_and_round_trip(values):
    proto = tensors.to_compact_tensor_proto(values)

    assert len(proto.tensor_content) == values.nbytes
    assert tensors.shape_of(proto) == values.shape
    np.testing.assert_array_equal(tensors.to_ndarray(proto), values)


def test_compact_protos_keep_strings_in_string_val():
    proto = tensors.to_compact_tensor_proto(np.array([b"\xff\xd8", b""], dtype=object))
    assert list(proto.string_val) == [b"\xff\xd8", b""]
