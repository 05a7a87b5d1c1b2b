"""The ``interop`` command line: one module per command group, sharing options and the
client session from common. app assembles them; ``main`` is the entry point.

Imports: every layer below, lazily where a command needs a heavy one.
"""
