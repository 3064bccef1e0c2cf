"""The seed guide's Verification section, verbatim, with the real `aws` CLI (awscli v1)
pointed at a running cairn with AWS_ENDPOINT_URL — trail status, the log listing, event
lookup, and validate-logs over at least three digests, untouched and after tampering."""
import gzip
import json
import re
import subprocess
import time
from datetime import datetime, timezone

import pytest

ACCOUNT = "123456789012"
LOGS = "acme-artifacts-cloudtrail-logs-3f9a"
ARTIFACTS = "acme-artifacts"
TRAIL = "acme-audit-trail"
ARN = f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/{TRAIL}"

CONFIG = f"""
[[bucket]]
name = "{LOGS}"
[[bucket]]
name = "{ARTIFACTS}"
"""

SELECTORS = json.dumps([
    {"ReadWriteType": "All", "IncludeManagementEvents": True,
     "DataResources": [{"Type": "AWS::S3::Object", "Values": [f"arn:aws:s3:::{ARTIFACTS}/"]}]},
    {"ReadWriteType": "All", "IncludeManagementEvents": True,
     "DataResources": [{"Type": "AWS::DynamoDB::Table", "Values": [f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/acme-packages"]}]},
])


def now_iso():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def seed(cairn_server_factory, aws_bin, tmp_path_factory):
    srv = cairn_server_factory(config=CONFIG, delivery="1s", digest="3s")
    start = now_iso()
    aws = lambda *a, **k: srv.aws(aws_bin, *a, **k)
    aws("cloudtrail", "create-trail", "--name", TRAIL, "--s3-bucket-name", LOGS, "--is-multi-region-trail",
        "--include-global-service-events", "--enable-log-file-validation")
    aws("cloudtrail", "put-event-selectors", "--trail-name", TRAIL, "--event-selectors", SELECTORS)
    aws("cloudtrail", "start-logging", "--name", TRAIL)
    # Activity: a package upload and download (data events), a global-service call.
    pkg = tmp_path_factory.mktemp("pkg") / "pkg-1.0.tgz"
    pkg.write_bytes(b"package bytes" * 100)
    aws("s3api", "put-object", "--bucket", ARTIFACTS, "--key", "packages/pkg-1.0.tgz", "--body", str(pkg))
    aws("s3api", "get-object", "--bucket", ARTIFACTS, "--key", "packages/pkg-1.0.tgz", str(pkg) + ".down")
    aws("iam", "create-user", "--user-name", "release-bot")
    # At least three digest windows close, each after files were delivered.
    for _ in range(3):
        time.sleep(1.2)
        srv.flush(TRAIL)
    end = now_iso()
    yield {"srv": srv, "aws": aws, "start": start, "end": end}


def test_get_trail_status_shows_logging_and_delivery_times(seed):
    r = seed["aws"]("cloudtrail", "get-trail-status", "--name", TRAIL)
    st = json.loads(r.stdout)
    assert st["IsLogging"] is True
    for k in ["LatestDeliveryTime", "StartLoggingTime", "LatestDigestDeliveryTime"]:
        assert isinstance(st[k], (int, float)) and st[k] > 1.7e9, (k, st)
    assert "LatestDeliveryError" not in st and "LatestDigestDeliveryError" not in st


def test_aws_s3_ls_lists_the_log_files(seed):
    r = seed["aws"]("s3", "ls", f"s3://{LOGS}/AWSLogs/{ACCOUNT}/CloudTrail/", "--recursive")
    keys = [l.split()[-1] for l in r.stdout.splitlines() if l.strip()]
    assert keys, r.stdout
    pat = re.compile(rf"AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/\d{{4}}/\d\d/\d\d/{ACCOUNT}_CloudTrail_us-east-1_\d{{8}}T\d{{4}}Z_\w+\.json\.gz$")
    assert all(pat.match(k) for k in keys), keys


def test_lookup_events_finds_the_event_by_name(seed):
    r = seed["aws"]("cloudtrail", "lookup-events", "--lookup-attributes",
                    "AttributeKey=EventName,AttributeValue=CreateTrail", "--max-results", "10")
    events = json.loads(r.stdout)["Events"]
    assert len(events) == 1
    ev = events[0]
    assert ev["EventName"] == "CreateTrail" and ev["Username"] == "root" and ev["ReadOnly"] == "false"
    rec = json.loads(ev["CloudTrailEvent"])
    assert rec["requestParameters"]["name"] == TRAIL
    assert rec["userIdentity"]["type"] == "Root" and rec["userIdentity"]["accessKeyId"] == seed["srv"].key
    # The seed's own example looks up PutObject: a data event, which AWS's event history never
    # holds. cairn answers as AWS does: the command succeeds with no events.
    r = seed["aws"]("cloudtrail", "lookup-events", "--lookup-attributes",
                    "AttributeKey=EventName,AttributeValue=PutObject", "--max-results", "10")
    assert json.loads(r.stdout)["Events"] == []


def delivered_records(seed):
    s3 = seed["srv"].client("s3")
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=LOGS, Prefix=f"AWSLogs/{ACCOUNT}/CloudTrail/"):
        for o in page.get("Contents", []):
            body = s3.get_object(Bucket=LOGS, Key=o["Key"])["Body"].read()
            out.extend(json.loads(gzip.decompress(body))["Records"])
    return out


def test_data_events_of_the_selected_bucket_and_global_events_are_delivered(seed):
    recs = delivered_records(seed)
    puts = [r for r in recs if r["eventName"] == "PutObject"]
    assert [r["requestParameters"]["bucketName"] for r in puts] == [ARTIFACTS]
    p = puts[0]
    assert p["eventCategory"] == "Data" and p["managementEvent"] is False and p["readOnly"] is False
    assert {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{ARTIFACTS}/packages/pkg-1.0.tgz"} in p["resources"]
    gets = [r for r in recs if r["eventName"] == "GetObject"]
    assert gets and gets[0]["readOnly"] is True
    user = [r for r in recs if r["eventName"] == "CreateUser"]
    assert user and user[0]["awsRegion"] == "us-east-1" and user[0]["eventSource"] == "iam.amazonaws.com"
    # Listing the log bucket (a data event on an unselected bucket) is not delivered.
    assert not [r for r in recs if r["eventName"] == "ListObjects" and r["requestParameters"]["bucketName"] == LOGS]


def validate(seed, aws_bin, *extra):
    srv = seed["srv"]
    return subprocess.run([aws_bin, "cloudtrail", "validate-logs", "--trail-arn", ARN, "--start-time", seed["start"],
                           "--end-time", seed["end"], "--verbose", *extra], env=srv.env(), capture_output=True, text=True)


def test_validate_logs_finds_every_digest_and_log_file_valid(seed, aws_bin):
    r = validate(seed, aws_bin)
    assert r.returncode == 0, r.stdout + r.stderr
    digests = re.search(r"(\d+)/(\d+) digest files valid", r.stdout)
    logs = re.search(r"(\d+)/(\d+) log files valid", r.stdout)
    assert digests and digests.group(1) == digests.group(2) and int(digests.group(2)) >= 3, r.stdout
    assert logs and logs.group(1) == logs.group(2) and int(logs.group(2)) >= 1, r.stdout
    assert "INVALID" not in r.stdout + r.stderr


def listed(seed, folder):
    s3 = seed["srv"].client("s3")
    keys = []
    for page in s3.get_paginator("list_objects").paginate(Bucket=LOGS, Prefix=f"AWSLogs/{ACCOUNT}/{folder}/us-east-1/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


class Restore:
    def __init__(self, seed, key):
        self.s3, self.key = seed["srv"].client("s3"), key
        o = self.s3.get_object(Bucket=LOGS, Key=key)
        self.body, self.meta = o["Body"].read(), o.get("Metadata", {})

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.s3.put_object(Bucket=LOGS, Key=self.key, Body=self.body, Metadata=self.meta)


def in_range(seed, keys):
    """Keys whose file lies inside the validated window (log files by their minute stamp)."""
    end = seed["end"].replace("-", "").replace(":", "")[:13]
    return [k for k in keys if re.search(r"_(\d{8}T\d{4})", k).group(1) <= end]


def test_modified_log_file_is_reported(seed, aws_bin):
    key = in_range(seed, listed(seed, "CloudTrail"))[0]
    with Restore(seed, key) as orig:
        raw = gzip.decompress(orig.body).replace(b'"eventName":"', b'"eventName":"X', 1)
        seed["srv"].client("s3").put_object(Bucket=LOGS, Key=key, Body=gzip.compress(raw))
        r = validate(seed, aws_bin)
        assert r.returncode == 1
        assert f"Log file\ts3://{LOGS}/{key}\tINVALID: hash value doesn't match" in r.stderr
    assert validate(seed, aws_bin).returncode == 0


def test_deleted_log_file_is_reported(seed, aws_bin):
    key = in_range(seed, listed(seed, "CloudTrail"))[0]
    with Restore(seed, key):
        seed["aws"]("s3", "rm", f"s3://{LOGS}/{key}")
        r = validate(seed, aws_bin)
        assert r.returncode == 1
        assert f"Log file\ts3://{LOGS}/{key}\tINVALID: not found" in r.stderr


def digests_in_window(seed):
    end = seed["end"].replace("-", "").replace(":", "")
    return [k for k in listed(seed, "CloudTrail-Digest") if re.search(r"_(\d{8}T\d{6}Z)\.json\.gz$", k).group(1) <= end]


def test_deleted_digest_is_reported(seed, aws_bin):
    key = digests_in_window(seed)[1]
    with Restore(seed, key):
        seed["srv"].client("s3").delete_object(Bucket=LOGS, Key=key)
        r = validate(seed, aws_bin)
        assert r.returncode == 1
        assert f"Digest file\ts3://{LOGS}/{key}\tINVALID: not found" in r.stderr


def test_corrupted_signature_is_reported(seed, aws_bin):
    key = digests_in_window(seed)[-1]
    with Restore(seed, key) as orig:
        sig = orig.meta["signature"]
        bad = ("0" if sig[0] != "0" else "1") + sig[1:]
        seed["srv"].client("s3").put_object(Bucket=LOGS, Key=key, Body=orig.body, Metadata={**orig.meta, "signature": bad})
        r = validate(seed, aws_bin)
        assert r.returncode == 1
        assert f"Digest file\ts3://{LOGS}/{key}\tINVALID: signature verification failed" in r.stderr


def test_cairn_validate_logs_prints_what_the_real_cli_prints(seed, aws_bin, cairn_bin, tmp_path):
    srv = seed["srv"]
    keys = seed["aws"]("cloudtrail", "list-public-keys", "--start-time", "2000-01-01T00:00:00Z")
    keyfile = tmp_path / "keys.json"
    keyfile.write_text(keys.stdout)
    # Freeze the bucket while the two validators run: the CLI also reads digests written after
    # the end time, and a running trail adds one every few seconds.
    seed["aws"]("cloudtrail", "stop-logging", "--name", TRAIL)
    try:
        real = validate(seed, aws_bin)
        ours = run_cairn_validate(seed, cairn_bin, keyfile)
        drop_in = run_cairn_validate(seed, cairn_bin, None)
    finally:
        seed["aws"]("cloudtrail", "start-logging", "--name", TRAIL)
    assert ours.stdout == real.stdout, f"--- aws\n{real.stdout}\n--- cairn\n{ours.stdout}\n{ours.stderr}"
    assert ours.stderr.strip() == real.stderr.strip()
    assert ours.returncode == real.returncode == 0
    assert (drop_in.stdout, drop_in.returncode) == (real.stdout, 0), drop_in.stderr


def run_cairn_validate(seed, cairn_bin, keyfile):
    srv = seed["srv"]
    if keyfile is None:
        # A drop-in: the same environment and flags as `aws cloudtrail validate-logs`.
        return subprocess.run([cairn_bin, "validate-logs", "--trail-arn", ARN, "--start-time", seed["start"],
                               "--end-time", seed["end"], "--verbose"], env=srv.env(), capture_output=True, text=True)
    return subprocess.run([cairn_bin, "validate-logs", "--trail-arn", ARN, "--start-time", seed["start"], "--end-time", seed["end"],
                           "--verbose", "--s3-endpoint", srv.endpoint, "--s3-bucket", LOGS, "--public-keys", str(keyfile)],
                          env=srv.env(), capture_output=True, text=True)


def test_cairn_status_reads_the_running_server(seed, cairn_bin):
    srv = seed["srv"]
    r = subprocess.run([cairn_bin, "status", "--data-dir", str(srv.data), "--endpoint", srv.endpoint, "--json"],
                       env=srv.env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [t["Name"] for t in rows] == [TRAIL] and rows[0]["IsLogging"] is True
    table = subprocess.run([cairn_bin, "status", "--data-dir", str(srv.data), "--endpoint", srv.endpoint],
                           env=srv.env(), capture_output=True, text=True)
    assert table.returncode == 0 and TRAIL in table.stdout and "LATEST DELIVERY" in table.stdout
