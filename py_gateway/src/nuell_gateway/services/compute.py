"""nuell.compute.v1.ComputeService: served here, forwarded to rust_compute."""

from __future__ import annotations

from nuell.compute.v1 import compute_service_pb2_grpc

from nuell_gateway.resources import Resources


class ComputeService(compute_service_pb2_grpc.ComputeServiceServicer):
    """Not forwarded yet: every RPC answers UNIMPLEMENTED through the call boundary."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources
