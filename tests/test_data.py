"""Data layer: the committed sample, the npz shards, both official archive layouts, bad files."""

import dataclasses
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from jaxhw import data

# From shared/data/README.md (verified counts section), independent of our loader.
FIRST_TRAIN_LABELS = [19, 29, 0, 11, 1, 86, 90, 28, 23, 31]
FIRST_TEST_LABELS = [49, 33, 72, 51, 71, 92, 15, 14, 23, 0]
# First five training rows in the official R/G/B-plane layout: first three and last three bytes.
FIRST_ROW_BYTES = [
    ((255, 255, 255), (10, 59, 79)),
    ((255, 253, 253), (253, 253, 255)),
    ((250, 248, 247), (194, 207, 228)),
    ((124, 131, 135), (232, 236, 231)),
    ((43, 32, 87), (60, 29, 37)),
]


def planes(x: np.ndarray) -> np.ndarray:
    """NHWC uint8 → official rows of 3072 bytes (all R, then all G, then all B)."""
    return x.transpose(0, 3, 1, 2).reshape(len(x), -1)


def check_known_first_images(x_train, y_train, y_test):
    np.testing.assert_array_equal(y_train[:10], FIRST_TRAIN_LABELS)
    np.testing.assert_array_equal(y_test[:10], FIRST_TEST_LABELS)
    rows = planes(x_train[:5])
    for row, (head, tail) in zip(rows, FIRST_ROW_BYTES):
        assert tuple(row[:3]) == head and tuple(row[-3:]) == tail


def test_sample_is_real_cifar():
    d = data.load_cifar100_sample()
    assert d.is_sample
    assert d.x_train.shape[1:] == (32, 32, 3) and d.x_train.dtype == np.uint8
    assert 300 <= len(d.x_train) <= 1000 and 100 <= len(d.x_test) <= 500
    # The sample keeps the original first images (indices 0..9) in order.
    check_known_first_images(d.x_train, d.y_train, d.y_test)
    assert set(np.unique(d.y_train)) == set(range(100))
    assert d.fine_names[:3] == ("apple", "aquarium_fish", "baby")
    # fine → coarse is a function (each fine class belongs to one coarse class)
    pairs = set(zip(d.y_train.tolist(), d.y_train_coarse.tolist()))
    assert len(pairs) == 100


FULL_DATA = os.environ.get("JAXHW_DATA_DIR")
HAVE_FULL = bool(FULL_DATA) and (Path(FULL_DATA) / "cifar100" / data.CIFAR_TEST).is_file()


@pytest.mark.skipif(not HAVE_FULL, reason="full CIFAR-100 not on this machine (set JAXHW_DATA_DIR)")
def test_full_npz_shards_match_readme():
    d = data.load_cifar100(FULL_DATA)
    assert not d.is_sample
    assert d.x_train.shape == (50000, 32, 32, 3) and d.x_test.shape == (10000, 32, 32, 3)
    check_known_first_images(d.x_train, d.y_train, d.y_test)
    assert d.fingerprint()["sha256_x_train"] == "4e457917601a66aed021f5fa37957b56c6319557c0a8ed5484de3c390af45430"
    assert np.all(np.bincount(d.y_train, minlength=100) == 500)


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _write_python_archive(path: Path, d: data.Cifar100) -> None:
    """The official python layout: pickled dicts with bytes keys, ``data`` rows of R,G,B planes."""
    with tarfile.open(path, "w:gz") as tar:
        for split, x, y, yc in (("train", d.x_train, d.y_train, d.y_train_coarse), ("test", d.x_test, d.y_test, d.y_test_coarse)):
            obj = {b"data": planes(x), b"fine_labels": y.tolist(), b"coarse_labels": yc.tolist(),
                   b"filenames": [b"x.png"] * len(x), b"batch_label": split.encode()}
            _add(tar, f"cifar-100-python/{split}", pickle.dumps(obj, protocol=2))
        _add(tar, "cifar-100-python/meta", pickle.dumps({b"fine_label_names": [n.encode() for n in d.fine_names]}))


