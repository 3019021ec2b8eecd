"""Direct multipart upload of a file to the local S3 server, for the write benchmark's
baseline: boto3's transfer manager with the same part size as mount-s3 and parallel parts.
Prints MiB/s. Usage: direct_upload.py ENDPOINT BUCKET KEY FILE PART_SIZE CONCURRENCY"""

import os
import sys
import time

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

endpoint, bucket, key, path, part_size, concurrency = sys.argv[1:7]
client = boto3.client(
    "s3",
    endpoint_url=endpoint,
    region_name="us-east-1",
    config=Config(
        s3={"addressing_style": "path"},
        # The local server rejects trailing checksums (see DESIGN.md).
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    ),
)
transfer = TransferConfig(
    multipart_threshold=int(part_size),
    multipart_chunksize=int(part_size),
    max_concurrency=int(concurrency),
)
size = os.path.getsize(path)
start = time.monotonic()
client.upload_file(path, bucket, key, Config=transfer)
elapsed = time.monotonic() - start
print(f"{size / 1048576 / elapsed:.1f}")
