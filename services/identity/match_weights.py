"""Match weights the identity service starts with (ADR 25).

Estimated by EM on the generated population of tools/bench/identity.py
(5000 persons, seed 7): ``python tools/bench/identity.py --persons 5000
--seed 7 --write-weights services/identity/match_weights.py``.
"""

from services.identity.matching import MatchWeights

DEFAULT_WEIGHTS = MatchWeights(
    m=(
        (0.848784, 0.0488205, 0.0488106, 0.0313996, 0.0182973, 0.00388784),
        (0.886756, 0.0254603, 0.0831207, 0.00103956, 0.00362375),
        (0.981859, 0.0181407),
        (0.518513, 0.166355, 0.238564, 0.03117, 0.0453978),
        (0.974744, 0.0252561),
    ),
    u=(
        (0.000219993, 2.49993e-05, 0.000419987, 0.00210494, 0.0269992, 0.970231),
        (0.000169525, 2.56855e-05, 0.00127914, 0.0138548, 0.984671),
        (0.501541, 0.498459),
        (0.000124271, 5.69576e-05, 0.000248542, 0.0089527, 0.990618),
        (0.000151278, 0.999849),
    ),
    prior=0.000141029,
)
