"""Update masks (AIP-134): which fields an Update call may change."""

from __future__ import annotations

from collections.abc import Collection

from google.protobuf.field_mask_pb2 import FieldMask

from nuell_gateway.errors import FieldViolation, InvalidArgument


def checked_paths(
    mask: FieldMask, *, mutable: Collection[str], immutable: Collection[str]
) -> frozenset[str]:
    """The mask's paths, or `InvalidArgument` naming every unknown or immutable one.

    A full replacement (`*`) and an empty mask are refused: an update must
    say what it changes, so adding a field later never clears it silently.
    """
    violations = []
    if not mask.paths:
        violations.append(
            FieldViolation("update_mask.paths", "name at least one field", "mask.empty")
        )
    for index, path in enumerate(mask.paths):
        where = f"update_mask.paths[{index}]"
        if path in mutable:
            continue
        if path in immutable:
            description, reason = f"`{path}` cannot be changed", "mask.immutable"
        else:
            allowed = ", ".join(sorted(mutable))
            description, reason = (
                f"`{path}` is not a field you can update ({allowed})",
                "mask.unknown",
            )
        violations.append(FieldViolation(where, description, reason))
    if violations:
        raise InvalidArgument(
            "update_mask names fields that cannot be updated",
            reason="INVALID_UPDATE_MASK",
            violations=violations,
        )
    return frozenset(mask.paths)
