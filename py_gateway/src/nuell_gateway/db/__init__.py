"""PostgreSQL access: engine and sessions, ORM models, schema check, migrations."""
