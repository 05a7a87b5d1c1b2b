"""The coordinator's state without I/O: ``handle(peer, envelope, now)`` and ``tick(now)``
return the messages to send.

records (what is kept per worker, run and pending request), registry (workers and
graphs), admission (how many runs may be in flight), runs (a run from RUN to its reply),
requests (queries and the CONTROL/PARAM forwarded to workers), machine (the dispatcher
that ties them together).
"""

from interop_runtime.coordinator.state.machine import CoordinatorState
from interop_runtime.coordinator.state.records import Send

__all__ = ["CoordinatorState", "Send"]
