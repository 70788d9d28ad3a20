"""Flax Linen models: MLPs and the CNN for CIFAR-100 (Q12–Q14); the solubility GNN lives in ``gnn``."""

from jaxhw.models.cnn import CNN, make_cnn
from jaxhw.models.gnn import MoleculeGNN
from jaxhw.models.mlp import MLP

__all__ = ["CNN", "MLP", "MoleculeGNN", "make_cnn"]
