"""trust-and-testing §3.5 for S3, one test per case: B10, B11, B12, B14, B20, B21, B23 and
the path-traversal regressions cited there (rclone `serve s3`, SeaweedFS copy source,
fake-s3 key aliasing). B13 and B19 are in test_s3_objects.py, B24 in
test_s3_checksums_and_lock.py, B1–B9/B15–B18/B22 in test_bad_input.py."""
import base64
import os
import zlib
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from s3raw import chunked_body, send

BUCKET = "bad-input-bucket"


@pytest.fixture(scope="module")
def srv(cairn_server_factory):
    return cairn_server_factory(config=f'[[bucket]]\nname = "{BUCKET}"\n[[bucket]]\nname = "other-bucket"\n')


def err(resp):
    status, _, body = resp[0]
    text = body.decode()
    code = text.split("<Code>")[1].split("</Code>")[0] if "<Code>" in text else None
    return status, code, text


def crc(data):
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def trailer_put(srv, key, body, decoded_len, trailer_value=None, data=b""):
    hs = {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(decoded_len),
          "x-amz-trailer": "x-amz-checksum-crc32"}
    return send(srv, "PUT", f"/{BUCKET}/{key}", headers=hs, body=body, payload="STREAMING-UNSIGNED-PAYLOAD-TRAILER")


def test_b10_malformed_chunked_uploads(srv):
    s3 = srv.client("s3")
    big, tail = os.urandom(9000), b"tail"
    good = chunked_body([big, tail, b""], trailer=("x-amz-checksum-crc32", crc(big + tail)))
    status, _, text = err(trailer_put(srv, "b10-ok", good, len(big) + len(tail)))
    assert status == 200, text
    assert s3.get_object(Bucket=BUCKET, Key="b10-ok")["Body"].read() == big + tail
    # A chunk under 8192 bytes that is not the last one.
    small = chunked_body([b"abc", b"def", b""], trailer=("x-amz-checksum-crc32", crc(b"abcdef")))
    status, code, text = err(trailer_put(srv, "b10-small", small, 6))
    assert (status, code) == (400, "InvalidChunkSizeError"), text
    assert "<Chunk>1</Chunk>" in text and "<BadChunkSize>3</BadChunkSize>" in text
    # No final zero-length chunk.
    status, code, _ = err(trailer_put(srv, "b10-nofinal", f"{len(tail):x}\r\n".encode() + tail + b"\r\n", 4))
    assert (status, code) == (400, "IncompleteBody")
    # Declared decoded length differs from the chunks.
    status, code, _ = err(trailer_put(srv, "b10-len", chunked_body([tail, b""], trailer=("x-amz-checksum-crc32", crc(tail))), 5))
    assert (status, code) == (400, "IncompleteBody")
    for k in ("b10-small", "b10-nofinal", "b10-len"):
        with pytest.raises(ClientError):
            s3.head_object(Bucket=BUCKET, Key=k)


def test_b11_unsigned_trailer_with_a_wrong_crc32(srv):
    body = chunked_body([b"payload", b""], trailer=("x-amz-checksum-crc32", crc(b"PAYLOAD")))
    status, code, _ = err(trailer_put(srv, "b11", body, 7))
    assert (status, code) == (400, "BadDigest")
    with pytest.raises(ClientError):
        srv.client("s3").head_object(Bucket=BUCKET, Key="b11")


def test_b12_expired_presigned_url_says_when(srv):
    import time
    import urllib.error
    import urllib.request

    import boto3
    from botocore.config import Config
    s3 = boto3.client("s3", endpoint_url=srv.endpoint, region_name="us-east-1", aws_access_key_id=srv.key,
                      aws_secret_access_key=srv.secret, config=Config(signature_version="s3v4"))
    s3.put_object(Bucket=BUCKET, Key="b12", Body=b"x")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "b12"}, ExpiresIn=1)
    time.sleep(2.2)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url)
    body = e.value.read().decode()
    assert e.value.code == 403 and "<Code>AccessDenied</Code>" in body and "Request has expired" in body
    assert "<X-Amz-Expires>1</X-Amz-Expires>" in body and "<Expires>" in body and "<ServerTime>" in body


def test_b14_malformed_xml_bodies(srv):
    for sub, body in [("lifecycle", b"<LifecycleConfiguration><Rule>"), ("object-lock", b"<nope/>"),
                      ("delete", b"<Delete><Object><Key>a</Key></Object"), ("versioning", b"not xml")]:
        method = "POST" if sub == "delete" else "PUT"
        hs = {"content-md5": base64.b64encode(__import__("hashlib").md5(body).digest()).decode()}
        status, code, text = err(send(srv, method, f"/{BUCKET}", query=sub, headers=hs, body=body))
        assert (status, code) == (400, "MalformedXML"), (sub, text)
    status, code, _ = err(send(srv, "PUT", f"/{BUCKET}", query="policy", body=b'{"Statement": ['))
    assert (status, code) == (400, "MalformedPolicy")


