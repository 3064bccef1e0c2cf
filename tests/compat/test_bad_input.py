"""Bad input at the edge (trust-and-testing §3.5 B1–B9, B15–B18, B22): every case gets the
AWS error code and HTTP status of its protocol, changes nothing, never a 500 — and the
refused request is itself recorded."""
import datetime
import hashlib
import http.client
import json
import socket
import time

import pytest

from rawreq import send, signed

CT_TARGET = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101."
METRICS_TOKEN = "bad-input-metrics-token"
BUCKET = "edge-bucket"
CONFIG = f"""
max_body_bytes = 65536
max_object_bytes = 65536
[[bucket]]
name = "{BUCKET}"
"""


@pytest.fixture(scope="module")
def srv(cairn_server_factory):
    s = cairn_server_factory(config=CONFIG, env={"CAIRN_METRICS_TOKEN": METRICS_TOKEN})
    s.client("s3").put_object(Bucket=BUCKET, Key="hello.txt", Body=b"hello")
    return s


def ct_headers(srv, op, body=b"{}", **kw):
    h = {"X-Amz-Target": CT_TARGET + op, "Content-Type": "application/x-amz-json-1.1"}
    return signed(srv, "cloudtrail", "POST", "/", body, headers=h, **kw)


def json_err(resp):
    status, _, data = resp
    return status, json.loads(data)["__type"]


def s3_err(resp):
    status, _, data = resp
    text = data.decode()
    code = text.split("<Code>")[1].split("</Code>")[0] if "<Code>" in text else None
    return status, code


def test_b1_wrong_signature(srv):
    h = ct_headers(srv, "ListTrails")
    h["Authorization"] = h["Authorization"][:-1] + ("0" if h["Authorization"][-1] != "0" else "1")
    assert json_err(send(srv, "POST", "/", h, b"{}")) == (400, "InvalidSignatureException")
    h = signed(srv, "s3", "GET", f"/{BUCKET}/hello.txt", s3=True)
    h["Authorization"] = h["Authorization"][:-1] + ("0" if h["Authorization"][-1] != "0" else "1")
    assert s3_err(send(srv, "GET", f"/{BUCKET}/hello.txt", h)) == (403, "SignatureDoesNotMatch")
    body = b"Action=ListUsers&Version=2010-05-08"
    h = signed(srv, "iam", "POST", "/", body, headers={"Content-Type": "application/x-www-form-urlencoded"}, secret="x" * 40)
    assert s3_err(send(srv, "POST", "/", h, body)) == (403, "SignatureDoesNotMatch")


def test_b2_unknown_access_key(srv):
    h = ct_headers(srv, "ListTrails", key="AKIAUNKNOWNUNKNOWN00")
    assert json_err(send(srv, "POST", "/", h, b"{}")) == (400, "UnrecognizedClientException")
    h = signed(srv, "s3", "GET", f"/{BUCKET}/hello.txt", s3=True, key="AKIAUNKNOWNUNKNOWN00")
    assert s3_err(send(srv, "GET", f"/{BUCKET}/hello.txt", h)) == (403, "InvalidAccessKeyId")
    body = b"Action=GetCallerIdentity&Version=2011-06-15"
    h = signed(srv, "sts", "POST", "/", body, headers={"Content-Type": "application/x-www-form-urlencoded"}, key="AKIAUNKNOWNUNKNOWN00")
    assert s3_err(send(srv, "POST", "/", h, body)) == (403, "InvalidClientTokenId")


def test_b3_no_authentication(srv):
    h = {"Host": "x", "X-Amz-Target": CT_TARGET + "ListTrails", "Content-Type": "application/x-amz-json-1.1"}
    assert json_err(send(srv, "POST", "/", h, b"{}")) == (403, "MissingAuthenticationToken")
    assert s3_err(send(srv, "GET", f"/{BUCKET}/hello.txt", {"Host": "x"})) == (403, "AccessDenied")


