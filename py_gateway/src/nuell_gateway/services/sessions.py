"""nuell.sessions.v1.SessionService: rules in `sessions`."""

from __future__ import annotations

import uuid

import grpc
from nuell.sessions.v1 import session_service_pb2 as pb
from nuell.sessions.v1 import session_service_pb2_grpc

from nuell_gateway import sessions
from nuell_gateway.authz import caller
from nuell_gateway.convert import audit_event_to_proto, session_to_proto
from nuell_gateway.resources import Resources


class SessionService(session_service_pb2_grpc.SessionServiceServicer):
    """Sign-in sessions and the audit trail."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSessionsResponse:
        viewer = caller()
        rows, next_token = await sessions.list_sessions(
            self._resources,
            viewer=viewer,
            user_id=request.user_id,
            requested_page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListSessionsResponse(
            sessions=[session_to_proto(row, current=viewer.session_id) for row in rows],
            next_page_token=next_token,
        )

    async def RevokeSession(
        self, request: pb.RevokeSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeSessionResponse:
        await sessions.revoke_session(
            self._resources, viewer=caller(), session_id=uuid.UUID(request.id)
        )
        return pb.RevokeSessionResponse()

    async def RevokeOtherSessions(
        self, request: pb.RevokeOtherSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeOtherSessionsResponse:
        await sessions.revoke_other_sessions(self._resources, viewer=caller())
        return pb.RevokeOtherSessionsResponse()

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAuditEventsResponse:
        rows, next_token = await sessions.list_events(
            self._resources,
            viewer=caller(),
            user_id=request.user_id,
            requested_page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListAuditEventsResponse(
            events=[audit_event_to_proto(row) for row in rows], next_page_token=next_token
        )
