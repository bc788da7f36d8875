#!/usr/bin/env bash
# Issue 15's must-show, end to end: moto's S3 server on loopback, the CLI (started from an empty
# folder) writing the embedded sample to s3://, a SIGKILL mid-run and the resume, the trainers
# reading it back. Needs the dev extra (moto[server], boto3): `make venv-dev`, then
#   bash bench/object_store_demo.sh [--executor local]      (extra args go to `pipeline run`)
set -euo pipefail
WT=$(cd "$(dirname "$0")/.." && pwd); PY=$WT/.venv/bin/python
DEMO=$(mktemp -d /tmp/trajshards-s3demo.XXXX)
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing-secret AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export PYTHONPATH=$WT
PORT=$($PY -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
$PY -m moto.server -H 127.0.0.1 -p $PORT >/dev/null 2>&1 & MOTO=$!
trap "kill $MOTO; rm -rf $DEMO" EXIT
sleep 2
Q="endpoint_override=127.0.0.1:$PORT&scheme=http"
cat > $DEMO/s3.py <<PYEOF
import sys, boto3, hashlib, io, tarfile
c = boto3.client("s3", endpoint_url="http://127.0.0.1:$PORT", region_name="us-east-1")
cmd, *a = sys.argv[1:]
if cmd == "mb": c.create_bucket(Bucket=a[0])
elif cmd == "ls":
    for o in c.list_objects_v2(Bucket=a[0], Prefix=a[1]).get("Contents", []): print(f"  {o['Size']:>9}  {o['Key']}")
    print("  incomplete uploads:", c.list_multipart_uploads(Bucket=a[0]).get("Uploads", []))
elif cmd == "members":  # name -> sha256 of every member of every tar under a prefix
    for o in c.list_objects_v2(Bucket=a[0], Prefix=a[1]).get("Contents", []):
        if o["Key"].endswith(".tar"):
            with tarfile.open(fileobj=io.BytesIO(c.get_object(Bucket=a[0], Key=o["Key"])["Body"].read())) as tf:
                for m in tf: print(o["Key"].split("/")[-1], m.name, hashlib.sha256(tf.extractfile(m).read()).hexdigest()[:16])
PYEOF
cd $DEMO && rm -rf cwd && mkdir cwd && cd cwd
$PY -m pipeline sample --out $DEMO/data >/dev/null
$PY $DEMO/s3.py mb demo
echo "== 1. full run to s3:// (cwd $(pwd))"
$PY -m pipeline run --dataset sample --data $DEMO/data --out "s3://demo/full?$Q" --profile dragnuwa-ld --samples-per-shard 2 "$@" 2>&1 | tail -4
echo "== objects under s3://demo/full:"; $PY $DEMO/s3.py ls demo full/
echo "== local files written in cwd: $(find . | wc -l) entries ($(ls -A | wc -l) names)"
echo "== endpoint/port in any object? $($PY - <<P2
import boto3
c = boto3.client("s3", endpoint_url="http://127.0.0.1:$PORT", region_name="us-east-1")
hits = [o["Key"] for o in c.list_objects_v2(Bucket="demo", Prefix="full/")["Contents"] if b"$PORT" in c.get_object(Bucket="demo", Key=o["Key"])["Body"].read() or b"endpoint_override" in c.get_object(Bucket="demo", Key=o["Key"])["Body"].read()]
print(hits or "none")
P2
)"
echo "== 2. SIGKILL mid-run, then resume"
$PY -m pipeline run --dataset sample --data $DEMO/data --out "s3://demo/killed?$Q" --profile dragnuwa-ld --samples-per-shard 2 "$@" >/dev/null 2>&1 & RUN=$!
while ! $PY $DEMO/s3.py ls demo killed/ | grep "_parts/" > /dev/null; do sleep 0.05; done
kill -9 $RUN; wait $RUN 2>/dev/null || true
echo "-- after SIGKILL:"; $PY $DEMO/s3.py ls demo killed/
$PY -m pipeline run --dataset sample --data $DEMO/data --out "s3://demo/killed?$Q" --profile dragnuwa-ld --samples-per-shard 2 "$@" 2>&1 | tail -3
echo "-- after resume:"; $PY $DEMO/s3.py ls demo killed/
$PY $DEMO/s3.py members demo full/ > $DEMO/full.txt
$PY $DEMO/s3.py members demo killed/ > $DEMO/killed.txt
echo "-- member hashes: $(wc -l < $DEMO/full.txt) (full) vs $(wc -l < $DEMO/killed.txt) (killed+resumed); diff:"; diff $DEMO/full.txt $DEMO/killed.txt && echo "   identical"
echo "== 3. read back"
$PY - <<P3
import torch
from pipeline.train import make_dataset, read_samples
out = "s3://demo/full?$Q"
pat = "s3://demo/full/sample-dragnuwa-ld-{000000..000003}.tar?$Q"
print("read_samples(OUT URI):", sum(1 for _ in read_samples(out)))
print("read_samples(brace):  ", sum(1 for _ in read_samples(pat)))
keys = [k for b in torch.utils.data.DataLoader(make_dataset(pat), batch_size=2, num_workers=2) for k in b["key"]]
print("make_dataset(brace), DataLoader num_workers=2:", len(keys), "samples,", len(set(keys)), "distinct")
keys = [k for b in torch.utils.data.DataLoader(make_dataset(out), batch_size=2, num_workers=2) for k in b["key"]]
print("make_dataset(OUT URI), DataLoader num_workers=2:", len(keys), "samples,", len(set(keys)), "distinct")
P3
