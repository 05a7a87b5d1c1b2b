#!/usr/bin/env python3
"""Health probe for deployments: exit 0 when the coordinator answers (and, with --worker,
when that worker is registered and alive), 1 otherwise, with one line on stdout.

    interop-probe [-c ADDR] [--key SECRET] [--coordinator-key PUBLIC] [--worker NAME]

Defaults come from the environment variables the ``interop`` CLI reads too:
INTEROP_COORDINATOR, INTEROP_KEY, INTEROP_COORDINATOR_KEY, plus INTEROP_WORKER for
--worker. Used by the Compose healthchecks and the Kubernetes readiness probes (the image
installs it as /usr/local/bin/interop-probe). A worker probes with its own key pair and the
coordinator with its own, so no extra secret has to be handed out for health checks.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="interop-probe", description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--coordinator", default=env("INTEROP_COORDINATOR",
                                                      "tcp://127.0.0.1:5555"))
    p.add_argument("--key", default=env("INTEROP_KEY"), help="CURVE secret key file")
    p.add_argument("--coordinator-key", default=env("INTEROP_COORDINATOR_KEY"),
                   help="the coordinator's public key file")
    p.add_argument("--worker", default=env("INTEROP_WORKER"),
                   help="also require this worker to be registered and alive")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for a reply")
    args = p.parse_args(argv)

    from interop_runtime import Client
    from interop_runtime.transport.security import Security

    security = None
    if args.key:
        security = Security.from_files(args.key, None, args.coordinator_key or args.key)
    try:
        with Client(args.coordinator, timeout_s=args.timeout, security=security) as client:
            workers = {w["name"]: w for w in client.workers()}
    except Exception as exc:  # a timeout, a refused key, a bad address: all mean "not healthy"
        print(f"unhealthy: coordinator {args.coordinator}: {type(exc).__name__}: {exc}")
        return 1
    if args.worker:
        w = workers.get(args.worker)
        if w is None or not w["alive"]:
            state = "not registered" if w is None else "registered but not alive"
            print(f"unhealthy: worker {args.worker!r} {state} at {args.coordinator}")
            return 1
        print(f"ok: worker {args.worker!r} alive at {w['endpoint']}")
        return 0
    print(f"ok: coordinator {args.coordinator} answers ({len(workers)} workers registered)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
