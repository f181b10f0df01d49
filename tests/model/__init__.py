"""The reference model of schemas/semantics.md and the strategies that drive it.

`MODEL_CI` is the Hypothesis profile of the property test against the real projector: a
fixed number of examples from a derandomized (seeded by the test) search, so a CI run is
reproducible and its duration bounded. `MB_MODEL_EXAMPLES` overrides the count, and
`MB_MODEL_RANDOM=1` explores with a random seed (the failing example's blob is printed).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "model-ci",
    max_examples=int(os.environ.get("MB_MODEL_EXAMPLES", "80")),
    deadline=None,  # examples talk to PostgreSQL; their time says nothing about correctness
    derandomize=os.environ.get("MB_MODEL_RANDOM") != "1",
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MODEL_CI = settings.get_profile("model-ci")
