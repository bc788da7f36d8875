"""pipeline.storage against a real S3-protocol server on loopback (moto, tests/pipeline/s3_util):
atomic writes (one PutObject, a multipart upload for large objects, aborted on failure),
the pyarrow-only fallback (temporary object + move), conditional writes, listing and
removal, the query kept on joined paths and stripped from what is shown, and remote
``expand_urls``."""
import io
import os
import subprocess
import sys

import pytest

from pipeline import storage
from pipeline.storage import join
from pipeline.shards import TarShardWriter, expand_urls, remove_temp_files


def test_local_writes_keep_the_temp_then_rename_convention(tmp_path, monkeypatch):
    seen = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (seen.append((os.path.basename(a), os.path.basename(b))), real(a, b)))
    storage.put_bytes(str(tmp_path / "x.json"), b"{}", tag="7-abc")
    f = storage.AtomicFile(str(tmp_path / "y.tar"), "9-def")
    f.file.write(b"data")
    assert os.path.exists(tmp_path / ".y.tar.9-def.tmp") and not os.path.exists(tmp_path / "y.tar")
    f.commit()
    assert seen == [(".x.json.7-abc.tmp", "x.json"), (".y.tar.9-def.tmp", "y.tar")]
    g = storage.AtomicFile(str(tmp_path / "z.tar"))
    g.file.write(b"partial")
    g.abort()
    assert sorted(os.listdir(tmp_path)) == ["x.json", "y.tar"]


def test_redact_strips_queries_and_user_info():
    uri = "s3://bucket/run?endpoint_override=10.0.0.1:9000&scheme=http"
    assert storage.redact(uri) == "s3://bucket/run"
    assert storage.redact("hdfs://user@nn:8020/x") == "hdfs://nn:8020/x"
    assert storage.redact("/local/path") == "/local/path"
    assert storage.redact_text(f"python -m pipeline run --out {uri} --data 's3://b/d?region=x'") == \
        "python -m pipeline run --out s3://bucket/run --data 's3://b/d'"
    assert join(uri, "_parts", "shards") == "s3://bucket/run/_parts/shards?endpoint_override=10.0.0.1:9000&scheme=http"
    assert storage.root(uri) == uri and storage.root("file:///tmp/x") == "/tmp/x"


def test_small_and_multipart_writes_appear_whole(s3, monkeypatch):
    b = s3.bucket()
    storage.put_bytes(s3.uri(b, "p/a.json"), b'{"a": 1}')
    assert s3.get(b, "p/a.json") == b'{"a": 1}'
    monkeypatch.setattr(storage.writes, "PART_BYTES", 5 << 20)  # S3's minimum part size
    data = os.urandom(11 << 20)
    f = storage.AtomicFile(s3.uri(b, "p/big.tar"), "1-abc")
    for i in range(0, len(data), 1 << 20):
        f.file.write(data[i:i + (1 << 20)])
    assert f.file.tell() == len(data)
    assert s3.keys(b) == ["p/a.json"] and s3.uploads(b) == ["p/big.tar"]  # parts sent, nothing visible
    f.commit()
    assert s3.get(b, "p/big.tar") == data and s3.uploads(b) == []


def test_an_aborted_or_failed_write_leaves_no_object(s3, monkeypatch):
    b = s3.bucket()
    monkeypatch.setattr(storage.writes, "PART_BYTES", 5 << 20)
    f = storage.AtomicFile(s3.uri(b, "p/x.tar"))
    f.file.write(os.urandom(6 << 20))
    assert s3.uploads(b) == ["p/x.tar"]
    f.abort()
    assert s3.keys(b) == [] and s3.uploads(b) == []
    # a writer that fails half-way (TarShardWriter.abort, as commit_shard calls it)
    w = TarShardWriter(s3.uri(b, "p"), "pre", 3, tmp_tag="5-fff")
    w.write("k0", {"json": b"{}", "txt": os.urandom(6 << 20)})
    w.write("k1", {"json": b"{}"})
    w.abort()
    assert s3.keys(b) == [] and s3.uploads(b) == []
    # the upload itself failing at completion: aborted, nothing visible
    g = storage.AtomicFile(s3.uri(b, "p/y.tar"))
    g.file.write(os.urandom(6 << 20))
    monkeypatch.setattr(g.file.client, "complete_multipart_upload",
                        lambda **kw: (_ for _ in ()).throw(ConnectionError("network down")))
    with pytest.raises(ConnectionError):
        g.commit()
    assert s3.keys(b) == [] and s3.uploads(b) == []


