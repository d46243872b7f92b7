"""End-to-end load runs against the real stack: `python -m bench` (`make bench`).

scenarios.py   the scenarios as data: calls, requests, targets, loads
stack.py       the processes they dial, started as first needed
runner.py      one scenario: checked calls, then the load driver per leg
driver.py      the load driver (closed or open loop), in a process of its own
report.py      the tables, derived figures and JSON; charts.py draws the PNGs
echo_server.py the ceiling: a bare grpc.aio echo with the gateway's process model
explain_feeds.py  query plans of the post feeds (docs/posts.md)
"""
