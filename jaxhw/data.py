"""Data sets: CIFAR-100 and ESOL (Delaney), one loader each.

Where data comes from, in order:
  1. an explicit directory (``--data-dir`` / ``JAXHW_DATA_DIR``) laid out as ``shared/data``:
     ``cifar100/cifar100_train_{1,2}of2.npz`` + ``cifar100_test.npz``, or the official
     ``cifar-100-python.tar.gz`` / ``cifar-100-binary.tar.gz`` archives; ``esol/delaney-processed.csv``;
  2. for CIFAR-100, a tensorflow-datasets copy already on disk (read with ``tfds.data_source``,
     which needs no TensorFlow);
  3. for ESOL, the copy shipped inside the package (it is small and public).

A missing or corrupt data set raises :class:`DataNotFoundError` that says where we looked and
how to provide the data, never a stack trace from deep inside a reader.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

DATA_DIR_ENV = "JAXHW_DATA_DIR"
PACKAGE_ASSETS = Path(__file__).parent / "assets"


class DataNotFoundError(FileNotFoundError):
    """A data set could not be found or read; the message says where we looked and what to do."""


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The data directory from the argument, else ``$JAXHW_DATA_DIR``, else None."""
    value = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if value is None or (data_dir is None and not str(value).strip()):  # an empty variable = unset
        return None
    if not str(value).strip():
        raise DataNotFoundError("the data directory given is an empty string; name a directory (or omit it)")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataNotFoundError(
            f"data directory {str(path)!r} (from {'argument' if data_dir is not None else DATA_DIR_ENV}) "
            "does not exist or is not a directory"
        )
    return path


def sha256_of_array(x: np.ndarray) -> str:
    """sha256 of the raw C-order bytes (how shared/data/README.md states its checksums)."""
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# ESOL (Delaney)
# --------------------------------------------------------------------------------------------

ESOL_FILE = Path("esol") / "delaney-processed.csv"
ESOL_TARGET = "measured log solubility in mols per litre"
ESOL_SMILES = "smiles"


@dataclasses.dataclass(frozen=True)
class EsolData:
    """Raw ESOL rows: SMILES strings, targets (log10 mol/L), compound names and the source file."""

    smiles: tuple[str, ...]
    targets: np.ndarray
    names: tuple[str, ...]
    source: Path


