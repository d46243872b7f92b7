"""Nuell's gRPC gateway: auth, users and posts over PostgreSQL; text analytics
forwarded to rust_compute.

Who starts whom::

    __main__ (nuell-gateway serve)
      └─ workers.serve: one process, or NUELL_WORKERS sharing the port
           └─ server.Gateway, per process
                ├─ Resources: engine and sessions, hot-read pool, account cache
                │  (LISTEN task), channel to rust_compute, hashers and token keys
                ├─ services.mount_services: every servicer, wrapped by boundary
                ├─ health and reflection, mounted directly
                └─ tasks: post_analysis.run_backfill, metrics.report_pool_use,
                   mail.Mailer.run (the outbox sender, when NUELL_SMTP_URL is set)

Layers, each calling only the one below it (docs/architecture.md)::

    transport  boundary · services/ · compute_client   the only modules that know grpc
    domain     accounts · account_lifecycle · credentials · posts · post_analysis
               authz · pagination · errors · text_rules
                                                       keyword-only functions, rows in and out
    store      db/ · security/ · mail                  SQL, Argon2id, JWT, SMTP

One home per concern:

- `config`: settings from the environment, validated once at start.
- `log`: JSON log lines on stderr; `metrics`, `tracing`, `request_id`: the
  call's figures, spans and ids.
- `errors`: domain errors, each with a `google.rpc` code, a stable reason and
  field violations; no grpc.
- `boundary`: what every call passes: ids, authentication, scopes,
  validation (`validation`), and the one translation of errors into gRPC
  status with details, plus metrics.
- `services/`: one servicer per proto service, each RPC decode → call →
  encode (`convert`, `fieldmask`, `services.etags`), and the registry of
  them all.
- `accounts`: account rules (ownership, the last active admin, revoking
  sessions on deactivation); `account_states`: each process's cache of every
  account's role, activity and token generation.
- `account_lifecycle`: registration and the flows over email (verification,
  password reset, email change): one-time tokens, throttling, mails queued
  in the transaction of their token.
- `mail`: the templates (`mail_templates/`, ja and en) and the sender that
  empties the outbox over SMTP.
- `credentials`: login (dummy hash, rehash, verified email), refresh
  rotation and reuse detection, logout, password change.
- `posts`: who reads and writes which post, at which version;
  `post_analysis`: analysis and the near-duplicate rule via rust_compute.
- `authz`: the one table of scopes per RPC, and the caller of the call.
- `pagination`: page sizes and signed page tokens.
- `compute_client`: the one channel to rust_compute; its failures become
  domain errors there.
- `db/`: engine and sessions, ORM models, queries, schema check, migrations.
- `security/`: password hashing and access and refresh tokens.
- `reflection`: server reflection in both `v1` and `v1alpha`.
- `server`: assembly and lifecycle (health, signals, graceful drain);
  `workers`: several processes on one port.
"""
