"""How Nuell runs: the stack declared once, started by one launcher, rendered
for compose and Kubernetes. Run from the repository root, `python -m deploy.<module>`.

    settings.py ─┬─▶ stack.py ───▶ launcher.py   used by make run (run_stack.py), the deploy
                 │   (Services)    (start, wait,  tests, py_gateway's tests, make bench
                 │                  stop, restart)
                 └─▶ render.py ─▶ envoy/, docker/, kubernetes/ templates; manifests.py data

Who starts whom under `make run`:

    run_stack ─┬─ embedded PostgreSQL (pgserver via pg_ctl; or DATABASE_URL)
               └─ Launcher ─┬─ migrate (runs to completion first)
                            ├─ rust_compute
                            ├─ py_gateway ── its worker processes
                            ├─ envoy
                            └─ web (serve_web.py)

See deploy/README.md.
"""
