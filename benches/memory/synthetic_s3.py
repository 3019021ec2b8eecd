#!/usr/bin/env python3
"""A synthetic S3 endpoint for the memory benchmark: one bucket holding DIRS x KEYS objects of
one byte each (d0000/k000000 ...), answered from arithmetic, not storage, so that `find` can
walk millions of keys on a small machine. It answers ListObjectsV2 (with or without a
delimiter, paged by continuation tokens), HEAD and GET of those keys; it checks no signature.

Usage: synthetic_s3.py PORT DIRS KEYS   (prints "ready" once it listens)
"""
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PORT, DIRS, KEYS = (int(a) for a in sys.argv[1:4])
BUCKET = "synthetic"
STAMP = "2026-01-01T00:00:00.000Z"
HTTP_DATE = "Thu, 01 Jan 2026 00:00:00 GMT"


def dir_name(d):
    return f"d{d:04d}/"


def key_name(d, k):
    return f"d{d:04d}/k{k:06d}"


def parse_key(key):
    """(dir, key) numbers of an existing key, or None."""
    try:
        d, k = key.split("/")
        if d[0] != "d" or k[0] != "k" or len(d) != 5 or len(k) != 7:
            return None
        d, k = int(d[1:]), int(k[1:])
    except (ValueError, IndexError):
        return None
    return (d, k) if d < DIRS and k < KEYS else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def object(self, key):
        if parse_key(key) is None:
            return self.send(404, b"<Error><Code>NoSuchKey</Code></Error>")
        headers = [("ETag", '"1"'), ("Last-Modified", HTTP_DATE)]
        if self.command == "HEAD":
            self.send_response(200)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", "1")
            self.end_headers()
            return None
        return self.send(200, b"x", headers + [("Content-Range", "bytes 0-0/1")])

    def listing(self, query):
        prefix = query.get("prefix", [""])[0]
        delimiter = query.get("delimiter", [""])[0]
        max_keys = min(int(query.get("max-keys", ["1000"])[0]), 1000)
        start = int(query.get("continuation-token", ["0"])[0])
        prefixes, contents, total = [], [], 0
        if prefix == "" and delimiter == "/":
            total = DIRS
            prefixes = [dir_name(d) for d in range(start, min(start + max_keys, DIRS))]
        elif len(prefix) == 6 and prefix.endswith("/") and prefix.startswith("d"):
            try:
                d = int(prefix[1:5])
            except ValueError:
                d = DIRS
            if d < DIRS:
                total = KEYS
                contents = [key_name(d, k) for k in range(start, min(start + max_keys, KEYS))]
        end = start + len(prefixes) + len(contents)
        truncated = end < total
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
            f"<Name>{BUCKET}</Name><Prefix>{prefix}</Prefix><MaxKeys>{max_keys}</MaxKeys>",
            f"<KeyCount>{len(prefixes) + len(contents)}</KeyCount>",
            f"<Delimiter>{delimiter}</Delimiter>" if delimiter else "",
            f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>",
            f"<NextContinuationToken>{end}</NextContinuationToken>" if truncated else "",
        ]
        for key in contents:
            parts.append(
                f"<Contents><Key>{key}</Key><LastModified>{STAMP}</LastModified>"
                '<ETag>"1"</ETag><Size>1</Size><StorageClass>STANDARD</StorageClass></Contents>'
            )
        for p in prefixes:
            parts.append(f"<CommonPrefixes><Prefix>{p}</Prefix></CommonPrefixes>")
        parts.append("</ListBucketResult>")
        body = "".join(parts).encode()
        return self.send(200, body, [("Content-Type", "application/xml")])

    def do_GET(self):
        url = urlparse(self.path)
        path = url.path.lstrip("/")
        if path in (BUCKET, BUCKET + "/"):
            return self.listing(parse_qs(url.query))
        if path.startswith(BUCKET + "/"):
            return self.object(path[len(BUCKET) + 1 :])
        return self.send(404)

    do_HEAD = do_GET


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
server.daemon_threads = True
print("ready", flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
threading.Event().wait()
