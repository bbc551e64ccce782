"""The stored record: a tf.train.Example with the contract's features, in TFRecord framing."""

import struct

import google_crc32c
import tensorflow as tf

from objrec import contract

# TFRecord masks every CRC so that a CRC of data that itself contains CRCs stays well mixed.
_CRC_MASK_DELTA = 0xA282EAD8


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64_feature(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def build_example(
    *,
    jpeg: bytes,
    height: int,
    width: int,
    label: int,
    label_text: str,
    source: str,
    sha256: str,
) -> bytes:
    """The serialized tf.train.Example of one stored image, exactly the contract's features."""
    feature = {
        contract.FEATURE_ENCODED: _bytes_feature(jpeg),
        contract.FEATURE_FORMAT: _bytes_feature(contract.IMAGE_FORMAT.encode()),
        contract.FEATURE_HEIGHT: _int64_feature(height),
        contract.FEATURE_WIDTH: _int64_feature(width),
        contract.FEATURE_LABEL: _int64_feature(label),
        contract.FEATURE_LABEL_TEXT: _bytes_feature(label_text.encode()),
        contract.FEATURE_SOURCE: _bytes_feature(source.encode()),
        contract.FEATURE_SHA256: _bytes_feature(sha256.encode()),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    # Deterministic: the same Example always serializes to the same bytes (stable shards).
    return example.SerializeToString(deterministic=True)


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of `data`."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def tfrecord_frame(record: bytes) -> bytes:
    """One record in TFRecord framing: length, CRC of length, data, CRC of data."""
    length = struct.pack("<Q", len(record))
    return b"".join(
        [
            length,
            struct.pack("<I", masked_crc32c(length)),
            record,
            struct.pack("<I", masked_crc32c(record)),
        ]
    )
