"""preprocessing.sample_data: Fashion-MNIST idx files to a class-folder tree."""

import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from preprocessing import sample_data
from preprocessing.errors import PreprocessError


def write_idx(directory, source: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Gzipped idx3 images and idx1 labels, the files the Debian package installs."""
    images_path, labels_path = sample_data.idx_paths(directory, source)
    header = struct.pack(">IIII", 0x00000803, *images.shape)
    images_path.write_bytes(gzip.compress(header + images.tobytes()))
    labels_path.write_bytes(
        gzip.compress(struct.pack(">II", 0x00000801, len(labels)) + labels.tobytes())
    )


@pytest.fixture
def idx_dir(tmp_path):
    """20 test-set images, labels 0..9 twice; image i is filled with the value i."""
    labels = np.array(list(range(10)) * 2, dtype=np.uint8)
    images = np.stack([np.full((28, 28), i, dtype=np.uint8) for i in range(20)])
    directory = tmp_path / "idx"
    directory.mkdir()
    write_idx(directory, "test", images, labels)
    return directory


def test_writes_the_first_images_of_each_class_after_the_offset(idx_dir, tmp_path):
    output = tmp_path / "images"
    counts = sample_data.write_sample_folder(
        str(output), per_class=1, source="test", offset=1, data_dir=str(idx_dir)
    )
    assert counts == dict.fromkeys(sample_data.CLASS_NAMES, 1)
    # Class 8 (Bag) is at indices 8 and 18; offset 1 skips the first.
    bag = Image.open(output / "Bag" / "test_18.png")
    assert (bag.mode, bag.size) == ("L", (28, 28))
    assert np.asarray(bag).max() == np.asarray(bag).min() == 18
    assert sorted(path.name for path in output.iterdir()) == sorted(sample_data.CLASS_NAMES)


def test_asking_for_more_than_there_is_returns_what_exists(idx_dir, tmp_path):
    counts = sample_data.write_sample_folder(
        str(tmp_path / "images"), per_class=5, source="test", data_dir=str(idx_dir)
    )
    assert set(counts.values()) == {2}


def test_rerun_leaves_identical_files_untouched(idx_dir, tmp_path):
    output = tmp_path / "images"
    sample_data.write_sample_folder(str(output), 2, "test", data_dir=str(idx_dir))
    before = {path: path.stat().st_mtime_ns for path in output.rglob("*.png")}
    tampered = output / "Trouser" / "test_1.png"
    tampered.write_bytes(b"not the original")
    sample_data.write_sample_folder(str(output), 2, "test", data_dir=str(idx_dir))
    after = {path: path.stat().st_mtime_ns for path in output.rglob("*.png")}
    assert len(after) == 20
    assert {path for path in after if after[path] != before[path]} == {tampered}
    assert Image.open(tampered).size == (28, 28)  # the changed file was rewritten


def test_parse_idx_checks_the_magic_number():
    with pytest.raises(ValueError, match="magic number 0x00000801, expected 0x00000803"):
        sample_data.parse_idx(struct.pack(">II", 0x00000801, 0), 0x00000803)


def test_missing_files_in_data_dir_are_named(tmp_path):
    with pytest.raises(PreprocessError, match="lacks train-images-idx3-ubyte.gz"):
        sample_data.load_fashion_mnist("train", data_dir=str(tmp_path))


def test_without_package_cache_or_internet_the_error_names_the_apt_package(tmp_path, monkeypatch):
    import keras

    def offline():
        raise OSError("network is unreachable")

    monkeypatch.setattr(sample_data, "DEBIAN_DIR", tmp_path / "no-package")
    monkeypatch.setattr(sample_data, "KERAS_CACHE_DIR", tmp_path / "no-cache")
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline)
    with pytest.raises(PreprocessError, match="apt-get install dataset-fashion-mnist"):
        sample_data.load_fashion_mnist("test")


def test_command_line(idx_dir, tmp_path, capsys):
    argv = ["--output", str(tmp_path / "cli"), "--per_class", "1", "--source", "test"]
    sample_data.main([*argv, "--data_dir", str(idx_dir)])
    assert "10 images in 10 class folders" in capsys.readouterr().out
    assert (tmp_path / "cli" / "Ankle_boot" / "test_9.png").is_file()


@pytest.mark.skipif(
    not sample_data.DEBIAN_DIR.is_dir(), reason="dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist_from_the_debian_package(tmp_path):
    images, labels = sample_data.load_fashion_mnist("test")
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    counts = sample_data.write_sample_folder(str(tmp_path), per_class=2, source="test")
    assert counts == dict.fromkeys(sample_data.CLASS_NAMES, 2)
    first_bag = int(np.flatnonzero(labels == sample_data.CLASS_NAMES.index("Bag"))[0])
    saved = np.asarray(Image.open(tmp_path / "Bag" / f"test_{first_bag}.png"))
    np.testing.assert_array_equal(saved, images[first_bag])


def test_without_the_debian_package_the_keras_cache_is_read(idx_dir, tmp_path, monkeypatch):
    """The README's route outside Debian: the idx files in ~/.keras/datasets/fashion-mnist."""
    import keras

    def no_download():
        raise AssertionError("the cache should have been read, not the network")

    monkeypatch.setattr(sample_data, "DEBIAN_DIR", tmp_path / "no-package")
    monkeypatch.setattr(sample_data, "KERAS_CACHE_DIR", idx_dir)
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", no_download)
    images, labels = sample_data.load_fashion_mnist("test")
    assert images.shape == (20, 28, 28) and labels.tolist() == list(range(10)) * 2
