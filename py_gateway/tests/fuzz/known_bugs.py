"""Open gateway bugs these properties found, each recognised by its exact symptom.

The properties tolerate an answer only when it is precisely the symptom of
a bug listed here, for a request that triggers it; everything else they
check in full. `test_found_inputs.py` reproduces each open bug as a strict
xfail, so a fix turns that test into a failure that points back here: then
delete the entry and the mark, and the properties hold the fix in place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from tests.fuzz.outcomes import Outcome


@dataclass(frozen=True)
class KnownBug:
    """A bug: what it is, and how to recognise an answer that shows it."""

    reason: str
    applies: Callable[[MethodDescriptor, Message | None, Outcome], bool]


def _internal_error(outcome: Outcome) -> bool:
    return outcome.code == grpc.StatusCode.INTERNAL and outcome.details == "internal error"


# None open: every bug these properties found so far is fixed and pinned by a
# plain test in test_found_inputs.py.
KNOWN_BUGS: tuple[KnownBug, ...] = ()


def known_bug(method: MethodDescriptor, request: Message | None, outcome: Outcome) -> bool:
    """Whether `outcome` is exactly the symptom of a listed bug."""
    return any(bug.applies(method, request, outcome) for bug in KNOWN_BUGS)
