"""Running out of disk (issue 16): `cairn serve` with its data directory on a small tmpfs,
a trail selecting the bucket's data events, then 4 MiB PUTs and 5 MiB multipart parts until
the disk reserve is reached.

- every refused write is a 503 (`SlowDown`, with `Retry-After`), never a 500, and changes
  nothing; reads, deletes and aborts keep working at the reserve;
- the metrics endpoint shows the free space, the reserve and that it was reached; the log
  says once that the reserve was reached and once that it was left;
- once space is freed, writes resume without a restart;
- every delivered PutObject / UploadPart event matches what happened: a success for each
  acknowledged write, `errorCode: SlowDown` for each refused one, and the objects in the
  bucket are exactly the acknowledged, undeleted ones.

The filesystem is mounted by the test (it needs root); under CI=true it fails rather than
skips when it cannot.
"""
import gzip
import json
import os
import subprocess
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import CairnServer

MIB = 1 << 20
FS_MIB = 112
RESERVE_MIB = 24
BUCKET = "filled"
LOGS = "trail-logs"
TRAIL = "disk-trail"

CONFIG = f"""
disk_reserve = "{RESERVE_MIB}MiB"
metrics_public = true

[[bucket]]
name = "{BUCKET}"

[[bucket]]
name = "{LOGS}"

[[trail]]
name = "{TRAIL}"
bucket = "{LOGS}"
logging = true
event_selectors = '[{{"ReadWriteType":"All","IncludeManagementEvents":true,"DataResources":[{{"Type":"AWS::S3::Object","Values":["arn:aws:s3:::{BUCKET}/"]}}]}}]'
"""


def mount_tmpfs(d, mib):
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0700", "cairn-disk-test", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        why = f"cannot mount a {mib} MiB tmpfs (this test needs root): {r.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="module")
def small_fs(tmp_path_factory):
    d = tmp_path_factory.mktemp("small-fs")
    mount_tmpfs(d, FS_MIB)
    yield d
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


@pytest.fixture(scope="module")
def srv(cairn_bin, small_fs):
    s = CairnServer(cairn_bin, small_fs, config=CONFIG, delivery="1s")
    yield s
    s.stop()


def s3(srv):
    # No retries: every answer is seen as sent.
    return boto3.client("s3", endpoint_url=srv.endpoint, region_name="us-east-1",
                        aws_access_key_id=srv.key, aws_secret_access_key=srv.secret,
                        config=Config(retries={"total_max_attempts": 1}, read_timeout=30))


