"""Splits and shards as pure functions of the content hash (docs/contracts.md: Shards, Splits).

Split: the first 64 bits of the SHA-256 as a fraction in [0, 1), against the cumulative split
fractions in contract.SPLITS order. Adding images never moves an existing one.

Shard: the hash space is cut into 16^5 = 1,048,576 buckets (the first five hex digits).
Counting records per bucket gives every record's rank range, so bucket b of a split with n
records goes to shard floor(records_before_b * N / n): contiguous hash ranges of about n / N
records each. Shard indices that no bucket reached are dropped (so no file is empty), which
can only happen when one bucket holds several records, i.e. practically only when n is tiny.
"""

import bisect
import math
from collections.abc import Iterable, Mapping

from objrec import contract
from preprocessing.config import SplitFractions

BUCKET_HEX_DIGITS = 5
# Automatic sharding aims at files of ~150 MB: large enough for efficient sequential reads
# from GCS, small enough that 1,000 of them (a 150 GB dataset) still shuffle well.
TARGET_SHARD_BYTES = 150_000_000
# So that up to 16 training workers can each read their own files (docs/contracts.md).
MIN_TRAIN_SHARDS = 16


def hash_fraction(sha256_hex: str) -> float:
    """The first 64 bits of the hash as a fraction in [0, 1)."""
    return int(sha256_hex[:16], 16) / 2**64


def split_for_hash(sha256_hex: str, fractions: SplitFractions) -> str:
    """The split whose cumulative fraction range holds `hash_fraction(sha256_hex)`."""
    position = hash_fraction(sha256_hex)
    cumulative = 0.0
    for name, fraction in fractions:
        cumulative += fraction
        if position < cumulative:
            return name
    # Fractions may add up to 1 - 1e-7 (float rounding): the rest goes to the last used split.
    return [name for name, fraction in fractions if fraction > 0][-1]


def bucket_of(sha256_hex: str) -> int:
    """The hash bucket, 0 to 16^5 - 1: the first five hex digits."""
    return int(sha256_hex[:BUCKET_HEX_DIGITS], 16)


def num_shards_for(split: str, num_examples: int, num_bytes: int, requested: int) -> int:
    """Shard count to aim at: `requested`, or ~150 MB each when 0; train at least min(16, n)."""
    wanted = requested if requested > 0 else math.ceil(num_bytes / TARGET_SHARD_BYTES)
    if split == contract.TRAIN:
        wanted = max(wanted, MIN_TRAIN_SHARDS)
    return max(1, min(wanted, num_examples))


def plan_shards(bucket_counts: Mapping[int, int], num_shards: int) -> tuple[int, ...]:
    """The first bucket of each shard, for a split with these record counts per bucket.

    Every returned shard holds at least one record; there are `num_shards` of them unless
    several records share buckets near a boundary.
    """
    total = sum(bucket_counts.values())
    starts: list[int] = []
    records_before = 0
    previous_shard = -1
    for bucket in sorted(bucket_counts):
        shard = records_before * num_shards // total
        if shard != previous_shard:
            starts.append(bucket)
            previous_shard = shard
        records_before += bucket_counts[bucket]
    return tuple(starts)


def shard_of(bucket: int, shard_starts: tuple[int, ...]) -> int:
    """The shard whose bucket range holds `bucket`."""
    return bisect.bisect_right(shard_starts, bucket) - 1


def plan_all_splits(
    bucket_stats: Iterable[tuple[tuple[str, int], tuple[int, int]]], requested: int
) -> dict[str, tuple[int, ...]]:
    """Shard starts per split, from ((split, bucket), (records, bytes)) pairs."""
    counts: dict[str, dict[int, int]] = {}
    sizes: dict[str, int] = {}
    for (split, bucket), (records, num_bytes) in bucket_stats:
        counts.setdefault(split, {})[bucket] = records
        sizes[split] = sizes.get(split, 0) + num_bytes
    return {
        split: plan_shards(
            per_bucket,
            num_shards_for(split, sum(per_bucket.values()), sizes[split], requested),
        )
        for split, per_bucket in counts.items()
    }
