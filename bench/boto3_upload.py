"""The S3 peer of `bench/deposit.py`: plain boto3 `upload_file`, as a lab's own script would do it.

    python bench/boto3_upload.py ENDPOINT FILE BUCKET JOBS CHECKSUMS(0|1)

Imported, `upload` is timed in the bench's own process (no interpreter start-up, boto3 already
imported: the peer of the CLI's upload phase). Run as a script, the bench times the whole process
from outside, start-up and imports included, as it times the `escrow deposit` CLI: the peer of
the CLI's wall time. It imports nothing but boto3, so its start-up is boto3's own.
"""

from __future__ import annotations

import sys
import time

PART_SIZE = 64 * 1024 * 1024


def upload(endpoint: str, plain: str, bucket: str, jobs: int, checksums: bool) -> float:
    """Upload `plain` with boto3's managed transfer; the seconds the transfer took."""
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_supported" if checksums else "when_required",
    )
    s3 = boto3.client("s3", endpoint_url=endpoint, config=config, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    transfer = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
                              max_concurrency=jobs, use_threads=True)
    start = time.perf_counter()
    s3.upload_file(plain, bucket, f"peer/{time.time_ns()}", Config=transfer)
    return time.perf_counter() - start


if __name__ == "__main__":
    endpoint, plain, bucket, jobs, checksums = sys.argv[1:6]
    upload(endpoint, plain, bucket, int(jobs), checksums == "1")