def _write_binary_archive(path: Path, d: data.Cifar100) -> None:
    """The official binary layout: <1 coarse byte><1 fine byte><3072 pixel bytes> per image."""
    with tarfile.open(path, "w:gz") as tar:
        for split, x, y, yc in (("train", d.x_train, d.y_train, d.y_train_coarse), ("test", d.x_test, d.y_test, d.y_test_coarse)):
            rec = np.concatenate([yc[:, None].astype(np.uint8), y[:, None].astype(np.uint8), planes(x)], axis=1)
            _add(tar, f"cifar-100-binary/{split}.bin", rec.tobytes())
        _add(tar, "cifar-100-binary/fine_label_names.txt", "\n".join(d.fine_names).encode())


@pytest.mark.parametrize("writer,name", [(_write_python_archive, data.CIFAR_PYTHON_ARCHIVE),
                                         (_write_binary_archive, data.CIFAR_BINARY_ARCHIVE)])
def test_official_archives_round_trip(tmp_path, writer, name):
    sample = data.load_cifar100_sample()
    (tmp_path / "cifar100").mkdir()
    writer(tmp_path / "cifar100" / name, sample)
    d = data.load_cifar100(tmp_path, allow_sample=False, allow_download=False)
    assert not d.is_sample and d.source.endswith(name)
    np.testing.assert_array_equal(d.x_train, sample.x_train)
    np.testing.assert_array_equal(d.x_test, sample.x_test)
    np.testing.assert_array_equal(d.y_train, sample.y_train)
    np.testing.assert_array_equal(d.y_train_coarse, sample.y_train_coarse)
    check_known_first_images(d.x_train, d.y_train, d.y_test)
    assert d.fine_names[:2] == ("apple", "aquarium_fish")


def test_corrupt_shard_gives_clear_error(tmp_path):
    folder = tmp_path / "cifar100"
    folder.mkdir()
    for name in (*data.CIFAR_SHARDS, data.CIFAR_TEST):
        (folder / name).write_bytes(b"this is not a zip file")
    with pytest.raises(data.DataNotFoundError, match="cifar100_train_1of2.npz.*corrupt"):
        data.load_cifar100(tmp_path, allow_sample=False, allow_download=False)


def test_truncated_binary_archive_gives_clear_error(tmp_path):
    sample = data.load_cifar100_sample()
    path = tmp_path / data.CIFAR_BINARY_ARCHIVE
    _write_binary_archive(path, sample)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(data.DataNotFoundError, match="cifar-100-binary.tar.gz"):
        data.load_cifar100(tmp_path, allow_sample=False, allow_download=False)


def test_missing_data_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_tfds"))
    with pytest.raises(data.DataNotFoundError) as err:
        data.load_cifar100(tmp_path, allow_sample=False, allow_download=False)
    msg = str(err.value)
    assert str(tmp_path) in msg and "--data-dir" in msg and "JAXHW_DATA_DIR" in msg


def test_missing_data_dir_is_named(tmp_path):
    with pytest.raises(data.DataNotFoundError, match="nope"):
        data.load_cifar100(tmp_path / "nope")


def test_bad_labels_and_missing_sample_are_named_plainly(tmp_path, monkeypatch):
    sample = data.load_cifar100_sample()
    fields = {f.name: getattr(sample, f.name) for f in dataclasses.fields(sample)}
    with pytest.raises(data.DataNotFoundError, match=r"test fine labels must lie in 0\.\.99.*found 50\.\.149"):
        data.Cifar100(**{**fields, "y_test": sample.y_test + 50})  # the sample's test labels span 0..99
    with pytest.raises(data.DataNotFoundError, match=r"510 train images but 509 train labels"):
        data.Cifar100(**{**fields, "y_train": sample.y_train[:-1]})
    with pytest.raises(data.DataNotFoundError, match=r"nonexistent\.npz' does not exist"):
        data.load_cifar100_sample(tmp_path / "nonexistent.npz")
    with pytest.raises(data.DataNotFoundError, match="empty string"):
        data.load_cifar100("")
    monkeypatch.setenv("JAXHW_DATA_DIR", "")  # an empty variable means "not set"
    assert data.resolve_data_dir() is None


