"""Nuell's gRPC gateway: auth, users and posts over PostgreSQL.

Layout, one home per concern:

- `config`: settings from the environment, validated once at start.
- `log`: JSON log lines on stderr.
- `db/`: engine and sessions, ORM models, schema check, migrations.
- `errors`: domain errors and their one translation into gRPC status.
- `validation`: protovalidate rules from the proto, checked before any work.
- `boundary`: what every call passes: ids, authentication, scopes, validation,
  error translation, metrics.
- `services/`: one servicer per proto service, and the registry of them all.
- `reflection`: server reflection in both `v1` and `v1alpha`.
- `server`: assembly and lifecycle (health, signals, graceful drain).
"""
