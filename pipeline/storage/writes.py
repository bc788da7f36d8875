"""Writing under OUT (a local folder or an object store), atomically.

Local semantics: a file is written under ``.NAME[.TAG].tmp`` in its folder, fsynced and
renamed into place.

On an object store there is no rename, so a write is one complete upload:

* with ``boto3`` importable and an ``s3://`` location, a small object is one ``PutObject``
  and a large one (a tar) a multipart upload that is aborted when the write fails; a run
  killed mid-upload leaves an incomplete upload, which is invisible to readers and which
  ``abort_uploads`` (called by the next run, under the lock) removes;
* otherwise (``gs://``, ``hdfs://``, s3 without boto3) the object is uploaded under the
  temporary name ``.NAME.TAG.tmp`` beside its final name and moved into place (a
  server-side copy: the final object appears whole or not at all); a leftover temporary
  object is removed by the next run as a local one is.

Either way nothing is ever visible under a final name before it is complete. Conditional
writes (``put_if_absent`` / ``put_if_match``, S3's ``If-None-Match: *`` / ``If-Match``)
need boto3 and S3; elsewhere they answer None (unsupported), and ``pipeline.run.lock``
falls back to a best-effort lease. Credentials come from the standard environment
(``AWS_ACCESS_KEY_ID`` ..., ``GOOGLE_APPLICATION_CREDENTIALS``), never from OUT's string.
"""
from __future__ import annotations

import io as _stdio
import os
import shutil
import tempfile
import time
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlsplit

import pyarrow.fs as pafs

from .files import read_bytes, resolve
from .location import FILESYSTEM, bucket_key as _bucket_key, family, fs_key, fs_path, is_remote, scheme, temp_name as _temp_name

__all__ = ["s3_client", "remove", "remove_tree", "makedirs", "put_bytes", "AtomicFile", "put_if_absent",
           "put_if_match", "stat_object", "abort_uploads", "PART_BYTES", "SPOOL_BYTES"]

PART_BYTES = 8 << 20          # multipart upload part size (S3's minimum is 5 MiB)
SPOOL_BYTES = 64 << 20        # fallback uploads: kept in memory up to this, then in a temp file
_NO_BOTO3 = "TRAJSHARDS_NO_BOTO3"   # set to 1 to use the pyarrow-only paths (tests)


# ---------------------------------------------------------------------------------------------- filesystems
_S3: dict[tuple[int, str], Any] = {}


def s3_client(uri: str):
    """A boto3 S3 client for an ``s3://`` location (endpoint, scheme and region from its
    query, credentials from the environment), or None without boto3 or for another store."""
    if scheme(uri) != "s3" or os.environ.get(_NO_BOTO3) == "1":
        return None
    key = (os.getpid(), fs_key(uri))
    if key in _S3:
        return _S3[key]
    try:
        import boto3
    except ImportError:
        _S3[key] = None
        return None
    q = dict(parse_qsl(urlsplit(uri).query))
    endpoint = q.get("endpoint_override") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and "://" not in endpoint:
        endpoint = f"{q.get('scheme', 'https')}://{endpoint}"
    kw = {"endpoint_url": endpoint} if endpoint else {}
    region = q.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kw["region_name"] = region
    client = boto3.session.Session().client("s3", **kw)
    _S3[key] = client
    return client


def _client_error_code(e: BaseException) -> str | None:
    resp = getattr(e, "response", None)
    return (resp or {}).get("Error", {}).get("Code") if isinstance(resp, dict) else None


# ---------------------------------------------------------------------------------------------- removing
def remove(uri: str) -> bool:
    """Remove a file; False when it did not exist."""
    if not is_remote(uri):
        try:
            os.remove(uri)
            return True
        except FileNotFoundError:
            return False
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return False
    client = s3_client(uri)
    if client is not None:  # pyarrow would leave an empty "folder/" marker object behind
        bucket, key = _bucket_key(uri)
        client.delete_object(Bucket=bucket, Key=key)
    else:
        fs.delete_file(path)
    return True


def remove_tree(uri: str) -> None:
    if not is_remote(uri):
        shutil.rmtree(uri, ignore_errors=True)
        return
    client = s3_client(uri)
    if client is not None:
        bucket, prefix = _bucket_key(uri)
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/")
        for page in pages:
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        return
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)


def makedirs(uri: str) -> None:
    """Create a folder (local or on a remote file system); object stores have none to create."""
    if not is_remote(uri):
        os.makedirs(uri, exist_ok=True)
    elif family(uri) == FILESYSTEM:
        fs, path = resolve(uri)
        fs.create_dir(path, recursive=True)


def put_bytes(uri: str, data: bytes, tag: str | None = None, fsync: bool = True) -> None:
    """Write ``data`` to ``uri`` atomically (module docstring). ``tag`` makes the temporary
    name unique to a writer (two writers that may overlap never share one)."""
    if not is_remote(uri):
        tmp = _temp_name(uri, tag)
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, uri)
        return
    client = s3_client(uri)
    if client is not None:
        bucket, key = _bucket_key(uri)
        client.put_object(Bucket=bucket, Key=key, Body=data)
        return
    _upload_via_temp(uri, _stdio.BytesIO(data), tag)


def _upload_via_temp(uri: str, src: BinaryIO, tag: str | None) -> None:
    """Upload under the temporary name, then move into place (a copy on object stores: the
    final object appears whole). A failed upload leaves at most the temporary object, which
    is removed here or by the next run."""
    fs, _ = resolve(uri)
    tmp = _temp_name(uri, tag or f"{os.getpid()}-{os.urandom(3).hex()}")
    tmp_path, final = fs_path(tmp), fs_path(uri)
    try:
        with fs.open_output_stream(tmp_path) as out:
            shutil.copyfileobj(src, out, PART_BYTES)
        fs.move(tmp_path, final)
    except BaseException:
        try:
            fs.delete_file(tmp_path)
        except OSError:
            pass
        raise


