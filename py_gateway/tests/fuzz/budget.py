"""How much each property may spend: examples per RPC and caller, and fixed settings.

The whole package should stay well under 90 seconds on two cores.
`derandomize` makes every run try the same examples, so a failure in CI
reproduces locally; there is no example database to carry between runs.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# Examples per (RPC, caller) for each property.
RANDOM_BYTES_EXAMPLES = 25
HOSTILE_MESSAGE_EXAMPLES = 40
# A caller without a token, or without the RPC's scope, is turned away before
# the body is read; fewer examples show that as well.
TURNED_AWAY_EXAMPLES = 5


def fuzz_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )
