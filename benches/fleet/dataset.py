"""The fleet benchmark's dataset and bucket chores, against the local S3 server.

  dataset.py ENDPOINT upload BUCKET SHARDS SHARD_MIB FILES FILE_KIB
      uploads SHARDS random shards (shards/shard-NNNNN.bin) and FILES small files
      (files/NNN/file-NNNNNN.bin, 1,000 to a directory), 16 uploads at a time
  dataset.py ENDPOINT empty BUCKET
      deletes every object of BUCKET (the cache bucket, between runs)
  dataset.py ENDPOINT order BUCKET SEED
      prints every key of BUCKET, shuffled by SEED (a node's reading order for an epoch)
"""

import os
import random
import sys
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

endpoint, command, bucket = sys.argv[1:4]
client = boto3.client(
    "s3",
    endpoint_url=endpoint,
    region_name="us-east-1",
    config=Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=32,
    ),
)


def keys():
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    for page in pages:
        for item in page.get("Contents", []):
            yield item["Key"]


if command == "upload":
    shards, shard_mib, files, file_kib = (int(x) for x in sys.argv[4:8])
    jobs = [(f"shards/shard-{i:05}.bin", shard_mib << 20) for i in range(shards)]
    jobs += [(f"files/{i // 1000:03}/file-{i:06}.bin", file_kib << 10) for i in range(files)]

    def put(job):
        key, size = job
        client.put_object(Bucket=bucket, Key=key, Body=os.urandom(size))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, jobs))
elif command == "empty":
    batch = []
    for key in keys():
        batch.append({"Key": key})
        if len(batch) == 1000:
            client.delete_objects(Bucket=bucket, Delete={"Objects": batch})
            batch = []
    if batch:
        client.delete_objects(Bucket=bucket, Delete={"Objects": batch})
elif command == "order":
    listed = sorted(keys())
    random.Random(int(sys.argv[4])).shuffle(listed)
    print("\n".join(listed))
else:
    sys.exit(f"unknown command {command}")