def test_b4_malformed_authorization(srv):
    h = ct_headers(srv, "ListTrails")
    h["Authorization"] = h["Authorization"].split(", SignedHeaders=")[0] + ", Signature=" + "0" * 64
    assert json_err(send(srv, "POST", "/", h, b"{}")) == (400, "IncompleteSignature")
    h = signed(srv, "s3", "GET", f"/{BUCKET}/hello.txt", s3=True)
    h["Authorization"] = "AWS4-HMAC-SHA256 garbage"
    assert s3_err(send(srv, "GET", f"/{BUCKET}/hello.txt", h)) == (400, "AuthorizationHeaderMalformed")


def test_b5_clock_skew(srv):
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
    h = ct_headers(srv, "ListTrails", when=old)
    status, _, data = send(srv, "POST", "/", h, b"{}")
    assert (status, json.loads(data)["__type"]) == (400, "InvalidSignatureException")
    assert "Signature expired" in json.loads(data)["message"]
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=20)
    h = signed(srv, "s3", "GET", f"/{BUCKET}/hello.txt", s3=True, when=future)
    assert s3_err(send(srv, "GET", f"/{BUCKET}/hello.txt", h)) == (403, "RequestTimeTooSkewed")
    # Within 15 minutes is accepted.
    near = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=10)
    assert send(srv, "POST", "/", ct_headers(srv, "ListTrails", when=near), b"{}")[0] == 200


def test_b6_scope_date_service_and_terminator(srv):
    h = ct_headers(srv, "ListTrails")
    a = h["Authorization"]
    day = a.split("Credential=")[1].split("/")[1]
    other = (datetime.date(int(day[:4]), int(day[4:6]), int(day[6:])) - datetime.timedelta(days=1)).strftime("%Y%m%d")
    h2 = dict(h, Authorization=a.replace(f"/{day}/", f"/{other}/"))
    assert json_err(send(srv, "POST", "/", h2, b"{}")) == (400, "InvalidSignatureException")
    h3 = ct_headers(srv, "ListTrails")
    h3 = signed(srv, "kms", "POST", "/", b"{}", headers={"X-Amz-Target": CT_TARGET + "ListTrails", "Content-Type": "application/x-amz-json-1.1"})
    assert json_err(send(srv, "POST", "/", h3, b"{}")) == (400, "InvalidSignatureException")
    h4 = dict(h, Authorization=a.replace("/aws4_request", "/aws5_request"))
    assert json_err(send(srv, "POST", "/", h4, b"{}")) == (400, "InvalidSignatureException")


def test_b7_unsigned_required_or_amz_headers(srv):
    h = ct_headers(srv, "ListTrails")
    h["Authorization"] = h["Authorization"].replace("SignedHeaders=content-type;host;", "SignedHeaders=content-type;")
    assert json_err(send(srv, "POST", "/", h, b"{}")) == (400, "IncompleteSignature")
    h = signed(srv, "s3", "GET", f"/{BUCKET}/hello.txt", s3=True)
    h["x-amz-copy-source"] = f"{BUCKET}/hello.txt"
    status, _, data = send(srv, "GET", f"/{BUCKET}/hello.txt", h)
    assert (status, s3_err((status, None, data))[1]) == (403, "AccessDenied")
    assert b"<HeadersNotSigned>x-amz-copy-source</HeadersNotSigned>" in data


def test_b8_replay_inside_the_window_is_accepted(srv):
    h = ct_headers(srv, "ListTrails")
    assert send(srv, "POST", "/", h, b"{}")[0] == 200
    assert send(srv, "POST", "/", h, b"{}")[0] == 200


def test_b9_payload_hash(srv):
    h = signed(srv, "s3", "PUT", f"/{BUCKET}/k.txt", b"abc", s3=True)
    del h["X-Amz-Content-SHA256"]
    assert s3_err(send(srv, "PUT", f"/{BUCKET}/k.txt", h, b"abc")) == (400, "InvalidRequest")
    h = signed(srv, "s3", "PUT", f"/{BUCKET}/k.txt", b"abc", s3=True)
    assert s3_err(send(srv, "PUT", f"/{BUCKET}/k.txt", h, b"abd")) == (400, "XAmzContentSHA256Mismatch")
    # Nothing was written.
    h = signed(srv, "s3", "GET", f"/{BUCKET}/k.txt", s3=True)
    assert s3_err(send(srv, "GET", f"/{BUCKET}/k.txt", h)) == (404, "NoSuchKey")
    # A JSON request whose body does not match its signature.
    h = ct_headers(srv, "ListTrails", body=b"{}")
    assert json_err(send(srv, "POST", "/", h, b'{"x":1}')) == (400, "InvalidSignatureException")