def esol_path(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The ESOL CSV: ``<data_dir>/esol/delaney-processed.csv`` if given, else the shipped copy."""
    root = resolve_data_dir(data_dir)
    if root is not None:
        for candidate in (root / ESOL_FILE, root / ESOL_FILE.name):
            if candidate.is_file():
                return candidate
    shipped = PACKAGE_ASSETS / ESOL_FILE
    if shipped.is_file():
        if root is not None:  # a named directory without ESOL: the same data ships with jaxhw; say which is used
            print(f"jaxhw: no {ESOL_FILE} under {root}; using the copy shipped with jaxhw ({shipped})",
                  file=sys.stderr, flush=True)
        return shipped
    looked = [str(root / ESOL_FILE)] if root else []
    raise DataNotFoundError(
        f"ESOL csv not found; looked in {looked + [str(shipped)]}. Put delaney-processed.csv in "
        f"<data_dir>/esol/ and pass --data-dir or set {DATA_DIR_ENV}."
    )


def load_esol(path_or_dir: str | os.PathLike[str] | None = None) -> EsolData:
    """Read the ESOL CSV (SMILES kept as written: featurization strips whitespace).

    The file must be UTF-8 text with ``smiles`` and target columns and at least one data row;
    every target must be a finite number. A target that is missing, non-numeric, NaN or ±inf is
    an error (a solubility is never legitimately infinite; such a row means a damaged file, and
    silently dropping it would shift every row index a ``--splits`` file refers to). Violations
    raise :class:`DataNotFoundError` naming the file and the offending (1-based, header = 1) lines.
    """
    path = Path(path_or_dir) if path_or_dir is not None else esol_path()
    if path.is_dir():
        path = esol_path(path)
    if not path.is_file():
        raise DataNotFoundError(f"ESOL csv {str(path)!r} does not exist")
    where = f"ESOL csv {str(path)!r}"
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {ESOL_TARGET, ESOL_SMILES} - set(reader.fieldnames or [])
            if missing:
                raise DataNotFoundError(
                    f"{str(path)!r} is not the ESOL csv: columns {sorted(missing)} are missing"
                )
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataNotFoundError(
            f"{where} is not a readable UTF-8 CSV file ({type(err).__name__}: {err})"
        ) from err
    if not rows:
        raise DataNotFoundError(f"{where} has a header but no data rows")
    targets = np.empty(len(rows), np.float32)
    float32_max = float(np.finfo(np.float32).max)
    bad: list[str] = []
    for i, r in enumerate(rows):
        text = r.get(ESOL_TARGET)
        try:
            value = float(text)  # type: ignore[arg-type]
            ok = bool(np.isfinite(value)) and abs(value) <= float32_max  # 1e39 would become inf
            targets[i] = value if ok else np.nan
        except (TypeError, ValueError):
            ok = False
        if not ok:
            bad.append(f"line {i + 2}: {text!r}")
    if bad:
        raise DataNotFoundError(
            f"{where}: {len(bad)} row(s) without a finite numeric target in column "
            f"{ESOL_TARGET!r}: {', '.join(bad[:5])}{' …' if len(bad) > 5 else ''}"
        )
    return EsolData(
        smiles=tuple(r[ESOL_SMILES] or "" for r in rows),
        targets=targets,
        names=tuple(r.get("Compound ID") or "" for r in rows),
        source=path,
    )


def split_indices(
    n: int, fractions: Sequence[float], seed: int
) -> tuple[np.ndarray, ...]:
    """Deterministic random partition of ``range(n)`` into parts of the given fractions."""
    if not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must sum to 1, got {fractions}")
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.round(np.cumsum(fractions)[:-1] * n).astype(int)
    return tuple(np.sort(p) for p in np.split(perm, cuts))


# --------------------------------------------------------------------------------------------
# CIFAR-100
# --------------------------------------------------------------------------------------------

CIFAR_DIR = "cifar100"
CIFAR_SHARDS = ("cifar100_train_1of2.npz", "cifar100_train_2of2.npz")
CIFAR_TEST = "cifar100_test.npz"
CIFAR_PYTHON_ARCHIVE = "cifar-100-python.tar.gz"
CIFAR_BINARY_ARCHIVE = "cifar-100-binary.tar.gz"
CIFAR_SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "cifar100_sample.npz"
CIFAR_MEAN = np.array([0.5071, 0.4865, 0.4409], dtype=np.float32)
CIFAR_STD = np.array([0.2673, 0.2564, 0.2762], dtype=np.float32)
_IMAGE_BYTES = 32 * 32 * 3


@dataclasses.dataclass(frozen=True)
class Cifar100:
    """CIFAR-100 as uint8 NHWC images with fine (0–99) and coarse (0–19) labels.

    ``is_sample`` is True when this is the small committed sample, not the full data set:
    experiments must say so loudly, since accuracies on it mean little.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    y_train_coarse: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    y_test_coarse: np.ndarray
    source: str
    is_sample: bool = False
    fine_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("x_train", "x_test"):
            x = getattr(self, name)
            if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
                raise DataNotFoundError(
                    f"{self.source}: {name} must be uint8 of shape (N, 32, 32, 3), got "
                    f"{x.dtype} {x.shape}"
                )
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if len(x) != len(y):
                raise DataNotFoundError(f"{self.source}: {len(x)} {split} images but {len(y)} {split} labels")
            if len(y) and (y.min() < 0 or y.max() > 99):
                raise DataNotFoundError(f"{self.source}: {split} fine labels must lie in 0..99 (CIFAR-100's "
                                        f"classes), found {int(y.min())}..{int(y.max())}")

    def fingerprint(self) -> dict[str, object]:
        """What a report records so a reader knows exactly which data produced its numbers."""
        return {
            "source": self.source,
            "is_sample": self.is_sample,
            "n_train": int(len(self.x_train)),
            "n_test": int(len(self.x_test)),
            "sha256_x_train": sha256_of_array(self.x_train),
            "sha256_x_test": sha256_of_array(self.x_test),
        }


def load_cifar100(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    allow_sample: bool = True,
    allow_download: bool = True,
) -> Cifar100:
    """Load CIFAR-100 from the first place that has it.

    Order: ``data_dir`` (argument, else ``$JAXHW_DATA_DIR``) with the npz shards or an official
    archive; a tensorflow-datasets copy already prepared on disk; a tfds download when TensorFlow
    is installed and the network answers within seconds; the committed sample (``allow_sample``,
    only when no data directory was given: a named directory without the data is an error).
    """
    looked: list[str] = []
    root = resolve_data_dir(data_dir)
    if root is not None:
        for folder in (root / CIFAR_DIR, root):
            found = _load_cifar_from_dir(folder, looked)
            if found is not None:
                return found
    found = _load_cifar_from_tfds(looked, allow_download=allow_download)
    if found is not None:
        return found
    # The sample stands in only when the user named no data directory: an explicit directory
    # without the data is a mistake to report, not to paper over.
    if allow_sample and root is None and CIFAR_SAMPLE.is_file():
        return load_cifar100_sample()
    raise DataNotFoundError(
        "CIFAR-100 not found. Looked in:\n  - " + "\n  - ".join(looked or ["(no data directory)"])
        + f"\nProvide it with --data-dir DIR or {DATA_DIR_ENV}=DIR, where DIR/cifar100/ holds "
        f"{', '.join(CIFAR_SHARDS)} and {CIFAR_TEST} (as in shared/data), or the official "
        f"{CIFAR_PYTHON_ARCHIVE} / {CIFAR_BINARY_ARCHIVE}."
    )


def load_cifar100_sample(path: Path = CIFAR_SAMPLE) -> Cifar100:
    """The committed sample: a few hundred real images (see tests/data/README.md)."""
    arrays = _read_npz(path)
    return Cifar100(
        x_train=arrays["x_train"],
        y_train=arrays["y_train"].astype(np.int32),
        y_train_coarse=arrays["y_train_coarse"].astype(np.int32),
        x_test=arrays["x_test"],
        y_test=arrays["y_test"].astype(np.int32),
        y_test_coarse=arrays["y_test_coarse"].astype(np.int32),
        source=f"sample {path}",
        is_sample=True,
        fine_names=tuple(str(s) for s in arrays.get("fine_names", ())),
    )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not Path(path).is_file():
        raise DataNotFoundError(f"{str(path)!r} does not exist (or is not a file)")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as err:  # zipfile.BadZipFile, EOFError, ValueError, OSError, ...
        raise DataNotFoundError(
            f"cannot read {str(path)!r}: {type(err).__name__}: {err}. The file is corrupt or "
            "incomplete; replace it with a fresh copy."
        ) from err


def _label_names(folder: Path, name: str) -> tuple[str, ...]:
    path = folder / name
    return tuple(path.read_text().split()) if path.is_file() else ()


def _load_cifar_from_dir(folder: Path, looked: list[str]) -> Cifar100 | None:
    shards = [folder / s for s in CIFAR_SHARDS]
    looked.append(f"{folder}/{{{','.join(CIFAR_SHARDS)},{CIFAR_TEST}}}")
    if all(s.is_file() for s in shards) and (folder / CIFAR_TEST).is_file():
        parts = [_read_npz(s) for s in shards]
        test = _read_npz(folder / CIFAR_TEST)
        try:
            return Cifar100(
                x_train=np.concatenate([p["x_train"] for p in parts]),
                y_train=np.concatenate([p["y_train"] for p in parts]).astype(np.int32),
                y_train_coarse=np.concatenate([p["y_train_coarse"] for p in parts]).astype(np.int32),
                x_test=test["x_test"],
                y_test=test["y_test"].astype(np.int32),
                y_test_coarse=test["y_test_coarse"].astype(np.int32),
                source=str(folder),
                fine_names=_label_names(folder, "fine_label_names.txt"),
            )
        except KeyError as err:
            raise DataNotFoundError(f"{folder}: npz shard lacks array {err}") from err
    for archive, reader in (
        (CIFAR_PYTHON_ARCHIVE, read_cifar100_python_archive),
        (CIFAR_BINARY_ARCHIVE, read_cifar100_binary_archive),
    ):
        looked.append(str(folder / archive))
        if (folder / archive).is_file():
            return reader(folder / archive)
    return None


def read_cifar100_python_archive(path: Path) -> Cifar100:
    """Official ``cifar-100-python.tar.gz``: pickles whose ``data`` rows are 3072 bytes (R, G, B planes)."""
    import pickle
    import tarfile

    def rows_to_nhwc(data: np.ndarray) -> np.ndarray:
        return np.asarray(data, np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()

    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            splits = {}
            for split in ("train", "test"):
                with tar.extractfile(members[split]) as fh:  # type: ignore[union-attr]
                    splits[split] = pickle.load(fh, encoding="bytes")
            names: tuple[str, ...] = ()
            if "meta" in members:
                with tar.extractfile(members["meta"]) as fh:  # type: ignore[union-attr]
                    meta = pickle.load(fh, encoding="bytes")
                names = tuple(n.decode() for n in meta.get(b"fine_label_names", []))
    except (KeyError, OSError, EOFError, pickle.UnpicklingError, tarfile.TarError) as err:
        raise DataNotFoundError(
            f"cannot read official CIFAR-100 python archive {str(path)!r}: {type(err).__name__}: {err}"
        ) from err
    tr, te = splits["train"], splits["test"]
    return Cifar100(
        x_train=rows_to_nhwc(tr[b"data"]),
        y_train=np.asarray(tr[b"fine_labels"], np.int32),
        y_train_coarse=np.asarray(tr[b"coarse_labels"], np.int32),
        x_test=rows_to_nhwc(te[b"data"]),
        y_test=np.asarray(te[b"fine_labels"], np.int32),
        y_test_coarse=np.asarray(te[b"coarse_labels"], np.int32),
        source=str(path),
        fine_names=names,
    )


def read_cifar100_binary_archive(path: Path) -> Cifar100:
    """Official ``cifar-100-binary.tar.gz``: records of 1 coarse byte, 1 fine byte, 3072 pixel bytes."""
    import tarfile

    record = 2 + _IMAGE_BYTES
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            raw = {}
            for split in ("train", "test"):
                with tar.extractfile(members[f"{split}.bin"]) as fh:  # type: ignore[union-attr]
                    raw[split] = np.frombuffer(fh.read(), np.uint8)
            names: tuple[str, ...] = ()
            if "fine_label_names.txt" in members:
                with tar.extractfile(members["fine_label_names.txt"]) as fh:  # type: ignore[union-attr]
                    names = tuple(fh.read().decode().split())
    except (KeyError, OSError, EOFError, tarfile.TarError) as err:
        raise DataNotFoundError(
            f"cannot read official CIFAR-100 binary archive {str(path)!r}: {type(err).__name__}: {err}"
        ) from err
    out = {}
    for split, buf in raw.items():
        if buf.size % record:
            raise DataNotFoundError(
                f"{str(path)!r}: {split}.bin has {buf.size} bytes, not a multiple of {record}"
            )
        rec = buf.reshape(-1, record)
        out[split] = (
            rec[:, 2:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(),
            rec[:, 1].astype(np.int32),
            rec[:, 0].astype(np.int32),
        )
    return Cifar100(
        *out["train"], *out["test"], source=str(path), fine_names=names  # type: ignore[misc]
    )


def _network_available(host: str = "storage.googleapis.com", port: int = 443, timeout: float = 3.0) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _load_cifar_from_tfds(looked: list[str], *, allow_download: bool) -> Cifar100 | None:
    """A prepared tfds copy (read with ``tfds.data_source``: no TensorFlow), else a guarded download.

    tfds retries an offline download for minutes, so we only call it after a 3-second
    reachability check, and only when TensorFlow (needed to *prepare*) is importable.
    """
    tfds_dir = Path(os.environ.get("TFDS_DATA_DIR", Path.home() / "tensorflow_datasets"))
    looked.append(f"tensorflow-datasets copy under {tfds_dir}/cifar100")
    prepared = (tfds_dir / "cifar100").is_dir()
    if not prepared:
        if not allow_download:
            return None
        import importlib.util

        if importlib.util.find_spec("tensorflow") is None:
            looked.append("tfds download skipped: TensorFlow is not installed (pip install 'jaxhw[tfds-prepare]')")
            return None
        if not _network_available():
            looked.append("tfds download skipped: no network")
            return None
    try:
        import tensorflow_datasets as tfds

        if not prepared:
            tfds.builder("cifar100", data_dir=str(tfds_dir)).download_and_prepare()
        splits = {s: tfds.data_source("cifar100", split=s, data_dir=str(tfds_dir)) for s in ("train", "test")}
        arrays = {}
        for s, source in splits.items():
            items = [source[i] for i in range(len(source))]
            arrays[s] = (
                np.stack([it["image"] for it in items]).astype(np.uint8),
                np.asarray([it["label"] for it in items], np.int32),
                np.asarray([it["coarse_label"] for it in items], np.int32),
            )
    except Exception as err:  # tfds raises many kinds; turn them into one clear message
        looked.append(f"tensorflow-datasets failed: {type(err).__name__}: {str(err)[:200]}")
        return None
    return Cifar100(*arrays["train"], *arrays["test"], source=f"tfds {tfds_dir}")


def train_val_split(
    x: np.ndarray, y: np.ndarray, n_val: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Deterministically hold out ``n_val`` training examples for validation (test stays untouched)."""
    if not 0 < n_val < len(x):
        raise ValueError(f"n_val must be in (0, {len(x)}), got {n_val}")
    perm = np.random.default_rng(seed).permutation(len(x))
    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return x[train], y[train], x[val], y[val]


# --------------------------------------------------------------------------------------------
# Batching and on-device preprocessing
# --------------------------------------------------------------------------------------------


def iterate_batches(
    arrays: dict[str, np.ndarray],
    batch_size: int,
    *,
    seed: int | None = None,
    epoch: int = 0,
    drop_remainder: bool = False,
):
    """Yield dict batches of ``arrays`` (all with the same leading length).

    With ``seed`` the order is a permutation that depends only on ``(seed, epoch)``, so a resumed
    run replays exactly the batches an uninterrupted one would have seen. Without ``drop_remainder``
    the last batch is padded to ``batch_size`` and carries a ``mask`` (1 = real example), keeping one
    compiled shape for the whole run.
    """
    n = len(next(iter(arrays.values())))
    if any(len(a) != n for a in arrays.values()):
        raise ValueError(f"arrays have different lengths: { {k: len(a) for k, a in arrays.items()} }")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.arange(n) if seed is None else np.random.default_rng([seed, epoch]).permutation(n)
    stop = n - n % batch_size if drop_remainder else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        batch = {k: a[idx] for k, a in arrays.items()}
        if len(idx) < batch_size:
            pad = batch_size - len(idx)
            batch = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
            batch["mask"] = np.concatenate([np.ones(len(idx), np.float32), np.zeros(pad, np.float32)])
        elif not drop_remainder:
            batch["mask"] = np.ones(batch_size, np.float32)
        yield batch


def normalize_images(x):
    """uint8 NHWC → float32 with CIFAR-100's per-channel mean/std (jit-friendly)."""
    import jax.numpy as jnp

    return (x.astype(jnp.float32) / 255.0 - CIFAR_MEAN) / CIFAR_STD


def augment_images(x, key, pad: int = 4):
    """Random crop (zero-pad by ``pad``, crop back) and horizontal flip, per image, on device."""
    import jax
    import jax.numpy as jnp

    n, h, w, _ = x.shape
    k_crop, k_flip = jax.random.split(key)
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(k_crop, (n, 2), 0, 2 * pad + 1)
    crop = jax.vmap(lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, img.shape[-1])))
    x = crop(padded, offsets)
    flip = jax.random.bernoulli(k_flip, 0.5, (n, 1, 1, 1))
    return jnp.where(flip, x[:, :, ::-1, :], x)


def cifar_preprocess(augment: bool = True):
    """The ``preprocess(x, rng, train)`` used by the CIFAR-100 experiments: normalise, and augment in training."""

    def preprocess(x, rng, train):
        x = normalize_images(x)
        return augment_images(x, rng) if (augment and train) else x

    return preprocess
