"""`cairn serve` configuration: trails declared in cairn.toml apply idempotently across
restarts, no default credentials exist outside --dev, the root key can come from the
environment, the opt-in LookupEvents extensions, and the delivered files' gzip level."""
import gzip
import json
import subprocess

import pytest
from botocore.exceptions import ClientError

ACCOUNT = "123456789012"


def trail_config(logging):
    return f"""
[[bucket]]
name = "declared-logs"
region = "us-east-1"
[[trail]]
name = "declared-trail"
bucket = "declared-logs"
multi_region = true
log_file_validation = true
logging = {str(logging).lower()}
event_selectors = '[{{"ReadWriteType":"WriteOnly","IncludeManagementEvents":true}}]'
"""


def test_declared_trails_apply_idempotently_across_restarts(cairn_server_factory):
    srv = cairn_server_factory(config=trail_config(True))
    ct = srv.client("cloudtrail")
    t = ct.get_trail(Name="declared-trail")["Trail"]
    assert t["IsMultiRegionTrail"] and t["LogFileValidationEnabled"] and t["HasCustomEventSelectors"]
    assert ct.get_event_selectors(TrailName="declared-trail")["EventSelectors"][0]["ReadWriteType"] == "WriteOnly"
    started = ct.get_trail_status(Name="declared-trail")["StartLoggingTime"]
    srv.restart()
    ct = srv.client("cloudtrail")
    st = ct.get_trail_status(Name="declared-trail")
    assert st["IsLogging"] is True and st["StartLoggingTime"] == started, "an unchanged declaration issues no command"
    (srv.workdir / "cairn.toml").write_text(trail_config(False))
    srv.restart()
    ct = srv.client("cloudtrail")
    assert ct.get_trail_status(Name="declared-trail")["IsLogging"] is False
    # Declared buckets answer GetBucketLocation with their region.
    s3 = srv.client("s3")
    assert s3.get_bucket_location(Bucket="declared-logs")["LocationConstraint"] is None


def test_no_default_credentials_outside_dev_mode(cairn_server_factory):
    dev = cairn_server_factory(dev=True)
    ct = dev.client("cloudtrail", key="test", secret="test")
    assert ct.list_trails()["Trails"] == []
    ident = dev.client("sts", key="test", secret="test").get_caller_identity()
    assert ident["Arn"] == f"arn:aws:iam::{ACCOUNT}:root"
    log = (dev.workdir / "serve.log").read_text()
    assert "development mode" in log.lower()

    prod = cairn_server_factory()
    with pytest.raises(ClientError) as e:
        prod.client("cloudtrail", key="test", secret="test").list_trails()
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_root_access_key_from_the_environment(cairn_server_factory):
    key, secret = "AKIACAIRNAUTOMATION1", "automation-secret-0123456789abcdef"
    srv = cairn_server_factory(init_env={"CAIRN_ROOT_ACCESS_KEY_ID": key, "CAIRN_ROOT_SECRET_ACCESS_KEY": secret})
    assert srv.key == key
    ident = srv.client("sts", key=key, secret=secret).get_caller_identity()
    assert ident["Arn"] == f"arn:aws:iam::{ACCOUNT}:root"
    # The secret is stored sealed, never in clear.
    raw = b"".join(p.read_bytes() for p in srv.data.rglob("*") if p.is_file())
    assert secret.encode() not in raw


