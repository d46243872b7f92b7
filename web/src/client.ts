// Nuell from a browser: typed clients for every service over gRPC-Web or
// Connect, through the Envoy edge. Copy this file (and `npm run generate`'s
// output) to start; the page in main.ts is one user of it.
//
//   const nuell = createNuell({ baseUrl: "http://localhost:8080" });   // or protocol: "connect"
//   await nuell.auth.register({ email, password });     // mails a verification link
//   await nuell.auth.verifyEmail({ token });             // its ?verify_email= token
//   const login = await nuell.auth.login({ email, password });
//   nuell.session.accessToken = login.accessToken;
//   const { posts } = await nuell.posts.listPosts({ pageSize: 20 });
//   const { sessions } = await nuell.sessions.listSessions({});

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";

import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { AuthService } from "./gen/nuell/auth/v1/auth_service_pb.js";
import { ComputeService } from "./gen/nuell/compute/v1/compute_service_pb.js";
import { PostService } from "./gen/nuell/posts/v1/post_service_pb.js";
import { SessionService } from "./gen/nuell/sessions/v1/session_service_pb.js";
import { UserService } from "./gen/nuell/users/v1/user_service_pb.js";

/** Who is signed in. Held in memory only: a token in localStorage is readable by any script
 *  that ever runs on the page, and outlives the tab. */
export interface Session {
  accessToken?: string;
  refreshToken?: string;
}

export interface Nuell {
  auth: Client<typeof AuthService>;
  users: Client<typeof UserService>;
  posts: Client<typeof PostService>;
  compute: Client<typeof ComputeService>;
  sessions: Client<typeof SessionService>;
  session: Session;
  protocol: Protocol;
}

/** How calls travel to the edge, which speaks both:
 *  - "grpc-web": binary gRPC-Web (application/grpc-web+proto), every call a POST;
 *  - "connect": the Connect protocol in binary (application/proto); calls marked
 *    `idempotency_level = NO_SIDE_EFFECTS` in the protos (GetPost, ListPosts,
 *    GetCurrentUser, …) go as GET requests, which caches and CDNs understand. */
export type Protocol = "grpc-web" | "connect";
export const PROTOCOLS: readonly Protocol[] = ["grpc-web", "connect"];

export interface NuellOptions {
  /** The edge, e.g. "https://api.nue-japan.com"; the page's origin must be on its CORS allowlist. */
  baseUrl: string;
  /** A call that has not finished by then fails with DEADLINE_EXCEEDED (sent as grpc-timeout,
   *  or connect-timeout-ms over Connect). */
  timeoutMs?: number;
  /** "grpc-web" (the default) or "connect". */
  protocol?: Protocol;
  /** Who is signed in: pass an existing client's `session` to keep it when rebuilding the
   *  client (say, to change protocol). A new, signed-out one by default. */
  session?: Session;
}

export function createNuell({
  baseUrl,
  timeoutMs = 10_000,
  protocol = "grpc-web",
  session = {},
}: NuellOptions): Nuell {
  // Every call carries the access token, if there is one; the gateway decides
  // which calls need it (UNAUTHENTICATED otherwise).
  const bearer: Interceptor = (next) => async (request) => {
    if (session.accessToken) {
      request.header.set("authorization", `Bearer ${session.accessToken}`);
    }
    return next(request);
  };
  const transport =
    protocol === "connect"
      ? createConnectTransport({
          baseUrl,
          // application/proto (application/connect+proto for streams): the compact encoding.
          useBinaryFormat: true,
          // Calls without side effects as GET: cacheable, and safe to repeat.
          useHttpGet: true,
          // Error details arrive with Connect's bare type names: the edge writes them so.
          interceptors: [bearer],
          defaultTimeoutMs: timeoutMs,
        })
      : createGrpcWebTransport({
          baseUrl,
          // application/grpc-web+proto: the compact encoding every gRPC-Web server speaks.
          useBinaryFormat: true,
          interceptors: [bearer],
          defaultTimeoutMs: timeoutMs,
        });
  return {
    auth: createClient(AuthService, transport),
    users: createClient(UserService, transport),
    posts: createClient(PostService, transport),
    compute: createClient(ComputeService, transport),
    sessions: createClient(SessionService, transport),
    session,
    protocol,
  };
}

/** One broken field rule, as the gateway's google.rpc.BadRequest names it. */
export interface FieldViolation {
  field: string;
  description: string;
  reason: string;
}

/** What a failed call says, in a shape a page can show: the gRPC code and message plus the
 *  google.rpc details the gateway attaches (gRPC-Web: grpc-status-details-bin, exposed by
 *  the edge; Connect: the error's JSON `details`). The same over both protocols. */
export interface CallError {
  code: Code;
  codeName: string;
  message: string;
  /** ErrorInfo.reason: stable, for code to branch on (e.g. "INVALID_FIELDS"). */
  reason?: string;
  violations: FieldViolation[];
  /** RetryInfo.retry_delay in seconds: when a refused attempt (TOO_MANY_ATTEMPTS) may be
   *  made again. Absent when the server did not say (the edge's own rate limit). */
  retryAfterSeconds?: number;
}

export function describeError(error: unknown): CallError {
  const failure = ConnectError.from(error);
  const info = failure.findDetails(ErrorInfoSchema)[0];
  const violations = failure
    .findDetails(BadRequestSchema)
    .flatMap((badRequest) => badRequest.fieldViolations)
    .map(({ field, description, reason }) => ({ field, description, reason }));
  const delay = failure.findDetails(RetryInfoSchema)[0]?.retryDelay;
  return {
    code: failure.code,
    codeName: codeName(failure.code),
    message: failure.rawMessage,
    reason: info?.reason,
    violations,
    retryAfterSeconds: delay ? Number(delay.seconds) + delay.nanos / 1e9 : undefined,
  };
}

/** RESOURCE_EXHAUSTED, not ResourceExhausted: the names gRPC documents and servers log. */
export function codeName(code: Code): string {
  return (Code[code] ?? "UNKNOWN").replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

export { Code, ConnectError };
