"""The wire: what a message is, byte for byte. No sockets, no processes.

dtypes (wire dtype names), errors (one exception per wire error code), model (the base of
the wire models, msgspec structs), messages (the header models), payloads (graph specs and
worker plans that messages carry), codec (frames <-> Envelope), strings (the ``string`` dtype's frame), deadline (the one
timeout rule) and schema (the generator of protocol/schema.json).

Imports: msgpack, msgspec, numpy and ml_dtypes only (numpy and ml_dtypes on first use);
nothing else of interop_runtime.
"""
