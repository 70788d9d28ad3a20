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
    if value in (None, ""):
        return None
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
        return shipped
    looked = [str(root / ESOL_FILE)] if root else []
    raise DataNotFoundError(
        f"ESOL csv not found; looked in {looked + [str(shipped)]}. Put delaney-processed.csv in "
        f"<data_dir>/esol/ and pass --data-dir or set {DATA_DIR_ENV}."
    )


def load_esol(path_or_dir: str | os.PathLike[str] | None = None) -> EsolData:
    """Read the ESOL CSV (SMILES kept as written: featurization strips whitespace)."""
    path = Path(path_or_dir) if path_or_dir is not None else esol_path()
    if path.is_dir():
        path = esol_path(path)
    if not path.is_file():
        raise DataNotFoundError(f"ESOL csv {str(path)!r} does not exist")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {ESOL_TARGET, ESOL_SMILES} - set(reader.fieldnames or [])
        if missing:
            raise DataNotFoundError(
                f"{str(path)!r} is not the ESOL csv: columns {sorted(missing)} are missing"
            )
        rows = list(reader)
    try:
        targets = np.asarray([float(r[ESOL_TARGET]) for r in rows], dtype=np.float32)
    except ValueError as err:
        raise DataNotFoundError(f"{str(path)!r}: non-numeric target ({err})") from err
    return EsolData(
        smiles=tuple(r[ESOL_SMILES] for r in rows),
        targets=targets,
        names=tuple(r.get("Compound ID", "") for r in rows),
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
