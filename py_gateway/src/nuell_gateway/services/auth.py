"""nuell.auth.v1.AuthService.

Accounts over email in `account_lifecycle`; sign-in and tokens in
`credentials`; two-factor enrolment in `second_factor`.
"""

from __future__ import annotations

import grpc
from nuell.auth.v1 import auth_service_pb2 as pb
from nuell.auth.v1 import auth_service_pb2_grpc

from nuell_gateway import account_lifecycle, credentials, second_factor
from nuell_gateway.authz import caller
from nuell_gateway.resources import Resources


class AuthService(auth_service_pb2_grpc.AuthServiceServicer):
    """Accounts and tokens; OAuth2 password-flow semantics."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources

    async def Register(
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterResponse:
        await account_lifecycle.register(
            self._resources, email=request.email, password=request.password, locale=request.locale
        )
        # Empty whether the address was new or taken (the contract says why).
        return pb.RegisterResponse()

    async def Login(
        self, request: pb.LoginRequest, context: grpc.aio.ServicerContext
    ) -> pb.LoginResponse:
        outcome = await credentials.log_in(
            self._resources, email=request.email, password=request.password
        )
        if outcome.tokens is None:
            return pb.LoginResponse(mfa_required=True, mfa_token=outcome.mfa_token)
        return pb.LoginResponse(**outcome.tokens)

    async def Refresh(
        self, request: pb.RefreshRequest, context: grpc.aio.ServicerContext
    ) -> pb.RefreshResponse:
        tokens = await credentials.refresh(self._resources, refresh_token=request.refresh_token)
        return pb.RefreshResponse(**tokens)

    async def Logout(
        self, request: pb.LogoutRequest, context: grpc.aio.ServicerContext
    ) -> pb.LogoutResponse:
        await credentials.log_out(self._resources, refresh_token=request.refresh_token)
        return pb.LogoutResponse()

    async def ChangePassword(
        self, request: pb.ChangePasswordRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChangePasswordResponse:
        await credentials.change_password(
            self._resources,
            account=caller(),
            current_password=request.current_password,
            new_password=request.new_password,
        )
        return pb.ChangePasswordResponse()

    async def VerifyEmail(
        self, request: pb.VerifyEmailRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyEmailResponse:
        await account_lifecycle.verify_email(self._resources, token=request.token)
        return pb.VerifyEmailResponse()

    async def ResendVerification(
        self, request: pb.ResendVerificationRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResendVerificationResponse:
        await account_lifecycle.resend_verification(self._resources, email=request.email)
        return pb.ResendVerificationResponse()

    async def RequestPasswordReset(
        self, request: pb.RequestPasswordResetRequest, context: grpc.aio.ServicerContext
    ) -> pb.RequestPasswordResetResponse:
        await account_lifecycle.request_password_reset(self._resources, email=request.email)
        return pb.RequestPasswordResetResponse()

    async def ResetPassword(
        self, request: pb.ResetPasswordRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResetPasswordResponse:
        await account_lifecycle.reset_password(
            self._resources, token=request.token, new_password=request.new_password
        )
        return pb.ResetPasswordResponse()

    async def RequestEmailChange(
        self, request: pb.RequestEmailChangeRequest, context: grpc.aio.ServicerContext
    ) -> pb.RequestEmailChangeResponse:
        await account_lifecycle.request_email_change(
            self._resources,
            account=caller(),
            new_email=request.new_email,
            current_password=request.current_password,
        )
        return pb.RequestEmailChangeResponse()

    async def ConfirmEmailChange(
        self, request: pb.ConfirmEmailChangeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConfirmEmailChangeResponse:
        await account_lifecycle.confirm_email_change(self._resources, token=request.token)
        return pb.ConfirmEmailChangeResponse()

    async def VerifyMfa(
        self, request: pb.VerifyMfaRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyMfaResponse:
        tokens = await credentials.verify_mfa(
            self._resources, mfa_token=request.mfa_token, code=request.code
        )
        return pb.VerifyMfaResponse(**tokens)

    async def EnrollTotp(
        self, request: pb.EnrollTotpRequest, context: grpc.aio.ServicerContext
    ) -> pb.EnrollTotpResponse:
        secret, uri = await second_factor.enroll(
            self._resources, account=caller(), current_password=request.current_password
        )
        return pb.EnrollTotpResponse(secret=secret, otpauth_uri=uri)

    async def ConfirmTotp(
        self, request: pb.ConfirmTotpRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConfirmTotpResponse:
        codes = await second_factor.confirm(self._resources, account=caller(), code=request.code)
        return pb.ConfirmTotpResponse(recovery_codes=codes)

    async def DisableTotp(
        self, request: pb.DisableTotpRequest, context: grpc.aio.ServicerContext
    ) -> pb.DisableTotpResponse:
        await second_factor.disable(self._resources, account=caller(), code=request.code)
        return pb.DisableTotpResponse()
