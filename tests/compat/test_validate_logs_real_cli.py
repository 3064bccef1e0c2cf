"""cairn's log files and digests, served by an S3-compatible server, pass the real
`aws cloudtrail validate-logs` (awscli v1), and `cairn validate-logs` prints exactly what the
real CLI prints — untouched and after each kind of tampering.

The files are written by cairn's trail engine into moto's S3 (`cairn bench ingest
--s3-endpoint`). The CloudTrail calls the CLI makes (DescribeTrails, ListPublicKeys) are
answered by a stub built from `cairn list-public-keys`: what is under test here is the bytes of
the files, keys and signatures, and that `cairn validate-logs` runs in the real CLI's
environment (endpoints, credentials, profiles) unchanged.
"""
import base64
import gzip
import json
import os
import subprocess
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest

BUCKET = "cairn-compat-logs"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class CloudTrailStub(BaseHTTPRequestHandler):
    trail = None
    keys = None

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        op = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
        if op == "DescribeTrails":
            out = {"trailList": [self.trail]}
        elif op == "ListPublicKeys":
            s, e = body.get("StartTime", 0), body.get("EndTime", 4e9)
            out = {"PublicKeyList": [k for k in self.keys if k["ValidityStartTime"] <= e and s <= k["ValidityEndTime"]]}
        else:
            self.send_response(400)
            self.end_headers()
            return
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def world(moto, cairn_bin, tmp_path_factory):
    env = {**os.environ, **CREDS}
    s3 = boto3.client("s3", endpoint_url=moto, **{k.lower(): v for k, v in CREDS.items() if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    data = tmp_path_factory.mktemp("cairn")
    out = subprocess.run([cairn_bin, "bench", "ingest", "--data-dir", str(data), "--events", "3000", "--hours", "4",
                          "--s3-endpoint", moto, "--bucket", BUCKET, "--json"], env=env, capture_output=True, text=True, check=True)
    bench = json.loads(out.stdout)
    keys = json.loads(subprocess.run([cairn_bin, "list-public-keys", "--data-dir", str(data), "--region", "us-east-1",
                                      "--start-time", "2000-01-01T00:00:00Z", "--end-time", "2100-01-01T00:00:00Z"],
                                     capture_output=True, text=True, check=True).stdout)["PublicKeyList"]
    arn = bench["trail_arn"]
    CloudTrailStub.trail = {"Name": arn.rsplit("/", 1)[1], "S3BucketName": BUCKET, "TrailARN": arn, "HomeRegion": "us-east-1",
                            "IsMultiRegionTrail": True, "LogFileValidationEnabled": True, "IsOrganizationTrail": False}
    CloudTrailStub.keys = keys
    srv = ThreadingHTTPServer(("127.0.0.1", 0), CloudTrailStub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    keyfile = data / "keys.json"
    keyfile.write_text(json.dumps({"PublicKeyList": keys}))
    end = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    yield {"moto": moto, "s3": s3, "arn": arn, "start": bench["start_time"], "end": end, "keyfile": str(keyfile),
           "ct": f"http://127.0.0.1:{srv.server_address[1]}", "cairn": cairn_bin, "account": arn.split(":")[4]}
    srv.shutdown()


def real_cli(w, aws_bin, *extra, verbose=True):
    env = {**os.environ, **CREDS, "AWS_ENDPOINT_URL_S3": w["moto"], "AWS_ENDPOINT_URL_CLOUDTRAIL": w["ct"]}
    return subprocess.run([aws_bin, "cloudtrail", "validate-logs", "--trail-arn", w["arn"], "--start-time", w["start"],
                           "--end-time", w["end"], *(["--verbose"] if verbose else []), *extra],
                          env=env, capture_output=True, text=True)


def cairn_cli(w, *extra, verbose=True):
    """`cairn validate-logs` in exactly the real CLI's environment: a drop-in replacement."""
    env = {**os.environ, **CREDS, "AWS_ENDPOINT_URL_S3": w["moto"], "AWS_ENDPOINT_URL_CLOUDTRAIL": w["ct"]}
    return subprocess.run([w["cairn"], "validate-logs", "--trail-arn", w["arn"], "--start-time", w["start"], "--end-time", w["end"],
                           *(["--verbose"] if verbose else []), *extra], env=env, capture_output=True, text=True)


def cairn_cli_offline_inputs(w, *extra):
    """The same with the bucket, endpoint and a saved key list given as flags."""
    env = {**os.environ, **CREDS}
    return subprocess.run([w["cairn"], "validate-logs", "--trail-arn", w["arn"], "--start-time", w["start"], "--end-time", w["end"],
                           "--verbose", "--s3-endpoint", w["moto"], "--s3-bucket", BUCKET, "--public-keys", w["keyfile"], *extra],
                          env=env, capture_output=True, text=True)


def keys_of(w, folder):
    p = w["s3"].get_paginator("list_objects")
    return [o["Key"] for page in p.paginate(Bucket=BUCKET, Prefix=f"AWSLogs/{w['account']}/{folder}/us-east-1/") for o in page.get("Contents", [])]


def same_output(w, aws_bin):
    """Byte for byte, verbose or not (the CLI's blank lines differ between the two)."""
    for verbose in (False, True):
        real = real_cli(w, aws_bin, verbose=verbose)
        ours = cairn_cli(w, verbose=verbose)
        assert ours.stdout == real.stdout, f"stdout differs\n--- aws\n{real.stdout}\n--- cairn\n{ours.stdout}"
        assert ours.stderr == real.stderr, f"stderr differs\n--- aws\n{real.stderr!r}\n--- cairn\n{ours.stderr!r}"
        assert ours.returncode == real.returncode
    return real


class Restore:
    """Puts an object back as it was after a tampering test."""

    def __init__(self, w, key):
        self.w, self.key = w, key
        o = w["s3"].get_object(Bucket=BUCKET, Key=key)
        self.body, self.meta = o["Body"].read(), o.get("Metadata", {})

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.w["s3"].put_object(Bucket=BUCKET, Key=self.key, Body=self.body, Metadata=self.meta)


def test_real_cli_validates_every_digest_and_log_file(world, aws_bin):
    r = real_cli(world, aws_bin)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(l for l in r.stdout.splitlines() if "digest files valid" in l)
    valid, total = line.split()[0].split("/")
    assert valid == total and int(total) >= 4, line
    logs = next(l for l in r.stdout.splitlines() if "log files valid" in l)
    assert logs.split()[0].split("/")[0] == logs.split()[0].split("/")[1]
    assert "INVALID" not in r.stdout + r.stderr


def test_cairn_validate_logs_prints_what_the_real_cli_prints(world, aws_bin):
    assert same_output(world, aws_bin).returncode == 0
    flags = cairn_cli_offline_inputs(world)
    assert flags.returncode == 0 and flags.stdout == real_cli(world, aws_bin).stdout, flags.stderr


def test_cairn_validate_logs_reads_a_profile_as_the_cli_does(world, aws_bin, tmp_path):
    """Credentials and region from a named profile, CloudTrail from --endpoint-url, S3 from the
    environment: what the real CLI accepts, cairn accepts, and prints the same."""
    (tmp_path / "credentials").write_text("[audit]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    (tmp_path / "config").write_text("[profile audit]\nregion = us-east-1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"), "AWS_CONFIG_FILE": str(tmp_path / "config"),
                "AWS_ENDPOINT_URL_S3": world["moto"]})
    args = ["validate-logs", "--trail-arn", world["arn"], "--start-time", world["start"], "--end-time", world["end"],
            "--profile", "audit", "--endpoint-url", world["ct"]]
    real = subprocess.run([aws_bin, "cloudtrail", *args], env=env, capture_output=True, text=True)
    ours = subprocess.run([world["cairn"], *args], env=env, capture_output=True, text=True)
    assert real.returncode == 0, real.stderr
    assert (ours.stdout, ours.returncode) == (real.stdout, real.returncode), ours.stderr
    # A profile that does not exist, or no credentials at all, fail as the CLI does: no files read.
    missing = subprocess.run([world["cairn"], *args[:-4], "--profile", "nobody", "--endpoint-url", world["ct"]],
                             env=env, capture_output=True, text=True)
    assert missing.returncode == 255 and "nobody" in missing.stderr, missing.stderr
    bare = {k: v for k, v in env.items() if k not in ("AWS_SHARED_CREDENTIALS_FILE",)}
    bare["AWS_SHARED_CREDENTIALS_FILE"] = "/dev/null"
    none = subprocess.run([world["cairn"], *args[:-4], "--endpoint-url", world["ct"]], env=bare, capture_output=True, text=True)
    assert none.returncode == 255 and "credentials" in none.stderr, none.stderr


def test_modified_log_file(world, aws_bin):
    key = keys_of(world, "CloudTrail")[2]
    with Restore(world, key) as orig:
        raw = gzip.decompress(orig.body).replace(b'"eventName":"', b'"eventName":"X', 1)
        world["s3"].put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(raw))
        r = same_output(world, aws_bin)
        assert r.returncode == 1
        assert f"Log file\ts3://{BUCKET}/{key}\tINVALID: hash value doesn't match" in r.stderr


def test_deleted_log_file(world, aws_bin):
    key = keys_of(world, "CloudTrail")[1]
    with Restore(world, key):
        world["s3"].delete_object(Bucket=BUCKET, Key=key)
        r = same_output(world, aws_bin)
        assert r.returncode == 1
        assert f"Log file\ts3://{BUCKET}/{key}\tINVALID: not found" in r.stderr


def test_deleted_digest(world, aws_bin):
    key = keys_of(world, "CloudTrail-Digest")[1]
    with Restore(world, key):
        world["s3"].delete_object(Bucket=BUCKET, Key=key)
        r = same_output(world, aws_bin)
        assert r.returncode == 1
        assert f"Digest file\ts3://{BUCKET}/{key}\tINVALID: not found" in r.stderr


def test_corrupted_signature(world, aws_bin):
    key = keys_of(world, "CloudTrail-Digest")[2]
    with Restore(world, key) as orig:
        sig = orig.meta["signature"]
        bad = ("0" if sig[0] != "0" else "1") + sig[1:]
        world["s3"].put_object(Bucket=BUCKET, Key=key, Body=orig.body, Metadata={**orig.meta, "signature": bad})
        r = same_output(world, aws_bin)
        assert r.returncode == 1
        assert f"Digest file\ts3://{BUCKET}/{key}\tINVALID: signature verification failed" in r.stderr


def test_public_key_wire_form_is_base64_of_pkcs1_der(world):
    for k in CloudTrailStub.keys:
        der = base64.b64decode(k["Value"])
        assert k["Value"].startswith("MIIBCgKCAQEA") and len(der) == 270
        import hashlib
        assert hashlib.md5(der).hexdigest() == k["Fingerprint"]