def free_mib(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / MIB


def metrics(srv):
    text = urllib.request.urlopen(f"{srv.endpoint}/_cairn/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("cairn_disk_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def refused(e):
    """A refusal for want of space: 503 SlowDown with a retry hint, nothing else."""
    meta = e.response["ResponseMetadata"]
    assert meta["HTTPStatusCode"] == 503, e.response
    assert e.response["Error"]["Code"] == "SlowDown", e.response
    assert "reserve" in e.response["Error"]["Message"], e.response
    assert meta["HTTPHeaders"].get("retry-after") == "1", meta["HTTPHeaders"]


def delivered(srv):
    c = s3(srv)
    recs = []
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=LOGS):
        for o in page.get("Contents", []):
            if "/CloudTrail/" in o["Key"]:
                body = c.get_object(Bucket=LOGS, Key=o["Key"])["Body"].read()
                recs += json.loads(gzip.decompress(body))["Records"]
    return recs


def test_full_disk_refuses_growth_with_503_keeps_reads_and_deletes_and_recovers(srv, small_fs):
    c = s3(srv)
    body = os.urandom(4 * MIB)
    part = os.urandom(5 * MIB)
    upload = c.create_multipart_upload(Bucket=BUCKET, Key="big")["UploadId"]
    acked, refused_keys = [], []
    parts, refused_parts = [], 0
    i = 0
    # Fill with PUTs and parts in turn until both are refused (the filesystem is 112 MiB: at
    # most ~25 writes fit).
    while i < 60:
        key = f"obj-{i:03d}"
        try:
            c.put_object(Bucket=BUCKET, Key=key, Body=body)
            acked.append(key)
        except ClientError as e:
            refused(e)
            refused_keys.append(key)
        n = len(parts) + refused_parts + 1
        try:
            r = c.upload_part(Bucket=BUCKET, Key="big", UploadId=upload, PartNumber=n, Body=part)
            parts.append({"PartNumber": n, "ETag": r["ETag"]})
        except ClientError as e:
            refused(e)
            refused_parts += 1
        i += 1
        if len(refused_keys) >= 3 and refused_parts >= 2:
            break
    assert acked and parts, "nothing fitted before the reserve"
    assert len(refused_keys) >= 3 and refused_parts >= 2, (acked, refused_keys, parts, refused_parts)
    # The reserve held: what cairn keeps free was not written over.
    assert free_mib(small_fs) > RESERVE_MIB - 5, free_mib(small_fs)

    m = metrics(srv)
    assert m["cairn_disk_reserve_reached"] == 1, m
    assert m["cairn_disk_reserve_bytes"] == RESERVE_MIB * MIB, m
    # Refused once the next write (at most 5 MiB) would not fit above the reserve.
    assert 0 < m["cairn_disk_free_bytes"] < (RESERVE_MIB + 5) * MIB, m
    assert m["cairn_disk_refused_requests"] >= len(refused_keys) + refused_parts, m

    # Other writes that would grow the data are refused too; a new upload cannot start.
    with pytest.raises(ClientError) as e:
        c.create_multipart_upload(Bucket=BUCKET, Key="another")
    refused(e.value)
    with pytest.raises(ClientError) as e:
        c.copy_object(Bucket=BUCKET, Key="copy", CopySource={"Bucket": BUCKET, "Key": acked[0]})
    refused(e.value)
    ct = boto3.client("cloudtrail", endpoint_url=srv.endpoint, region_name="us-east-1",
                      aws_access_key_id=srv.key, aws_secret_access_key=srv.secret,
                      config=Config(retries={"total_max_attempts": 1}))
    with pytest.raises(ClientError) as e:
        ct.create_trail(Name="one-more", S3BucketName=LOGS)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert e.value.response["Error"]["Code"] == "ServiceUnavailable"

    # Reads keep working at the reserve.
    assert c.get_object(Bucket=BUCKET, Key=acked[0])["Body"].read() == body
    listed = [o["Key"] for o in c.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert sorted(listed) == sorted(acked)
    assert ct.get_trail_status(Name=TRAIL)["IsLogging"]
    for key in refused_keys:
        with pytest.raises(ClientError) as e:
            c.head_object(Bucket=BUCKET, Key=key)
        assert e.value.response["Error"]["Code"] == "404"

    # Deletes and aborts work at the reserve, and free the space: writes resume, no restart.
    deleted = acked[: len(acked) // 2 + 1]
    c.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in deleted[1:]]})
    c.delete_object(Bucket=BUCKET, Key=deleted[0])
    c.abort_multipart_upload(Bucket=BUCKET, Key="big", UploadId=upload)
    assert free_mib(small_fs) > RESERVE_MIB + 8, free_mib(small_fs)
    c.put_object(Bucket=BUCKET, Key="after", Body=body)
    acked.append("after")
    assert c.get_object(Bucket=BUCKET, Key="after")["Body"].read() == body
    assert metrics(srv)["cairn_disk_reserve_reached"] == 0

    # The trail tells what happened, request by request.
    srv.flush(TRAIL)
    recs = [r for r in delivered(srv) if r.get("eventSource") == "s3.amazonaws.com"]
    puts = {}
    for r in recs:
        if r["eventName"] == "PutObject" and r["requestParameters"].get("bucketName") == BUCKET:
            puts.setdefault(r["requestParameters"]["key"], []).append(r.get("errorCode"))
    for key in acked:
        assert puts.get(key) == [None], (key, puts.get(key))
    for key in refused_keys:
        assert puts.get(key) == ["SlowDown"], (key, puts.get(key))
    part_events = [r.get("errorCode") for r in recs if r["eventName"] == "UploadPart"]
    assert part_events.count(None) == len(parts), part_events
    assert part_events.count("SlowDown") == refused_parts, part_events
    # The bucket holds exactly the acknowledged writes that were not deleted.
    now = sorted(o["Key"] for o in c.list_objects_v2(Bucket=BUCKET).get("Contents", []))
    assert now == sorted(k for k in acked if k not in deleted)

    # The log says once that the reserve was reached and once that it was left.
    log = (srv.workdir / "serve.log").read_text()
    assert log.count("disk reserve reached") == 1, log[-3000:]
    assert log.count("disk reserve left") == 1, log[-3000:]
    assert "internal error" not in log and "panicked" not in log


