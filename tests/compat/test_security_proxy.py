"""The proxy authorizes exactly what it forwards (issue "Security first", items 6 and 9):
DeleteObjects key by key, a copy source forwarded as it was authorized, the permissions
ACL/tagging/lock/bypass headers need; and a write reaches the upstream only once its record is
durable — a crash while the upstream has it leaves a record saying the outcome is unknown,
never a success and never nothing."""
import gzip
import json
import os
import socket
import threading
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from rawreq import send, signed

ACCOUNT = "123456789012"
UPSTREAM = "sec-upstream"
PROXIED = "sec-proxied"
HANGING = "sec-hanging"
LOGS = "sec-proxy-logs"


class Hanging:
    """An upstream that accepts connections and reads requests but never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        self.conns = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            data = c.recv(65536)
            self.requests.append(data)

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture(scope="module")
def setup(cairn_server_factory, moto):
    direct = boto3.client("s3", endpoint_url=moto, region_name="us-east-1",
                          aws_access_key_id="upstream-key", aws_secret_access_key="upstream-secret")
    direct.create_bucket(Bucket=UPSTREAM)
    hanging = Hanging()
    os.environ["CAIRN_TEST_UPSTREAM_SECRET"] = "upstream-secret"
    selectors = '[{"ReadWriteType":"All","IncludeManagementEvents":true,"DataResources":[{"Type":"AWS::S3::Object","Values":["arn:aws:s3"]}]}]'
    config = f"""