def test_explicit_dir_without_data_is_an_error_not_the_sample(monkeypatch, tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_tfds"))
    with pytest.raises(data.DataNotFoundError, match=str(tmp_path)):
        data.load_cifar100(tmp_path, allow_download=False)


def test_falls_back_to_sample_without_data(monkeypatch, tmp_path):
    monkeypatch.delenv("JAXHW_DATA_DIR", raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    d = data.load_cifar100(allow_download=False)
    assert d.is_sample


def test_train_val_split_is_deterministic_and_disjoint():
    x = np.arange(100)[:, None]
    y = np.arange(100)
    a = data.train_val_split(x, y, 20, seed=3)
    b = data.train_val_split(x, y, 20, seed=3)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert len(a[1]) == 80 and len(a[3]) == 20
    assert not set(a[1]) & set(a[3]) and set(a[1]) | set(a[3]) == set(range(100))
    with pytest.raises(ValueError, match="n_val"):
        data.train_val_split(x, y, 100)


def test_iterate_batches_pads_with_mask_and_replays_order():
    arrays = {"x": np.arange(10), "y": np.arange(10) * 2}
    batches = list(data.iterate_batches(arrays, 4, seed=1, epoch=2))
    assert [len(b["x"]) for b in batches] == [4, 4, 4]
    np.testing.assert_array_equal(batches[-1]["mask"], [1, 1, 0, 0])
    seen = np.concatenate([b["x"][b["mask"] > 0] for b in batches])
    assert sorted(seen.tolist()) == list(range(10))
    again = list(data.iterate_batches(arrays, 4, seed=1, epoch=2))
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in again]), np.concatenate([b["x"] for b in batches]))
    other = np.concatenate([b["x"] for b in data.iterate_batches(arrays, 4, seed=1, epoch=3)])
    assert not np.array_equal(other, np.concatenate([b["x"] for b in batches]))
    dropped = list(data.iterate_batches(arrays, 4, seed=1, drop_remainder=True))
    assert len(dropped) == 2 and "mask" not in dropped[0]


def test_augment_keeps_shape_and_content():
    import jax

    x = np.random.default_rng(0).random((8, 32, 32, 3)).astype(np.float32)
    out = np.asarray(data.augment_images(x, jax.random.PRNGKey(0)))
    assert out.shape == x.shape
    # Each output is a shifted (maybe flipped) copy: its central 24×24 must appear in the input
    # at one of the 9×9 offsets, in the image or its mirror.
    for img, src in zip(out, x):
        centre = img[4:28, 4:28]
        windows = [np.lib.stride_tricks.sliding_window_view(c, (24, 24, 3))[:, :, 0] for c in (src, src[:, ::-1])]
        assert any(np.isclose(w, centre).all(axis=(-3, -2, -1)).any() for w in windows)


def test_esol_loader():
    d = data.load_esol()
    assert len(d.smiles) == 1128 and d.targets.shape == (1128,)
    assert d.targets.min() == pytest.approx(-11.6) and d.targets.max() == pytest.approx(1.58)


def test_esol_bad_file(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(data.DataNotFoundError, match="x.csv.*missing"):
        data.load_esol(bad)


def test_esol_from_a_directory_without_it_says_it_uses_the_shipped_copy(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("JAXHW_DATA_DIR", raising=False)
    d = data.load_esol(tmp_path)
    assert len(d.smiles) > 1000
    assert f"no esol/delaney-processed.csv under {tmp_path}; using the copy shipped" in capsys.readouterr().err
    data.load_esol()  # nothing named: the shipped copy is the documented default, no notice
    assert capsys.readouterr().err == ""