def test_lookup_extensions_are_opt_in(cairn_server_factory):
    plain = cairn_server_factory()
    with pytest.raises(ClientError) as e:
        plain.client("cloudtrail").lookup_events(LookupAttributes=[
            {"AttributeKey": "EventName", "AttributeValue": "ListTrails"},
            {"AttributeKey": "Username", "AttributeValue": "root"}])
    assert e.value.response["Error"]["Code"] == "InvalidLookupAttributesException"

    srv = cairn_server_factory(config='lookup_extensions = true\n[[bucket]]\nname = "ext-bucket"\n')
    ct = srv.client("cloudtrail")
    ct.list_trails()
    iam = srv.client("iam")
    iam.create_user(UserName="ext-user")
    k = iam.create_access_key(UserName="ext-user")["AccessKey"]
    iam.put_user_policy(UserName="ext-user", PolicyName="p", PolicyDocument=json.dumps(
        {"Statement": [{"Effect": "Allow", "Action": "cloudtrail:ListTrails", "Resource": "*"}]}))
    srv.client("cloudtrail", key=k["AccessKeyId"], secret=k["SecretAccessKey"]).list_trails()
    both = ct.lookup_events(LookupAttributes=[
        {"AttributeKey": "EventName", "AttributeValue": "ListTrails"},
        {"AttributeKey": "Username", "AttributeValue": "ext-user"}])["Events"]
    assert len(both) == 1 and both[0]["Username"] == "ext-user"
    srv.client("s3").put_object(Bucket="ext-bucket", Key="a.txt", Body=b"x")
    data = ct.lookup_events(EventCategory="data")["Events"]
    assert [e["EventName"] for e in data] == ["PutObject"]
    mgmt = ct.lookup_events()["Events"]
    assert "PutObject" not in {e["EventName"] for e in mgmt}


def test_sigterm_finishes_the_request_in_flight_then_exits_zero(cairn_server_factory):
    """SIGTERM while an upload is half sent: the server stops accepting, finishes that request
    (the object is stored and acknowledged), flushes and exits 0."""
    import signal
    import socket
    import time
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    srv = cairn_server_factory(config='[[bucket]]\nname = "inflight-bucket"\n')
    body = b"x" * 200_000
    req = AWSRequest(method="PUT", url=f"http://127.0.0.1:{srv.port}/inflight-bucket/obj", data=body)
    S3SigV4Auth(Credentials(srv.key, srv.secret), "s3", "us-east-1").add_auth(req)
    head = f"PUT /inflight-bucket/obj HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in req.headers.items() if k.lower() != "host")
    head += f"Content-Length: {len(body)}\r\n\r\n"
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(head.encode() + body[:1000])
    time.sleep(0.3)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    # New connections are refused while the old one is still served.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
    s.sendall(body[1000:])
    s.settimeout(10)
    resp = s.recv(4096)
    s.close()
    assert resp.startswith(b"HTTP/1.1 200"), resp[:200]
    assert srv.proc.wait(timeout=30) == 0
    # The acknowledged object survives: start again and read it.
    srv.start()
    assert srv.client("s3").get_object(Bucket="inflight-bucket", Key="obj")["Body"].read() == body


def delivered_log_files(srv, bucket):
    s3 = srv.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])
            if "/CloudTrail/" in o["Key"] and o["Key"].endswith(".json.gz")]
    return [s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys]


@pytest.mark.parametrize("level,xfl", [(1, 4), (9, 2)])
def test_log_gzip_level_reaches_the_delivered_files(cairn_server_factory, level, xfl):
    """The configured level compresses the delivered log files: gzip's XFL byte says
    "fastest" (4) for level 1 and "slowest" (2) for level 9."""
    srv = cairn_server_factory(config=f"log_gzip_level = {level}\n" + trail_config(True))
    srv.client("iam").create_user(UserName=f"gz-{level}")
    srv.flush("declared-trail")
    files = delivered_log_files(srv, "declared-logs")
    assert files, "a log file was delivered"
    for f in files:
        assert f[:3] == b"\x1f\x8b\x08" and f[8] == xfl, f[:10]
    assert any(f'"gz-{level}"'.encode() in gzip.decompress(f) for f in files)


def test_a_log_gzip_level_outside_1_to_9_stops_the_start(cairn_bin, tmp_path):
    """A level outside 1–9 is refused at start, with a message naming the setting."""
    data = tmp_path / "data"
    subprocess.run([cairn_bin, "init", "--data-dir", str(data), "--json"], check=True, capture_output=True)
    cfg = tmp_path / "cairn.toml"
    for bad in ("0", "10"):
        cfg.write_text(f"log_gzip_level = {bad}\n")
        r = subprocess.run([cairn_bin, "serve", "--data-dir", str(data), "--config", str(cfg),
                            "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "log_gzip_level" in r.stderr, r.stderr