[[bucket]]
name = "{LOGS}"
[[bucket]]
name = "{PROXIED}"
[bucket.proxy]
endpoint = "{moto}"
region = "us-east-1"
bucket = "{UPSTREAM}"
access_key_id = "upstream-key"
secret_access_key_env = "CAIRN_TEST_UPSTREAM_SECRET"
[[bucket]]
name = "{HANGING}"
[bucket.proxy]
endpoint = "http://127.0.0.1:{hanging.port}"
region = "us-east-1"
access_key_id = "upstream-key"
secret_access_key_env = "CAIRN_TEST_UPSTREAM_SECRET"
[[trail]]
name = "sec-proxy-trail"
bucket = "{LOGS}"
logging = true
event_selectors = '{selectors}'
"""
    srv = cairn_server_factory(config=config)
    yield srv, direct, hanging
    hanging.close()


def code(e):
    return e.value.response["Error"]["Code"]


def user(srv, name, statements):
    iam = srv.client("iam")
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))
    k = iam.create_access_key(UserName=name)["AccessKey"]
    return srv.client("s3", key=k["AccessKeyId"], secret=k["SecretAccessKey"]), (k["AccessKeyId"], k["SecretAccessKey"])


def records(srv):
    srv.flush("sec-proxy-trail")
    s3 = srv.client("s3")
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=LOGS, Prefix=f"AWSLogs/{ACCOUNT}/CloudTrail/"):
        for o in page.get("Contents", []):
            out += json.loads(gzip.decompress(s3.get_object(Bucket=LOGS, Key=o["Key"])["Body"].read()))["Records"]
    return out


def test_delete_objects_is_authorized_key_by_key(setup):
    srv, direct, _ = setup
    for k in ["public/a", "secret/b"]:
        direct.put_object(Bucket=UPSTREAM, Key=k, Body=b"x")
    s3, _ = user(srv, "deleter", [{"Effect": "Allow", "Action": "s3:DeleteObject", "Resource": f"arn:aws:s3:::{PROXIED}/public/*"}])
    out = s3.delete_objects(Bucket=PROXIED, Delete={"Objects": [{"Key": "public/a"}, {"Key": "secret/b"}]})
    assert [d["Key"] for d in out.get("Deleted", [])] == ["public/a"]
    assert [(e["Key"], e["Code"]) for e in out.get("Errors", [])] == [("secret/b", "AccessDenied")]
    keys = [o["Key"] for o in direct.list_objects_v2(Bucket=UPSTREAM).get("Contents", [])]
    assert "secret/b" in keys and "public/a" not in keys
    # Nothing allowed: answered here, nothing forwarded.
    out = s3.delete_objects(Bucket=PROXIED, Delete={"Objects": [{"Key": "secret/b"}]})
    assert [(e["Key"], e["Code"]) for e in out["Errors"]] == [("secret/b", "AccessDenied")]
    assert "secret/b" in [o["Key"] for o in direct.list_objects_v2(Bucket=UPSTREAM)["Contents"]]


def test_a_copy_source_is_forwarded_exactly_as_authorized(setup):
    srv, direct, _ = setup
    direct.put_object(Bucket=UPSTREAM, Key="secret", Body=b"the secret")
    direct.put_object(Bucket=UPSTREAM, Key="public/secret", Body=b"public text")
    _, (key, secret) = user(srv, "copier2", [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{PROXIED}/public/*"},
        {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{PROXIED}/dest*"}])
    # The attack: a source whose first slash is encoded, authorized as PROXIED/public/secret.
    h = signed(srv, "s3", "PUT", f"/{PROXIED}/dest", b"", s3=True, key=key, secret=secret,
               headers={"x-amz-copy-source": f"{PROXIED}%2Fpublic/secret"})
    st, _, data = send(srv, "PUT", f"/{PROXIED}/dest", h, b"")
    assert st == 200, data
    assert direct.get_object(Bucket=UPSTREAM, Key="dest")["Body"].read() == b"public text"
    # A source outside what the policy allows is refused before anything is forwarded.
    h = signed(srv, "s3", "PUT", f"/{PROXIED}/dest2", b"", s3=True, key=key, secret=secret,
               headers={"x-amz-copy-source": f"/{PROXIED}/secret"})
    st, _, data = send(srv, "PUT", f"/{PROXIED}/dest2", h, b"")
    assert st == 403 and b"AccessDenied" in data
    with pytest.raises(ClientError):
        direct.head_object(Bucket=UPSTREAM, Key="dest2")


def test_write_headers_need_their_own_permissions_through_the_proxy(setup):
    srv, direct, _ = setup
    s3, _ = user(srv, "plainwriter", [{"Effect": "Allow", "Action": ["s3:PutObject", "s3:DeleteObject"],
                                       "Resource": f"arn:aws:s3:::{PROXIED}/*"}])
    s3.put_object(Bucket=PROXIED, Key="w/plain", Body=b"x")
    for extra in [dict(ACL="public-read"), dict(GrantRead='uri="http://acs.amazonaws.com/groups/global/AllUsers"'),
                  dict(Tagging="a=b"), dict(ObjectLockLegalHoldStatus="ON")]:
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket=PROXIED, Key="w/guarded", Body=b"x", **extra)
        assert code(e) == "AccessDenied", extra
    with pytest.raises(ClientError):
        direct.head_object(Bucket=UPSTREAM, Key="w/guarded")
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket=PROXIED, Key="w/plain", BypassGovernanceRetention=True)
    assert code(e) == "AccessDenied"
    direct.head_object(Bucket=UPSTREAM, Key="w/plain")
    # One operation per request: two sub-resources could be read differently upstream.
    st, _, data = send(srv, "PUT", f"/{PROXIED}/w/plain?acl&tagging",
                       signed(srv, "s3", "PUT", f"/{PROXIED}/w/plain?acl&tagging", b"", s3=True), b"")
    assert st == 400 and b"InvalidRequest" in data


def test_proxied_writes_are_recorded_once_with_their_upstream_outcome(setup):
    srv, direct, _ = setup
    s3 = srv.client("s3")
    rid = s3.put_object(Bucket=PROXIED, Key="once", Body=b"1")["ResponseMetadata"]["RequestId"]
    recs = [r for r in records(srv) if r.get("requestID") == rid]
    assert [r["eventName"] for r in recs] == ["PutObject"] and "errorCode" not in recs[0]
    # An upstream refusal is the record's outcome.
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=PROXIED, Key="copy-of-nothing", CopySource={"Bucket": PROXIED, "Key": "no-such-key"})
    assert code(e) == "NoSuchKey"
    rid = e.value.response["ResponseMetadata"]["RequestId"]
    recs = [r for r in records(srv) if r.get("requestID") == rid]
    assert len(recs) == 1 and recs[0]["errorCode"] == code(e)


def test_a_crash_while_the_upstream_has_a_write_is_recorded_as_an_unknown_outcome(setup):
    srv, _, hanging = setup
    s3 = boto3.client("s3", endpoint_url=srv.endpoint, region_name="us-east-1", aws_access_key_id=srv.key,
                      aws_secret_access_key=srv.secret, config=Config(retries={"max_attempts": 1}, read_timeout=30))
    errors = []

    def put():
        try:
            s3.put_object(Bucket=HANGING, Key="in-flight", Body=b"payload")
        except Exception as e:  # the connection dies with the server
            errors.append(e)

    t = threading.Thread(target=put)
    t.start()
    deadline = time.time() + 10
    while not hanging.requests and time.time() < deadline:
        time.sleep(0.05)
    assert hanging.requests, "the write reached the upstream"
    assert hanging.requests[0].startswith(b"PUT ")
    srv.proc.kill()
    srv.proc.wait()
    t.join()
    assert errors, "the client never got an answer"
    srv.log.close()
    srv.start()
    recs = [r for r in records(srv) if r["eventName"] == "PutObject"
            and r.get("requestParameters", {}).get("key") == "in-flight"]
    assert len(recs) == 1, recs
    assert recs[0]["errorCode"] == "ServiceUnavailable"
    assert "outcome was known" in recs[0]["errorMessage"]


def test_condition_keys_bind_proxied_buckets_and_delete_bodies_are_unambiguous(setup):
    srv, direct, _ = setup
    s3, (key, secret) = user(srv, "acl-limited", [
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:PutObjectAcl", "s3:DeleteObject"], "Resource": f"arn:aws:s3:::{PROXIED}/*"},
        {"Effect": "Deny", "Action": "s3:PutObject", "Resource": "*", "Condition": {"StringEquals": {"s3:x-amz-acl": "public-read"}}}])
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=PROXIED, Key="k/public", Body=b"x", ACL="public-read")
    assert code(e) == "AccessDenied"
    s3.put_object(Bucket=PROXIED, Key="k/private", Body=b"x", ACL="private")
    # A DeleteObjects body another parser could read differently is refused, not forwarded.
    body = b"<Delete><Object><Key>k/private</Key><Key>important</Key></Object></Delete>"
    import base64
    import hashlib as h
    md5 = base64.b64encode(h.md5(body).digest()).decode()
    hs = signed(srv, "s3", "POST", f"/{PROXIED}?delete", body, s3=True, key=key, secret=secret, headers={"Content-MD5": md5})
    st, _, data = send(srv, "POST", f"/{PROXIED}?delete", hs, body)
    assert st == 400 and b"MalformedXML" in data
    direct.head_object(Bucket=UPSTREAM, Key="k/private")


def test_every_refusal_above_is_in_the_trail(setup):
    srv, _, _ = setup
    seen = {(r["eventName"], r.get("errorCode")) for r in records(srv)}
    for expected in [("PutObject", "AccessDenied"), ("DeleteObject", "AccessDenied"), ("CopyObject", "AccessDenied"),
                     ("DeleteObjects", "MalformedXML"), ("CopyObject", "NoSuchKey")]:
        assert expected in seen, expected


def test_attributes_of_a_proxied_object_need_get_object_too(setup):
    """Reading an object's attributes reads the object: allowed GetObjectAttributes but
    denied GetObject, a caller learns nothing through the proxy (as on an embedded bucket)."""
    srv, direct, _ = setup
    direct.put_object(Bucket=UPSTREAM, Key="attrs/secret", Body=b"hidden")
    s3, _ = user(srv, "attr-reader", [
        {"Effect": "Allow", "Action": "s3:GetObjectAttributes", "Resource": f"arn:aws:s3:::{PROXIED}/*"},
        {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{PROXIED}/attrs/*"}])
    with pytest.raises(ClientError) as e:
        s3.get_object_attributes(Bucket=PROXIED, Key="attrs/secret", ObjectAttributes=["ETag", "ObjectSize"])
    assert code(e) == "AccessDenied"


class Failing:
    """An upstream that answers every request with S3's 500 InternalError."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        seen = self.seen = []

        class H(BaseHTTPRequestHandler):
            def _fail(self):
                n = int(self.headers.get("Content-Length", 0) or 0)
                if n:
                    self.rfile.read(n)
                seen.append(self.command)
                body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
                        b'<Message>We encountered an internal error. Please try again.</Message></Error>')
                self.send_response(500)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _fail

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()


