"""Degenerate models: predictions that barely vary, whose AUC measures rounding, not the model.

    reason = degenerate_reason(probabilities)      # "" for a model that ranks images

A model whose probabilities all lie within a few float32 steps of one value (a collapsed
network that outputs its bias) still gets an AUC, an interval and DeLong p-values: the ranks
then come from the last bits of float32 arithmetic (summation order, batch size, thread
count, device), not from the images. Two rules, each from the predictions alone:

- spread: the central 90% of the probabilities (5th to 95th percentile) spans less than
  ``MIN_SPREAD`` = 1e-5. A float32 probability near 0.5 moves in steps of 6e-8 (2^-24), and
  the same network's outputs differ by about 1e-7 to 1e-6 between batch sizes, thread counts
  or devices; 1e-5 is then about 100 float32 steps, 10x above that noise: differences
  smaller than that are not a property of the model (the collapsed ISIC 2017 models seen,
  whose AUC 0.60 and DeLong p = 0.03 looked like findings, spanned 4e-7). Percentiles, not
  min and max: one outlying image must not make a collapsed model look alive. Measured on
  three B0 models of one ISIC 2017 run (docs/evaluation.md): predicting with batch sizes 1,
  7 and 64 moved each probability by up to 1.2e-7; the two collapsed models (spread 2.4e-7
  and 3.0e-7) then ranked the test images differently (Spearman 0.83 and 0.89 between batch
  sizes), the third (spread 2.2e-5) identically (0.99994).
- ties: one probability value (at float32 resolution, the precision the network computes
  in) is shared by at least ``MAX_TIED`` = half of the images. The AUC then mostly counts
  ties as half a correct ranking; a saturated model (every p = 1.0) is the common case.

A degenerate row keeps its numbers in results.json (with ``degenerate: true`` and the
reason) but is left out of every "best" choice and every comparison against the best.
"""
from __future__ import annotations

import numpy as np

MIN_SPREAD = 1e-5
MAX_TIED = 0.5
CENTRAL = (5, 95)  # percentiles of the spread rule
CELL = "DEGENERATE (not a result)"  # shown in place of such a row's AUC


def degenerate_reason(p) -> str:
    """Why these probabilities cannot rank images ("" when they can, or when there are fewer
    than two)."""
    p = np.asarray(p, dtype=np.float64)
    if len(p) < 2:
        return ""
    low, high = np.percentile(p, CENTRAL)
    spread = float(high - low)
    if spread < MIN_SPREAD:
        return (f"probabilities barely vary: the central 90% lie within {spread:.2g} "
                f"({low:.7g} to {high:.7g}); under {MIN_SPREAD:g} the ranking is float32 "
                f"rounding")
    _, counts = np.unique(p.astype(np.float32), return_counts=True)
    tied = int(counts.max())
    if tied >= MAX_TIED * len(p):
        return (f"{tied} of {len(p)} images share one probability "
                f"(a constant or saturated output)")
    return ""


def split_reason(reasons: dict[str, str]) -> str:
    """The first split's reason, named ({"test": ..., "validation": ...}; "" when none)."""
    return next((f"{split}: {why}" for split, why in reasons.items() if why), "")