def test_without_a_reserve_a_full_disk_is_still_a_retryable_503_and_recovers(cairn_bin, tmp_path):
    """The reserve off (`--disk-reserve 0`): the disk really fills. Writes then fail inside
    the store (ENOSPC), and still answer a retryable 503, never a 500; deletes work and free
    the space; writes resume without a restart."""
    mount_tmpfs(tmp_path, 48)
    try:
        s = CairnServer(cairn_bin, tmp_path, config=f'[[bucket]]\nname = "{BUCKET}"\n', extra=["--disk-reserve", "0"])
        try:
            c = s3(s)
            body = os.urandom(4 * MIB)
            acked, failed = [], []
            for i in range(16):
                try:
                    c.put_object(Bucket=BUCKET, Key=f"k{i}", Body=body)
                    acked.append(f"k{i}")
                except ClientError as e:
                    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 503, e.response
                    assert e.response["Error"]["Code"] in ("SlowDown", "ServiceUnavailable"), e.response
                    failed.append(f"k{i}")
            assert acked and failed, (acked, failed)
            listed = sorted(o["Key"] for o in c.list_objects_v2(Bucket=BUCKET)["Contents"])
            assert listed == sorted(acked)
            for k in acked[:3]:
                c.delete_object(Bucket=BUCKET, Key=k)
            c.put_object(Bucket=BUCKET, Key="again", Body=body)
            assert c.get_object(Bucket=BUCKET, Key="again")["Body"].read() == body
        finally:
            s.stop()
        log = (tmp_path / "serve.log").read_text()
        assert "internal error" not in log and "panicked" not in log, log[-3000:]
        assert "for want of disk space" in log
    finally:
        subprocess.run(["umount", "-l", str(tmp_path)], capture_output=True)


def test_a_body_of_undeclared_size_stops_at_the_reserve(cairn_bin, tmp_path):
    """A PUT with `Transfer-Encoding: chunked` and no length sends 64 MiB to a volume with
    ~45 MiB above the reserve; a check made only at the start would let it through (and
    so would one for many bodies admitted at once). The body is written in batches, each
    checked against the reserve: it is refused with 503 SlowDown when the volume reaches the
    reserve, its staged file is removed, and the reserve was not eaten."""
    from s3raw import send

    mount_tmpfs(tmp_path, 96)
    try:
        s = CairnServer(cairn_bin, tmp_path, config=f'disk_reserve = "{RESERVE_MIB}MiB"\n[[bucket]]\nname = "{BUCKET}"\n')
        try:
            body = os.urandom(64 * MIB)
            free_before = free_mib(tmp_path)
            assert RESERVE_MIB + 30 < free_before < RESERVE_MIB + 64, free_before
            (status, headers, text), _ = send(s, "PUT", f"/{BUCKET}/undeclared", body=body,
                                              payload="UNSIGNED-PAYLOAD", chunked=True)
            assert status == 503, text
            assert b"<Code>SlowDown</Code>" in text and b"reserve" in text, text
            assert headers.get("retry-after") == "1"
            # Nothing of it stays: the staged body is gone (the batch being written when the
            # reserve was reached finishes first) and the space is back.
            deadline = time.time() + 10
            while free_mib(tmp_path) < free_before - 2 and time.time() < deadline:
                time.sleep(0.1)
            assert free_mib(tmp_path) > free_before - 2, (free_before, free_mib(tmp_path))
            c = s3(s)
            with pytest.raises(ClientError):
                c.head_object(Bucket=BUCKET, Key="undeclared")
            # Space is back above the reserve's margin: writes go on.
            c.put_object(Bucket=BUCKET, Key="after", Body=b"small")
            log = (tmp_path / "serve.log").read_text()
            assert log.count("disk reserve reached") == 1 and log.count("disk reserve left") == 1, log[-2000:]
        finally:
            s.stop()
    finally:
        subprocess.run(["umount", "-l", str(tmp_path)], capture_output=True)