def test_b15_malformed_json_wrong_target_wrong_content_type(srv):
    for body in [b"{not json", b"[1,2]", b'"str"']:
        h = ct_headers(srv, "ListTrails", body=body)
        assert json_err(send(srv, "POST", "/", h, body)) == (400, "SerializationException"), body
    h = ct_headers(srv, "GetTrail", body=b'{"Name": 5}')
    assert json_err(send(srv, "POST", "/", h, b'{"Name": 5}')) == (400, "SerializationException")
    h = ct_headers(srv, "NoSuchOperation")
    assert json_err(send(srv, "POST", "/", h, b"{}")) == (400, "UnknownOperationException")
    h = signed(srv, "cloudtrail", "POST", "/", b"{}", headers={"X-Amz-Target": "com.example.Other.ListTrails", "Content-Type": "application/x-amz-json-1.1"})
    assert json_err(send(srv, "POST", "/", h, b"{}")) == (400, "UnknownOperationException")
    h = signed(srv, "cloudtrail", "POST", "/", b"{}", headers={"X-Amz-Target": CT_TARGET + "ListTrails", "Content-Type": "text/plain"})
    assert json_err(send(srv, "POST", "/", h, b"{}")) == (400, "SerializationException")


def test_b16_out_of_range_parameters(srv):
    body = json.dumps({"StartTime": 2e9, "EndTime": 1e9}).encode()
    assert json_err(send(srv, "POST", "/", ct_headers(srv, "LookupEvents", body=body), body)) == (400, "InvalidTimeRangeException")
    body = json.dumps({"Name": "x"}).encode()
    assert json_err(send(srv, "POST", "/", ct_headers(srv, "GetTrail", body=body), body)) == (400, "InvalidTrailNameException")


def test_b17_body_over_the_limit(srv):
    body = b'{"Name":"' + b"a" * 70000 + b'"}'
    status, code = json_err(send(srv, "POST", "/", ct_headers(srv, "GetTrail", body=body), body))
    assert (status, code) == (413, "RequestEntityTooLargeException")
    big = b"x" * 70000
    h = signed(srv, "s3", "PUT", f"/{BUCKET}/big.bin", big, s3=True)
    assert s3_err(send(srv, "PUT", f"/{BUCKET}/big.bin", h, big)) == (400, "EntityTooLarge")


def raw(srv, data, wait=10):
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=wait)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            # The server closed with our bytes unread (a framing error): the kernel resets.
            break
        if not chunk:
            break
        out += chunk
    s.close()
    return out


def test_b18_declared_length_not_sent_and_missing_length(srv):
    h = signed(srv, "s3", "PUT", f"/{BUCKET}/short.bin", b"0123456789", s3=True)
    head = "".join(f"{k}: {v}\r\n" for k, v in h.items())
    out = raw(srv, f"PUT /{BUCKET}/short.bin HTTP/1.1\r\n{head}Content-Length: 10\r\n\r\n01234".encode())
    assert out.startswith(b"HTTP/1.1 400") and b"<Code>IncompleteBody</Code>" in out, out[:300]
    h = signed(srv, "s3", "PUT", f"/{BUCKET}/nolen.bin", b"", s3=True)
    head = "".join(f"{k}: {v}\r\n" for k, v in h.items())
    out = raw(srv, f"PUT /{BUCKET}/nolen.bin HTTP/1.1\r\n{head}\r\n".encode())
    assert out.startswith(b"HTTP/1.1 411") and b"<Code>MissingContentLength</Code>" in out, out[:300]
    h = ct_headers(srv, "ListTrails")
    head = "".join(f"{k}: {v}\r\n" for k, v in h.items())
    out = raw(srv, f"POST / HTTP/1.1\r\n{head}Content-Length: 50\r\n\r\n{{}}".encode())
    assert out.startswith(b"HTTP/1.1 400") and b"SerializationException" in out, out[:300]


