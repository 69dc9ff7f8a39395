"""Match weights the identity service starts with (ADR 25).

Estimated by EM on the generated population of tools/bench/identity.py
(5000 persons, seed 7): ``python tools/bench/identity.py --persons 5000
--seed 7 --write-weights services/identity/match_weights.py``.
"""

from services.identity.matching import MatchWeights

DEFAULT_WEIGHTS = MatchWeights(
    m=(
        (0.848934, 0.0488295, 0.0487992, 0.0313731, 0.0182718, 0.0037919),
        (0.887248, 0.0254846, 0.0830165, 0.00103715, 0.00321371),
        (0.991346, 0.00865414),
        (0.518771, 0.1664, 0.238567, 0.0311541, 0.0451069),
        (0.974799, 0.0252015),
    ),
    u=(
        (0.000219993, 2.49993e-05, 0.000419987, 0.00210494, 0.0269992, 0.970231),
        (0.000169525, 2.56855e-05, 0.00127914, 0.0138548, 0.984671),
        (0.501329, 0.498671),
        (0.000124271, 5.69576e-05, 0.000248542, 0.0089527, 0.990618),
        (0.000151278, 0.999849),
    ),
    prior=0.000140925,
)