def test_b20_keys_are_opaque_and_never_paths(srv):
    s3 = srv.client("s3")
    odd = ["a/../b", "./c", "d//e", "/leading", "../../../../etc/cairn-escape", "f/./g", "nul\x00key"]
    for i, k in enumerate(odd):
        s3.put_object(Bucket=BUCKET, Key=k, Body=f"odd {i}".encode())
    for i, k in enumerate(odd):
        assert s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() == f"odd {i}".encode(), k
    # `a/../b` is not `b`, `./c` is not `c`, `d//e` is not `d/e` (fake-s3 aliased these).
    for alias in ["b", "c", "d/e", "leading", "f/g"]:
        with pytest.raises(ClientError) as e:
            s3.get_object(Bucket=BUCKET, Key=alias)
        assert e.value.response["Error"]["Code"] == "NoSuchKey", alias
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert set(odd) <= listed
    # No file was created outside the store (rclone `serve s3` wrote through `..`).
    assert not Path("/etc/cairn-escape").exists()
    for p in srv.workdir.rglob("*"):
        assert "cairn-escape" not in p.name and "leading" not in p.name, p
    # Invalid UTF-8 in the path is refused, not mapped onto another key.
    status, code, _ = err(send(srv, "PUT", f"/{BUCKET}/bad%FFkey", body=b"x"))
    assert (status, code) == (400, "InvalidURI")
    # Longer than 1024 bytes.
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=BUCKET, Key="k" * 1025, Body=b"x")
    assert (e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]) == ("KeyTooLongError", 400)


def test_b21_copy_source_never_crosses_buckets(srv):
    """SeaweedFS (GHSA-56wq-x3wv-3ff4) let `..` in X-Amz-Copy-Source reach another bucket."""
    s3 = srv.client("s3")
    s3.put_object(Bucket="other-bucket", Key="secret", Body=b"secret")
    for src in [f"/{BUCKET}/../other-bucket/secret", f"{BUCKET}/%2E%2E/other-bucket/secret",
                f"{BUCKET}/..%2Fother-bucket%2Fsecret"]:
        status, code, text = err(send(srv, "PUT", f"/{BUCKET}/stolen", headers={"x-amz-copy-source": src}))
        assert (status, code) == (404, "NoSuchKey"), (src, text)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=BUCKET, Key="stolen")


def test_b23_invalid_bucket_names(srv):
    s3 = srv.client("s3")
    for name in ["UpperCase", "192.168.1.1", "x" * 64, "ab", "bad_underscore", "-dash-first"]:
        status, code, text = err(send(srv, "PUT", f"/{name}"))
        assert (status, code) == (400, "InvalidBucketName"), (name, text)
    assert "UpperCase" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_headers_asking_for_what_cairn_does_not_do_are_refused_not_ignored(srv):
    """A write header cairn would otherwise drop (a grant to another account, a website
    redirect) is refused with NotImplemented and nothing is written; an expected bucket owner
    other than the account is refused as S3 refuses a bucket owned by someone else."""
    s3 = srv.client("s3")
    grant = 'id="79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"'
    for kwargs in [dict(GrantRead=grant), dict(GrantFullControl=grant), dict(WebsiteRedirectLocation="/elsewhere")]:
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket=BUCKET, Key="refused-header", Body=b"x", **kwargs)
        assert (e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]) == ("NotImplemented", 501), kwargs
        with pytest.raises(ClientError) as e:
            s3.create_multipart_upload(Bucket=BUCKET, Key="refused-header", **kwargs)
        assert e.value.response["Error"]["Code"] == "NotImplemented", kwargs
    with pytest.raises(ClientError):
        s3.head_object(Bucket=BUCKET, Key="refused-header")
    with pytest.raises(ClientError) as e:
        s3.put_object_acl(Bucket=BUCKET, Key="k", GrantRead=grant)
    assert e.value.response["Error"]["Code"] == "NotImplemented"
    # The expected owner: this account passes, another is refused before anything is read.
    s3.put_object(Bucket=BUCKET, Key="owned", Body=b"x", ExpectedBucketOwner=srv.account)
    for call in [lambda: s3.get_object(Bucket=BUCKET, Key="owned", ExpectedBucketOwner="210987654321"),
                 lambda: s3.put_object(Bucket=BUCKET, Key="owned", Body=b"y", ExpectedBucketOwner="210987654321"),
                 lambda: s3.list_objects_v2(Bucket=BUCKET, ExpectedBucketOwner="210987654321")]:
        with pytest.raises(ClientError) as e:
            call()
        assert (e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]) == ("AccessDenied", 403)
    assert s3.get_object(Bucket=BUCKET, Key="owned")["Body"].read() == b"x"


def test_periods_no_calendar_holds_are_refused(srv):
    """Retention and restore periods beyond S3's bounds are refused when sent (they once
    overflowed the date arithmetic of every later write)."""
    s3 = srv.client("s3")
    for rule in [{"Mode": "GOVERNANCE", "Years": 300000}, {"Mode": "GOVERNANCE", "Days": 100000000}]:
        with pytest.raises(ClientError) as e:
            s3.put_object_lock_configuration(Bucket=BUCKET, ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": rule}})
        assert e.value.response["Error"]["Code"] == "InvalidArgument", rule
    s3.put_object(Bucket=BUCKET, Key="cold", Body=b"x", StorageClass="GLACIER")
    with pytest.raises(ClientError) as e:
        s3.restore_object(Bucket=BUCKET, Key="cold", RestoreRequest={"Days": 1000000000})
    assert e.value.response["Error"]["Code"] == "MalformedXML"
    s3.put_object(Bucket=BUCKET, Key="after", Body=b"still fine")
