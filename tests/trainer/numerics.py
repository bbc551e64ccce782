"""Comparing a training step's results computed two ways."""

import numpy as np


def assert_each_close_to_its_scale(found: dict, expected: dict) -> None:
    """Same keys, and each array within 1e-4 of its own largest entry, except noise a
    millionth of the largest entry of all: the biases of the convolutions BatchNorm follows,
    whose gradient is zero but for rounding."""
    assert found.keys() == expected.keys()
    largest = max(np.abs(array).max() for array in expected.values())
    for name, want in expected.items():
        atol = 1e-4 * np.abs(want).max() + 1e-6 * largest
        np.testing.assert_allclose(found[name], want, rtol=0, atol=atol, err_msg=name)