class _S3Upload:
    """A write-only file that streams to one S3 object: parts are uploaded as they fill, the
    object appears at ``commit()`` (one PutObject when it fits a part), ``abort()`` aborts."""

    def __init__(self, client, uri: str):
        self.client, self.uri = client, uri
        self.bucket, self.key = _bucket_key(uri)
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict] = []
        self._pos = 0

    def write(self, data) -> int:
        self._buf += data
        self._pos += len(data)
        while len(self._buf) >= PART_BYTES:
            self._send(bytes(self._buf[:PART_BYTES]))
            del self._buf[:PART_BYTES]
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass

    def _send(self, chunk: bytes) -> None:
        if self._upload_id is None:
            self._upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)["UploadId"]
        n = len(self._parts) + 1
        r = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, PartNumber=n, Body=chunk)
        self._parts.append({"PartNumber": n, "ETag": r["ETag"]})

    def commit(self) -> None:
        try:
            if self._upload_id is None:
                self.client.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self._buf))
                return
            if self._buf:
                self._send(bytes(self._buf))
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                                                  MultipartUpload={"Parts": self._parts})
            self._upload_id = None
        except BaseException:
            self.abort()
            raise
        finally:
            self._buf = bytearray()

    def abort(self) -> None:
        self._buf = bytearray()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload_id)


class AtomicFile:
    """A binary file written under ``uri`` that appears there only at ``commit()``, whole;
    ``abort()`` leaves nothing under the final name (module docstring). ``file`` is what to
    write to (it supports ``write``, ``tell``, ``flush``)."""

    def __init__(self, uri: str, tag: str | None = None):
        self.uri, self.tag = uri, tag
        self._upload = None
        if not is_remote(uri):
            self.tmp = _temp_name(uri, tag)
            self.file = open(self.tmp, "wb")
            return
        client = s3_client(uri)
        if client is not None:
            self.file = self._upload = _S3Upload(client, uri)
        else:
            self.file = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, prefix="trajshards-")

    def commit(self) -> None:
        if not is_remote(self.uri):
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.uri)
        elif self._upload is not None:
            self._upload.commit()
        else:
            try:
                self.file.seek(0)
                _upload_via_temp(self.uri, self.file, self.tag)
            finally:
                self.file.close()

    def abort(self) -> None:
        if not is_remote(self.uri):
            try:
                self.file.close()
            finally:
                if os.path.exists(self.tmp):
                    os.remove(self.tmp)
        elif self._upload is not None:
            self._upload.abort()
        else:
            self.file.close()


# ---------------------------------------------------------------------------------------------- conditional writes
def put_if_absent(uri: str, data: bytes) -> str | bool | None:
    """Create ``uri`` only if no object is there (S3 ``If-None-Match: *``): its ETag when
    created, False when one exists, None when the store offers no conditional write here."""
    client = s3_client(uri) if is_remote(uri) else None
    if client is None:
        return None
    bucket, key = _bucket_key(uri)
    try:
        return client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")["ETag"]
    except Exception as e:  # botocore.exceptions.ClientError
        if _client_error_code(e) in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise


def put_if_match(uri: str, data: bytes, etag: str) -> str | bool | None:
    """Overwrite ``uri`` only if it still has ``etag`` (S3 ``If-Match``): the new ETag, False
    when it changed or is gone, None when unsupported."""
    client = s3_client(uri) if is_remote(uri) else None
    if client is None:
        return None
    bucket, key = _bucket_key(uri)
    try:
        return client.put_object(Bucket=bucket, Key=key, Body=data, IfMatch=etag)["ETag"]
    except Exception as e:
        if _client_error_code(e) in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404"):
            return False
        raise


def stat_object(uri: str) -> tuple[bytes, str | None, float] | None:
    """``(content, etag, age in seconds)`` of a small object, or None when missing. With
    boto3 the age is the server's clock minus the object's last-modified time (no clock
    skew between hosts); otherwise this host's clock minus the modification time."""
    client = s3_client(uri) if is_remote(uri) else None
    if client is not None:
        bucket, key = _bucket_key(uri)
        try:
            r = client.get_object(Bucket=bucket, Key=key)
        except Exception as e:
            if _client_error_code(e) in ("NoSuchKey", "404"):
                return None
            raise
        body = r["Body"].read()
        from email.utils import parsedate_to_datetime

        date = r.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        now = parsedate_to_datetime(date).timestamp() if date else time.time()
        return body, r.get("ETag"), now - r["LastModified"].timestamp()
    try:
        body = read_bytes(uri)
    except FileNotFoundError:
        return None
    if not is_remote(uri):
        mtime = os.stat(uri).st_mtime
    else:
        fs, path = resolve(uri)
        info = fs.get_file_info(path)
        mtime = info.mtime.timestamp() if info.mtime is not None else time.time()
    return body, None, time.time() - mtime


def abort_uploads(uri: str) -> int:
    """Abort the incomplete multipart uploads under a location (left by killed writers;
    call only while holding its run lock). Returns how many; 0 where the store does not
    list them (they are then the store's lifecycle rules' business)."""
    client = s3_client(uri) if is_remote(uri) else None
    if client is None:
        return 0
    bucket, prefix = _bucket_key(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    n = 0
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
        for u in page.get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
            n += 1
    return n
