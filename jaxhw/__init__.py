"""jaxhw: steepest descent under norms, hyperparameter transfer, inductive bias and GNN
expressiveness as tested JAX/Flax/optax/jraph components.

Modules (one per concept): ``norms``, ``linalg``, ``optim``, ``models``, ``graphs``,
``molecules``, ``data``, ``train``, ``report``, ``cli``.
"""

__version__ = "0.1.0"
