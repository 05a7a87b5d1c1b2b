"""A worker: one process, one plugin. The plugin contract (plugin), the pending-input
table without I/O (state), the host that serves DATA, CONTROL and PARAM (host) with its
heartbeat thread (heartbeat), what its inbox takes from whom and PARAM requests
(authority), checked function calls (calls), sockets to peer inboxes (peers), error
replies (replies), devices (devices), and the built-in NumPy plugin (numpy_plugin,
numpy_ops).

Imports: wire, transport and graph. Never the coordinator or a client.
"""
