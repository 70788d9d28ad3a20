"""Thin experiment scripts, one per part of the problem set.

Each module exposes ``run(ctx: jaxhw.report.RunContext) -> None``: configuration, calls into the
library, and report sections. ``PARTS`` maps the command-line name to the module, in the order
``jaxhw run all`` runs them (cheap parts first so a report exists early).
"""

PARTS: dict[str, str] = {
    "steepest-descent": "experiments.steepest_descent",      # Q1–Q5, Q11
    "spectral-norms": "experiments.spectral_norms",          # Q6–Q8
    "gnn-aggregation": "experiments.gnn_aggregation",        # Q15
    "gnn-expressiveness": "experiments.gnn_expressiveness",  # Q16–Q17
    "solubility": "experiments.solubility",                  # Q18
    "lr-transfer": "experiments.lr_transfer",                # Q9–Q10
    "cifar100": "experiments.cifar100",                      # Q12–Q14
}