def test_b22_bad_header_values(srv):
    # Non-ASCII bytes in a header value.
    h = ct_headers(srv, "ListTrails")
    head = "".join(f"{k}: {v}\r\n" for k, v in h.items())
    out = raw(srv, f"POST / HTTP/1.1\r\n{head}X-Custom: caf\xe9\r\nContent-Length: 2\r\n\r\n{{}}".encode("latin-1"))
    assert out.startswith(b"HTTP/1.1 400") and b"SerializationException" in out, out[:300]
    assert b"caf" not in out
    # A duplicated X-Amz-Date.
    h = signed(srv, "s3", "GET", f"/{BUCKET}/hello.txt", s3=True)
    head = "".join(f"{k}: {v}\r\n" for k, v in h.items())
    out = raw(srv, f"GET /{BUCKET}/hello.txt HTTP/1.1\r\n{head}X-Amz-Date: 20200101T000000Z\r\n\r\n".encode())
    assert out.startswith(b"HTTP/1.1 400") and b"<Code>InvalidArgument</Code>" in out, out[:300]
    # CR/LF inside a header value never reaches a handler (HTTP framing rejects it).
    out = raw(srv, f"GET /{BUCKET}/hello.txt HTTP/1.1\r\nHost: x\r\nX-Amz-Meta-A: a\rInjected: b\r\n\r\n".encode())
    # Refused at the HTTP layer: a 400, or a reset when the refusal races our unread bytes.
    assert (out.startswith(b"HTTP/1.1 400") or out == b"") and b"Injected" not in out, out[:300]


def test_no_case_returned_500_and_failures_are_recorded(srv):
    metrics = http.client.HTTPConnection("127.0.0.1", srv.port)
    metrics.request("GET", "/_cairn/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    text = metrics.getresponse().read().decode()
    statuses = [l for l in text.splitlines() if l.startswith("cairn_requests_total{")]
    assert statuses and not [l for l in statuses if 'status="5' in l], statuses
    # A refused request is an event too: lookup finds the denied ListTrails with its error code.
    ct = srv.client("cloudtrail")
    deadline = time.time() + 10
    while True:
        evs = ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "ListTrails"}], MaxResults=50)["Events"]
        codes = {json.loads(e["CloudTrailEvent"]).get("errorCode") for e in evs}
        if {"InvalidSignatureException", "UnrecognizedClientException", "MissingAuthenticationToken"} <= codes or time.time() > deadline:
            break
        time.sleep(0.2)
    assert {"InvalidSignatureException", "UnrecognizedClientException", "MissingAuthenticationToken"} <= codes
    unknown = [json.loads(e["CloudTrailEvent"]) for e in evs if json.loads(e["CloudTrailEvent"]).get("errorCode") == "UnrecognizedClientException"]
    assert unknown[0]["userIdentity"] == {"type": "Unknown", "accountId": "123456789012", "accessKeyId": "AKIAUNKNOWNUNKNOWN00"}


def test_client_chosen_operation_names_do_not_become_metric_labels(srv):
    for i in range(5):
        body = f"Action=Made{i}Up&Version=2010-05-08".encode()
        send(srv, "POST", "/", {"Host": "x", "Content-Type": "application/x-www-form-urlencoded"}, body)
        h = ct_headers(srv, f"Invented{i}")
        send(srv, "POST", "/", h, b"{}")
    c = http.client.HTTPConnection("127.0.0.1", srv.port)
    c.request("GET", "/_cairn/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    text = c.getresponse().read().decode()
    assert "Made0Up" not in text and "Invented0" not in text
    assert 'operation="unknown"' in text


def test_s3_answers_carry_one_content_type(srv):
    for path, query in [(f"/{BUCKET}", "location"), (f"/{BUCKET}", "list-type=2"), (f"/{BUCKET}/hello.txt", "")]:
        full = f"{path}?{query}" if query else path
        h = signed(srv, "s3", "GET", full, s3=True)
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        c.putrequest("GET", full, skip_host=True, skip_accept_encoding=True)
        for k, v in h.items():
            c.putheader(k, v)
        c.endheaders()
        r = c.getresponse()
        r.read()
        types = [v for k, v in r.getheaders() if k.lower() == "content-type"]
        c.close()
        assert r.status == 200 and len(types) == 1, (full, types)
        if query:
            assert types == ["application/xml"], (full, types)
