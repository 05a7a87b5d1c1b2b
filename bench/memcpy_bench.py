"""The memcpy bound: copying the payload inside one process, with numpy.

fresh:  ``src.copy()`` (a new buffer each time: allocation + first-touch page faults + copy)
reused: ``np.copyto(dst, src)`` into a buffer written before (the copy alone)
"""

from __future__ import annotations

import argparse

import numpy as np

from .common import MIB, ResultFile, sigterm_raises, summarize_transfer, time_loop


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args(argv)
    sigterm_raises()
    res = ResultFile(args.out)
    nbytes = args.size_mib * MIB
    src = np.arange(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    dst[...] = 0  # touch every page once

    def fresh() -> dict:
        sink = []

        def op() -> None:
            sink.clear()
            sink.append(src.copy())  # the previous copy is freed first, as a receiver's would be
        return summarize_transfer(time_loop(op, args.iters, 2), nbytes, 1)

    def reused() -> dict:
        return summarize_transfer(time_loop(lambda: np.copyto(dst, src), args.iters, 2), nbytes, 1)

    res.guarded("fresh", fresh)
    res.guarded("reused", reused)


if __name__ == "__main__":
    main()
