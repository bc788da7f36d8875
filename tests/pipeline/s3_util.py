"""A real S3-protocol server on loopback for the object-storage tests: moto's standalone
server (``moto[server]``, HTTP on 127.0.0.1, a free port) in a subprocess, plus helpers to
list what a run left in a bucket. Credentials are dummies in the environment, as a user's
would be; the endpoint travels in the URI's query, as pyarrow takes it."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    def __init__(self, port: int):
        self.port = port
        self.endpoint = f"127.0.0.1:{port}"
        self.query = f"endpoint_override={self.endpoint}&scheme=http"
        import boto3

        self.client = boto3.session.Session().client(
            "s3", endpoint_url=f"http://{self.endpoint}", region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def bucket(self) -> str:
        """A new empty bucket."""
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return name

    def uri(self, bucket: str, prefix: str = "") -> str:
        return f"s3://{bucket}" + (f"/{prefix}" if prefix else "") + f"?{self.query}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return sorted(out)

    def get(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def download(self, bucket: str, prefix: str, dest) -> str:
        """Copy every object under ``prefix`` into the local folder ``dest`` (to check a run's
        output with the local helpers of reliability_util)."""
        dest = str(dest)
        for key in self.keys(bucket, prefix.rstrip("/") + "/"):
            rel = key[len(prefix.rstrip("/")) + 1:]
            path = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(self.get(bucket, key))
        return dest

    def uploads(self, bucket: str) -> list[str]:
        return [u["Key"] for u in self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


@contextlib.contextmanager
def s3_server():
    """Start moto's server; set dummy credentials in os.environ (subprocesses inherit them)."""
    port = free_port()
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        server = S3Server(port)
        deadline = time.time() + 60
        while True:
            try:
                server.client.list_buckets()
                break
            except Exception:  # noqa: BLE001 - not up yet
                assert proc.poll() is None, "moto server exited"
                assert time.time() < deadline, "moto server did not start"
                time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