def test_a_killed_upload_is_cleaned_by_abort_uploads(s3):
    b = s3.bucket()
    s3.client.create_multipart_upload(Bucket=b, Key="run/x-000001.tar")  # a writer killed mid-upload
    s3.client.create_multipart_upload(Bucket=b, Key="other/y.tar")
    assert storage.abort_uploads(s3.uri(b, "run")) == 1
    assert s3.uploads(b) == ["other/y.tar"]


def test_without_boto3_writes_go_through_a_temporary_object(s3, monkeypatch):
    monkeypatch.setenv("TRAJSHARDS_NO_BOTO3", "1")
    b = s3.bucket()
    out = s3.uri(b, "run")
    files = lambda: [k for k in s3.keys(b) if not k.endswith("/")]  # noqa: E731 (pyarrow's folder markers)
    storage.put_bytes(join(out, "a.json"), b"{}", tag="1-aaa")
    w = TarShardWriter(out, "pre", 0, tmp_tag="2-bbb")
    w.write("k0", {"json": b"{}"})
    assert files() == ["run/a.json"]          # the tar is spooled until it is complete
    assert w.close() == ["pre-000000.tar"]
    assert files() == ["run/a.json", "run/pre-000000.tar"]
    assert storage.put_if_absent(join(out, "lease"), b"x") is None  # no conditional writes
    # a temporary object left by a killed writer is removed like a local one
    s3.client.put_object(Bucket=b, Key="run/.pre-000001.tar.9-ccc.tmp", Body=b"partial")
    assert remove_temp_files(out) == [".pre-000001.tar.9-ccc.tmp"]
    assert files() == ["run/a.json", "run/pre-000000.tar"]


def test_conditional_writes_listing_and_removal(s3):
    b = s3.bucket()
    lease = s3.uri(b, "run/.run.lock")
    etag = storage.put_if_absent(lease, b"one")
    assert etag and storage.put_if_absent(lease, b"two") is False
    assert storage.put_if_match(lease, b"three", '"not-it"') is False
    assert storage.put_if_match(lease, b"four", etag)
    body, _, age = storage.stat_object(lease)
    assert body == b"four" and -5 < age < 60
    for k in ("run/_parts/shards/000001/000000002.part", "run/_parts/shards/000001/000000003.part", "run/x.tar"):
        s3.client.put_object(Bucket=b, Key=k, Body=b"x")
    assert sorted(storage.listdir(s3.uri(b, "run"))) == [".run.lock", "_parts", "x.tar"]
    assert sorted(storage.listdir(s3.uri(b, "run/_parts/shards/000001"))) == ["000000002.part", "000000003.part"]
    assert storage.listdir(s3.uri(b, "missing")) == []
    storage.remove_tree(s3.uri(b, "run/_parts/shards/000001"))
    assert storage.remove(s3.uri(b, "run/x.tar")) and not storage.remove(s3.uri(b, "run/x.tar"))
    assert s3.keys(b) == ["run/.run.lock"]  # no folder marker objects left behind


def test_expand_urls_and_cat_on_object_storage(s3):
    b = s3.bucket()
    out = s3.uri(b, "run")
    for i in range(3):
        storage.put_bytes(join(out, f"p-{i:06d}.tar"), f"tar {i}".encode())
    assert expand_urls(out) == [join(out, f"p-{i:06d}.tar") for i in range(3)]  # no index: listed
    storage.put_bytes(join(out, "index.json"), b'{"shards": [{"url": "p-000001.tar", "samples": 1}]}')
    assert expand_urls(out) == [join(out, "p-000001.tar")]
    pattern = f"s3://{b}/run/p-{{000000..000002}}.tar?{s3.query}"
    assert expand_urls(pattern) == [join(out, f"p-{i:06d}.tar") for i in range(3)]
    cat = subprocess.run([sys.executable, "-m", "pipeline.storage", "cat", join(out, "p-000002.tar")],
                         capture_output=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert cat.returncode == 0 and cat.stdout == b"tar 2", cat.stderr