def test_an_upstream_that_is_down_slow_or_failing_gives_aws_errors_and_records_that_say_so(cairn_server_factory):
    from conftest import free_port
    hanging, failing = Hanging(), Failing()
    buckets = {"up-down": f"http://127.0.0.1:{free_port()}", "up-slow": f"http://127.0.0.1:{hanging.port}",
               "up-failing": f"http://127.0.0.1:{failing.port}"}
    selectors = '[{"ReadWriteType":"All","IncludeManagementEvents":true,"DataResources":[{"Type":"AWS::S3::Object","Values":["arn:aws:s3"]}]}]'
    config = f'[[bucket]]\nname = "{LOGS}"\n' + "".join(
        f'[[bucket]]\nname = "{b}"\n[bucket.proxy]\nendpoint = "{ep}"\naccess_key_id = "k"\n'
        f'secret_access_key_env = "CAIRN_TEST_UPSTREAM_SECRET"\ntimeout = "1s"\n' for b, ep in buckets.items()) + f"""
[[trail]]
name = "sec-proxy-trail"
bucket = "{LOGS}"
logging = true
event_selectors = '{selectors}'
"""
    srv = cairn_server_factory(config=config, env={"CAIRN_TEST_UPSTREAM_SECRET": "s"})
    s3 = boto3.client("s3", endpoint_url=srv.endpoint, region_name="us-east-1", aws_access_key_id=srv.key,
                      aws_secret_access_key=srv.secret, config=Config(retries={"total_max_attempts": 1}, read_timeout=20))
    want = {"up-down": ("ServiceUnavailable", 503, "could not be reached"),
            "up-slow": ("ServiceUnavailable", 503, "outcome upstream is unknown"),
            "up-failing": ("InternalError", 500, "internal error")}
    for bucket, (c, status, words) in want.items():
        for call in (lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"payload"),
                     lambda: s3.get_object(Bucket=bucket, Key="k"),
                     lambda: s3.delete_object(Bucket=bucket, Key="k")):
            started = time.time()
            with pytest.raises(ClientError) as e:
                call()
            err = e.value.response
            assert (err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]) == (c, status), (bucket, err)
            assert words in err["Error"].get("Message", ""), (bucket, err)
            assert time.time() - started < 10, "the timeout bounds a slow upstream"
    assert "PUT" in failing.seen and hanging.requests, "the writes were forwarded once recorded"
    recs = [r for r in records(srv) if r.get("requestParameters", {}).get("bucketName") in buckets]
    got = sorted((r["requestParameters"]["bucketName"], r["eventName"], r.get("errorCode")) for r in recs)
    # One record per call, each with the failure: nothing is recorded as done that was not.
    assert got == sorted((b, op, want[b][0]) for b in buckets for op in ("PutObject", "GetObject", "DeleteObject")), got
    hanging.close()
    failing.close()
    srv.stop()
