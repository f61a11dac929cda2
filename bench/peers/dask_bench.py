"""Dask distributed fan-out and round-trip benchmark; prints one JSON line on stdout."""

from __future__ import annotations

import sys

import distributed
from _common import exit_on_sigterm, log, parse_args, report, time_fanout, time_roundtrips


def inc(x: int) -> int:
    return x + 1


def total(values: list[int]) -> int:
    return sum(values)


def main() -> int:
    args = parse_args(__doc__)
    exit_on_sigterm()
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=40
    )
    client = distributed.Client(cluster)

    def fanout(n: int) -> int:
        futures = client.map(inc, range(n), pure=False)
        return client.submit(total, futures, pure=False).result()

    def roundtrip() -> int:
        return client.submit(inc, 1, pure=False).result()

    try:
        log("distributed", distributed.__version__, "warming up")
        time_fanout(fanout, min(args.fanout, 100))
        time_roundtrips(roundtrip, 10)
        log(f"fan-out of {args.fanout}")
        fanout_s = time_fanout(fanout, args.fanout)
        log(f"{args.roundtrip} round trips")
        samples = time_roundtrips(roundtrip, args.roundtrip)
    finally:
        client.close()
        cluster.close()
    report("dask", distributed.__version__, args.fanout, fanout_s, samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
