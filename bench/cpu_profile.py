"""Run a module under cProfile on a CPU clock: ``python -m bench.cpu_profile OUT MODULE ARGS``.

The clock is the main thread's CPU time (``time.thread_time``), so time spent asleep in
``poll`` or descheduled after waking another thread does not count: what remains is the
CPU each function costs. Only the main thread is profiled, and only between SIGUSR1
(start) and SIGUSR2 (stop and write OUT), so start-up and shutdown stay out of it.
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
import time
from typing import Any


def main() -> None:
    out, module, *rest = sys.argv[1:]
    sys.argv = [module, *rest]
    prof = cProfile.Profile(time.thread_time)

    def start(*_: Any) -> None:
        prof.enable()

    def stop(*_: Any) -> None:
        prof.disable()
        prof.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass


if __name__ == "__main__":
    main()
