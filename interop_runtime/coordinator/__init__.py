"""The coordinator: a state machine without I/O (state/), its SQLite store (store),
its Prometheus metrics (metrics) and the thin daemon that carries the state machine's
instructions out over a ROUTER socket (daemon).

Imports: wire, transport and graph. Never a worker or a client.
"""