def test_sigkill_at_the_reserve_loses_nothing_and_every_outcome_matches_the_store(cairn_bin, tmp_path):
    """The crash test's disk-full phase: writers PUT 1 MiB objects into a small volume kept
    at its reserve (a deleter frees a little at a time), while `cairn serve` is SIGKILLed
    at random moments. Afterwards: every acknowledged PUT reads back and every acknowledged
    DELETE stayed deleted; every request the client saw answered is delivered exactly once
    with the outcome it was answered with (no errorCode for a 2xx, SlowDown for a refusal);
    no request is delivered twice; and the store agrees with the events: an object exists
    if and only if a PUT of it is on record as a success (or as an unanswered request whose
    outcome a crash left unknown) and no later DELETE of it succeeded."""
    import hashlib
    import random
    import threading

    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

    mount_tmpfs(tmp_path, 96)
    rng = random.Random(1616)
    try:
        s = CairnServer(cairn_bin, tmp_path, config=CONFIG, delivery="1s")
        ops = []          # [kind, key, outcome, request id, sha]
        lock = threading.Lock()

        def client():
            return boto3.client("s3", endpoint_url=s.endpoint, region_name="us-east-1",
                                aws_access_key_id=s.key, aws_secret_access_key=s.secret,
                                config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=15))

        def attempt(entry, call):
            try:
                r = call()
                entry[2], entry[3] = "acked", r["ResponseMetadata"]["RequestId"]
            except ClientError as e:
                meta = e.response["ResponseMetadata"]
                assert meta["HTTPStatusCode"] == 503 and e.response["Error"]["Code"] == "SlowDown", e.response
                entry[2], entry[3] = "refused", meta.get("RequestId")
            except (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ConnectionError, OSError):
                entry[2] = "unanswered"

        def writer(wid, stop):
            c, n = client(), 0
            while not stop.is_set():
                n += 1
                body = os.urandom(MIB)
                entry = ["put", f"r{round_no}-w{wid}-{n}", None, None, hashlib.sha256(body).hexdigest()]
                with lock:
                    ops.append(entry)
                attempt(entry, lambda: c.put_object(Bucket=BUCKET, Key=entry[1], Body=body))
                if entry[2] != "acked":
                    time.sleep(0.05)

        def deleter(stop):
            c = client()
            while not stop.is_set():
                time.sleep(0.15)
                with lock:
                    deleted = {o[1] for o in ops if o[0] == "delete"}
                    live = [o[1] for o in ops if o[0] == "put" and o[2] == "acked" and o[1] not in deleted]
                if not live:
                    continue
                entry = ["delete", live[0], None, None, None]
                with lock:
                    ops.append(entry)
                attempt(entry, lambda: c.delete_object(Bucket=BUCKET, Key=entry[1]))

        for round_no in range(5):
            stop = threading.Event()
            threads = [threading.Thread(target=writer, args=(w, stop)) for w in range(3)]
            threads.append(threading.Thread(target=deleter, args=(stop,)))
            for t in threads:
                t.start()
            time.sleep(1.5 + rng.random() * 2.0)
            s.proc.kill()
            s.proc.wait()
            stop.set()
            for t in threads:
                t.join()
            s.log.close()
            s.start()
        from collections import Counter
        print("disk-full crash phase:", Counter((o[0], o[2]) for o in ops))
        assert any(o[2] == "refused" for o in ops), "the volume never reached its reserve"
        assert sum(o[2] == "acked" for o in ops if o[0] == "put") > 20

        c = client()
        present = {o["Key"] for p in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
                   for o in p.get("Contents", [])}
        deleted_acked = {o[1] for o in ops if o[0] == "delete" and o[2] == "acked"}
        deleted_maybe = {o[1] for o in ops if o[0] == "delete" and o[2] == "unanswered"}
        for kind, key, outcome, _, sha in ops:
            if kind == "put" and outcome == "acked" and key not in deleted_acked | deleted_maybe:
                assert key in present, f"acknowledged PUT {key} lost"
                got = hashlib.sha256(c.get_object(Bucket=BUCKET, Key=key)["Body"].read()).hexdigest()
                assert got == sha, f"{key} read back different bytes"
            if kind == "put" and outcome == "refused":
                assert key not in present, f"refused PUT {key} stored"
        for key in deleted_acked:
            assert key not in present, f"acknowledged DELETE of {key} undone"

        s.flush(TRAIL)
        recs = [r for r in delivered(s) if r.get("eventSource") == "s3.amazonaws.com"
                and r["eventName"] in ("PutObject", "DeleteObject")
                and (r.get("requestParameters") or {}).get("bucketName") == BUCKET]
        by_id = {}
        for r in recs:
            by_id.setdefault(r["requestID"], []).append(r)
        dups = {k: len(v) for k, v in by_id.items() if len(v) > 1}
        assert not dups, f"delivered more than once: {dups}"
        for kind, key, outcome, rid, _ in ops:
            if outcome in ("acked", "refused"):
                assert rid in by_id, f"{kind} {key} ({outcome}) not delivered"
                rec = by_id[rid][0]
                assert rec["requestParameters"]["key"] == key
                assert rec.get("errorCode") == (None if outcome == "acked" else "SlowDown"), rec
        # The store agrees with the events.
        unanswered_puts = {o[1] for o in ops if o[0] == "put" and o[2] == "unanswered"}
        ok_put = {r["requestParameters"]["key"] for r in recs if r["eventName"] == "PutObject" and not r.get("errorCode")}
        unknown_put = {r["requestParameters"]["key"] for r in recs if r["eventName"] == "PutObject"
                       and r.get("errorCode") == "ServiceUnavailable"}
        ok_del = {r["requestParameters"]["key"] for r in recs if r["eventName"] == "DeleteObject"
                  and r.get("errorCode") in (None, "ServiceUnavailable")}
        for key in present:
            assert key in ok_put or (key in unknown_put and key in unanswered_puts), \
                f"{key} is stored but no PUT of it is on record as a success"
        for key in ok_put - ok_del:
            assert key in present, f"{key}: PUT on record as a success, object absent, no DELETE on record"
        s.stop()
    finally:
        subprocess.run(["umount", "-l", str(tmp_path)], capture_output=True)
