"""Moving frames between processes: ZeroMQ sockets (sockets), CURVE keys and allow-lists
(security), and where the bytes live (buffers). The same-host data plane lives here.

Imports: the wire layer, pyzmq.
"""
