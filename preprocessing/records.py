"""The stored record: a tf.train.Example with the contract's features, in TFRecord framing."""

import struct
from collections.abc import Iterator
from typing import BinaryIO

import google_crc32c
import tensorflow as tf
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

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


def read_frames(file: BinaryIO, limit: int) -> Iterator[bytes]:
    """The first `limit` records of a TFRecord file, their CRCs checked.

    Read through a Beam FileSystems handle, not tf.data: TensorFlow's own gs:// file system
    ignores STORAGE_EMULATOR_HOST, and the pipeline takes one path idiom (Beam's) for local
    and gs:// alike; Beam has no public reader of single TFRecord files.
    """
    for _ in range(limit):
        header = file.read(12)
        if len(header) < 12:
            return
        length_bytes, length_crc = header[:8], struct.unpack("<I", header[8:])[0]
        if masked_crc32c(length_bytes) != length_crc:
            raise ValueError("TFRecord length checksum does not match")
        (length,) = struct.unpack("<Q", length_bytes)
        record, (data_crc,) = file.read(length), struct.unpack("<I", file.read(4))
        if masked_crc32c(record) != data_crc:
            raise ValueError("TFRecord data checksum does not match")
        yield record


def class_samples(shards: list[str], per_class: int, max_records: int) -> dict[str, list[bytes]]:
    """class name -> the stored JPEGs of its first `per_class` records in `shards`."""
    samples: dict[str, list[bytes]] = {}
    read = 0
    for shard in shards:
        with FileSystems.open(shard, compression_type=CompressionTypes.UNCOMPRESSED) as file:
            for record in read_frames(file, max_records - read):
                read += 1
                features = tf.train.Example.FromString(record).features.feature
                label = features[contract.FEATURE_LABEL_TEXT].bytes_list.value[0].decode()
                kept = samples.setdefault(label, [])
                if len(kept) < per_class:
                    kept.append(features[contract.FEATURE_ENCODED].bytes_list.value[0])
        if read >= max_records:
            break
    return samples
