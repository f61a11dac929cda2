"""Ray fan-out and round-trip benchmark; prints one JSON line on stdout."""

from __future__ import annotations

import sys

import ray
from _common import exit_on_sigterm, log, parse_args, report, time_fanout, time_roundtrips


@ray.remote
def inc(x: int) -> int:
    return x + 1


@ray.remote
def total(*values: int) -> int:
    return sum(values)


def fanout(n: int) -> int:
    refs = [inc.remote(i) for i in range(n)]
    return ray.get(total.remote(*refs))


def roundtrip() -> int:
    return ray.get(inc.remote(1))


def main() -> int:
    args = parse_args(__doc__)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    exit_on_sigterm()
    try:
        log("ray", ray.__version__, "warming up")
        time_fanout(fanout, min(args.fanout, 100))
        time_roundtrips(roundtrip, 10)
        log(f"fan-out of {args.fanout}")
        fanout_s = time_fanout(fanout, args.fanout)
        log(f"{args.roundtrip} round trips")
        samples = time_roundtrips(roundtrip, args.roundtrip)
    finally:
        ray.shutdown()
    report("ray", ray.__version__, args.fanout, fanout_s, samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
