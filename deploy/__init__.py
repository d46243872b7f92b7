"""How Nuell runs: the stack declared once, started, rendered.

Run from the repository root as `python -m deploy.<module>`:

    settings.py ─▶ stack.py ─▶ launcher.py     make run (run_stack.py), deploy tests,
        │            (services)   (start, wait,   py_gateway fault tests, make bench
        │                          supervise)
        └──────▶ render.py ─▶ envoy/envoy.yaml.j2, manifests.py (compose, Kubernetes)

Who starts whom under `make run`:

    run_stack ─┬─ embedded PostgreSQL (pgserver; or DATABASE_URL)
               ├─ migrate (runs to completion)
               ├─ rust_compute
               ├─ py_gateway ─ its worker processes
               ├─ envoy
               └─ web (serve_web.py)

See deploy/README.md.
"""
