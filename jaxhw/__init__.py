"""jaxhw: steepest descent under norms, hyperparameter transfer, inductive bias and GNN
expressiveness as tested JAX/Flax/optax/jraph components.

Modules (one per concept): ``norms``, ``linalg``, ``optim``, ``spectral``, ``transfer``,
``models``, ``inductive_bias``, ``graphs``, ``expressiveness``, ``molecules``, ``solubility``,
``data``, ``train``, ``report``, ``cli``. They are imported lazily (``jaxhw.optim`` works after a
bare ``import jaxhw``) so that the command line starts fast.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "cli", "data", "expressiveness", "graphs", "inductive_bias", "linalg", "models", "molecules",
    "norms", "optim", "report", "solubility", "spectral", "train", "transfer",
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxhw.{name}")
    raise AttributeError(f"module 'jaxhw' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES])
