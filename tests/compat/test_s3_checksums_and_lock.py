"""S3 bodies and object features beyond a plain PUT: aws-chunked uploads (unsigned trailers
as boto3 and the aws CLI send them over HTTPS; chunk-signed bodies and signed trailers built
by hand here, as the Java/Go SDKs send them), flexible checksums, GetObjectAttributes, object
tagging, object lock, canned ACLs, archive storage classes and RestoreObject."""
import base64
import datetime
import hashlib
import hmac
import http.client
import json
import os
import zlib

import boto3
import pytest
from botocore.exceptions import ClientError

BUCKET = "features"


@pytest.fixture(scope="module")
def srv(cairn_server_factory, tls_certs):
    d = tls_certs
    s = cairn_server_factory(config=f'[tls]\ncert = "{d / "cert.pem"}"\nkey = "{d / "key.pem"}"\n[[bucket]]\nname = "{BUCKET}"\n')
    s.endpoint = s.endpoint.replace("http://", "https://")
    s.ca = str(d / "ca.pem")
    return s


def s3(srv):
    return boto3.client("s3", endpoint_url=srv.endpoint, region_name="us-east-1", verify=srv.ca,
                        aws_access_key_id=srv.key, aws_secret_access_key=srv.secret)


def code(e):
    return e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]


def crc32_b64(data):
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def test_boto3_over_https_uploads_with_an_unsigned_trailer_and_the_checksum_is_kept(srv):
    c = s3(srv)
    seen = []
    c.meta.events.register("before-send.s3.PutObject", lambda request, **kw: seen.append(dict(request.headers)))
    data = os.urandom(300_000)
    put = c.put_object(Bucket=BUCKET, Key="trailer.bin", Body=data, ChecksumAlgorithm="CRC32")
    sent = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in seen[-1].items()}
    assert sent["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER", sent
    assert "aws-chunked" in sent["content-encoding"]
    assert put["ChecksumCRC32"] == crc32_b64(data)
    got = c.get_object(Bucket=BUCKET, Key="trailer.bin", ChecksumMode="ENABLED")
    assert got["Body"].read() == data and got["ChecksumCRC32"] == crc32_b64(data)
    assert "ContentEncoding" not in got, "aws-chunked is framing, not a stored content encoding"
    attrs = c.get_object_attributes(Bucket=BUCKET, Key="trailer.bin",
                                    ObjectAttributes=["ETag", "Checksum", "ObjectSize", "StorageClass"])
    assert attrs["ObjectSize"] == len(data) and attrs["StorageClass"] == "STANDARD"
    assert attrs["Checksum"]["ChecksumCRC32"] == crc32_b64(data)
    assert attrs["ETag"] == hashlib.md5(data).hexdigest()


def test_aws_cli_over_https_copies_a_large_file_with_chunked_multipart(srv, aws_bin, tmp_path):
    data = os.urandom(12_000_000)
    (tmp_path / "big").write_bytes(data)
    env = {**srv.env(), "AWS_CA_BUNDLE": srv.ca, "AWS_ENDPOINT_URL": srv.endpoint}
    up = srv.aws(aws_bin, "--debug", "s3", "cp", str(tmp_path / "big"), f"s3://{BUCKET}/big", env=env)
    # The CLI's own debug log shows the parts went aws-chunked with a checksum trailer.
    assert "STREAMING-UNSIGNED-PAYLOAD-TRAILER" in up.stderr and "x-amz-checksum-crc32" in up.stderr
    srv.aws(aws_bin, "s3", "cp", f"s3://{BUCKET}/big", str(tmp_path / "back"), env=env)
    assert (tmp_path / "back").read_bytes() == data
    attrs = s3(srv).get_object_attributes(Bucket=BUCKET, Key="big", ObjectAttributes=["ObjectParts", "ObjectSize"])
    assert attrs["ObjectSize"] == len(data) and attrs["ObjectParts"]["TotalPartsCount"] >= 2


def test_wrong_checksums_are_refused_and_change_nothing(srv):
    c = s3(srv)
    c.put_object(Bucket=BUCKET, Key="ck", Body=b"original")
    for alg, bad in [("ChecksumCRC32", "AAAAAA=="), ("ChecksumSHA256", base64.b64encode(b"\0" * 32).decode()),
                     ("ChecksumCRC32C", "AAAAAA=="), ("ChecksumSHA1", base64.b64encode(b"\0" * 20).decode())]:
        with pytest.raises(ClientError) as e:
            c.put_object(Bucket=BUCKET, Key="ck", Body=b"changed", **{alg: bad})
        assert code(e) == ("BadDigest", 400), alg
    assert c.get_object(Bucket=BUCKET, Key="ck")["Body"].read() == b"original"
    ok = c.put_object(Bucket=BUCKET, Key="ck2", Body=b"hello world", ChecksumSHA256=base64.b64encode(hashlib.sha256(b"hello world").digest()).decode())
    assert ok["ChecksumSHA256"] == "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek="


# --- chunk-signed bodies (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]) -------------------

def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signed_chunked_put(srv, key, chunks, *, tamper=False, trailer=None, bad_trailer_sig=False):
    """PUTs `chunks` as a SigV4 chunk-signed aws-chunked body over HTTPS; returns (status, body)."""
    host = f"127.0.0.1:{srv.port}"
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/us-east-1/s3/aws4_request"
    mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" + ("-TRAILER" if trailer else "")
    decoded = sum(len(c) for c in chunks)
    headers = {"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": mode,
               "content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(decoded)}
    if trailer:
        headers["x-amz-trailer"] = trailer[0]
    signed = sorted(headers)
    path = f"/{BUCKET}/{key}"
    creq = "\n".join(["PUT", path, "", *[f"{h}:{headers[h]}" for h in signed], "", ";".join(signed), mode])
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    k = _hmac(_hmac(_hmac(_hmac(("AWS4" + srv.secret).encode(), day), "us-east-1"), "s3"), "aws4_request")
    seed = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={srv.key}/{scope}, SignedHeaders={';'.join(signed)}, "
                                f"Signature={seed}")
    body, prev = b"", seed
    empty = hashlib.sha256(b"").hexdigest()
    for data in [*chunks, b""]:
        csts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, empty, hashlib.sha256(data).hexdigest()])
        sig = hmac.new(k, csts.encode(), hashlib.sha256).hexdigest()
        prev = sig
        sent = data[:-1] + b"X" if (tamper and data) else data
        body += f"{len(data):x};chunk-signature={sig}\r\n".encode() + sent + b"\r\n"
    if trailer:
        body = body[:-2]  # the final chunk's CRLF is followed by the trailer section
        line = f"{trailer[0]}:{trailer[1]}"
        tsts = "\n".join(["AWS4-HMAC-SHA256-TRAILER", amz_date, scope, prev, hashlib.sha256((line + "\n").encode()).hexdigest()])
        tsig = hmac.new(k, tsts.encode(), hashlib.sha256).hexdigest()
        if bad_trailer_sig:
            tsig = "0" * 64
        body += f"{line}\r\nx-amz-trailer-signature:{tsig}\r\n\r\n".encode()
    import ssl
    ctx = ssl.create_default_context(cafile=srv.ca)
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=30)
    conn.request("PUT", path, body=body, headers={**headers, "content-length": str(len(body))})
    r = conn.getresponse()
    out = (r.status, r.read().decode())
    conn.close()
    return out


def test_chunk_signed_uploads_verify_every_chunk(srv):
    c = s3(srv)
    chunks = [os.urandom(65536), os.urandom(65536), b"tail"]
    status, body = signed_chunked_put(srv, "signed", chunks)
    assert status == 200, body
    assert c.get_object(Bucket=BUCKET, Key="signed")["Body"].read() == b"".join(chunks)
    # One changed byte in a chunk: the chain breaks, the object stays as it was.
    status, body = signed_chunked_put(srv, "signed", [b"x" * 1000, b"y" * 10], tamper=True)
    assert status == 403 and "<Code>SignatureDoesNotMatch</Code>" in body, body
    assert c.get_object(Bucket=BUCKET, Key="signed")["Body"].read() == b"".join(chunks)


def test_signed_trailer_carries_a_verified_checksum(srv):
    c = s3(srv)
    data = os.urandom(70_000)
    good = ("x-amz-checksum-crc32", crc32_b64(data))
    status, body = signed_chunked_put(srv, "trailed", [data], trailer=good)
    assert status == 200, body
    assert c.get_object(Bucket=BUCKET, Key="trailed", ChecksumMode="ENABLED")["ChecksumCRC32"] == good[1]
    status, body = signed_chunked_put(srv, "trailed2", [data], trailer=good, bad_trailer_sig=True)
    assert status == 403 and "SignatureDoesNotMatch" in body
    status, body = signed_chunked_put(srv, "trailed3", [data], trailer=("x-amz-checksum-crc32", "AAAAAA=="))
    assert status == 400 and "<Code>BadDigest</Code>" in body
    for k in ("trailed2", "trailed3"):
        with pytest.raises(ClientError) as e:
            c.head_object(Bucket=BUCKET, Key=k)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


# --- tagging, ACLs, storage classes, restore ---------------------------------------------

def test_object_tagging(srv):
    c = s3(srv)
    c.put_object(Bucket=BUCKET, Key="tagged", Body=b"x", Tagging="team=audit&env=prod")
    got = c.get_object(Bucket=BUCKET, Key="tagged")
    assert got["TagCount"] == 2
    tags = {t["Key"]: t["Value"] for t in c.get_object_tagging(Bucket=BUCKET, Key="tagged")["TagSet"]}
    assert tags == {"team": "audit", "env": "prod"}
    c.put_object_tagging(Bucket=BUCKET, Key="tagged", Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
    assert c.get_object_tagging(Bucket=BUCKET, Key="tagged")["TagSet"] == [{"Key": "k", "Value": "v"}]
    with pytest.raises(ClientError) as e:
        c.put_object_tagging(Bucket=BUCKET, Key="tagged",
                             Tagging={"TagSet": [{"Key": f"k{i}", "Value": "v"} for i in range(11)]})
    assert code(e)[1] == 400
    c.delete_object_tagging(Bucket=BUCKET, Key="tagged")
    assert c.get_object_tagging(Bucket=BUCKET, Key="tagged")["TagSet"] == []
    with pytest.raises(ClientError) as e:
        c.get_object_tagging(Bucket=BUCKET, Key="missing")
    assert code(e) == ("NoSuchKey", 404)


def test_canned_acls_and_the_public_access_block(srv):
    c = s3(srv)
    c.create_bucket(Bucket="acl-bucket")
    owner_only = c.get_bucket_acl(Bucket="acl-bucket")["Grants"]
    assert [g["Permission"] for g in owner_only] == ["FULL_CONTROL"]
    c.put_bucket_acl(Bucket="acl-bucket", ACL="public-read")
    grants = c.get_bucket_acl(Bucket="acl-bucket")["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("AllUsers") and g["Permission"] == "READ" for g in grants)
    c.put_bucket_acl(Bucket="acl-bucket", ACL="private")
    c.put_public_access_block(Bucket="acl-bucket", PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    with pytest.raises(ClientError) as e:
        c.put_bucket_acl(Bucket="acl-bucket", ACL="public-read")
    assert code(e) == ("AccessDenied", 403)
    c.put_object(Bucket="acl-bucket", Key="o", Body=b"x", ACL="bucket-owner-full-control")
    assert [g["Permission"] for g in c.get_object_acl(Bucket="acl-bucket", Key="o")["Grants"]] == ["FULL_CONTROL"]
    with pytest.raises(ClientError) as e:
        c.put_object_acl(Bucket="acl-bucket", Key="o", ACL="public-read")
    assert code(e) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket="acl-bucket", Key="o2", Body=b"x", ACL="no-such-acl")
    assert code(e) == ("InvalidArgument", 400)


def test_archived_objects_refuse_reads_until_restored(srv):
    c = s3(srv)
    c.put_object(Bucket=BUCKET, Key="cold", Body=b"frozen", StorageClass="GLACIER")
    head = c.head_object(Bucket=BUCKET, Key="cold")
    assert head["StorageClass"] == "GLACIER"
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=BUCKET, Key="cold")
    assert code(e) == ("InvalidObjectState", 403)
    r = c.restore_object(Bucket=BUCKET, Key="cold", RestoreRequest={"Days": 2, "GlacierJobParameters": {"Tier": "Standard"}})
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert c.head_object(Bucket=BUCKET, Key="cold")["Restore"] == 'ongoing-request="true"'
    with pytest.raises(ClientError) as e:
        c.restore_object(Bucket=BUCKET, Key="cold", RestoreRequest={"Days": 2})
    assert code(e) == ("RestoreAlreadyInProgress", 409)
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=BUCKET, Key="cold")
    assert code(e) == ("InvalidObjectState", 403)
    c.put_object(Bucket=BUCKET, Key="warm", Body=b"x")
    with pytest.raises(ClientError) as e:
        c.restore_object(Bucket=BUCKET, Key="warm", RestoreRequest={"Days": 1})
    assert code(e) == ("InvalidObjectState", 403)
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=BUCKET, Key="x", Body=b"x", StorageClass="FROZEN")
    assert code(e) == ("InvalidStorageClass", 400)


# --- object lock -------------------------------------------------------------------------

def test_object_lock_governance_compliance_and_legal_hold(srv):
    c = s3(srv)
    c.create_bucket(Bucket="vault", ObjectLockEnabledForBucket=True)
    assert c.get_bucket_versioning(Bucket="vault")["Status"] == "Enabled"
    assert c.get_object_lock_configuration(Bucket="vault")["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    c.put_object_lock_configuration(Bucket="vault", ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    rule = c.get_object_lock_configuration(Bucket="vault")["ObjectLockConfiguration"]["Rule"]
    assert rule == {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}
    with pytest.raises(ClientError) as e:
        c.put_bucket_versioning(Bucket="vault", VersioningConfiguration={"Status": "Suspended"})
    assert code(e) == ("InvalidBucketState", 409)

    v1 = c.put_object(Bucket="vault", Key="log", Body=b"v1")["VersionId"]
    ret = c.get_object_retention(Bucket="vault", Key="log", VersionId=v1)["Retention"]
    assert ret["Mode"] == "GOVERNANCE"
    with pytest.raises(ClientError) as e:
        c.delete_object(Bucket="vault", Key="log", VersionId=v1)
    assert code(e) == ("AccessDenied", 403)
    # A delete without a version id only places a delete marker: allowed.
    marker = c.delete_object(Bucket="vault", Key="log")
    assert marker["DeleteMarker"] is True
    c.delete_object(Bucket="vault", Key="log", VersionId=marker["VersionId"])
    # GOVERNANCE yields to the bypass header (the root may bypass).
    c.delete_object(Bucket="vault", Key="log", VersionId=v1, BypassGovernanceRetention=True)

    until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2)
    v2 = c.put_object(Bucket="vault", Key="c", Body=b"c", ObjectLockMode="COMPLIANCE",
                      ObjectLockRetainUntilDate=until, ChecksumAlgorithm="SHA256")["VersionId"]
    with pytest.raises(ClientError) as e:
        c.delete_object(Bucket="vault", Key="c", VersionId=v2, BypassGovernanceRetention=True)
    assert code(e) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as e:
        c.put_object_retention(Bucket="vault", Key="c", VersionId=v2, BypassGovernanceRetention=True,
                               Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until - datetime.timedelta(days=1)})
    assert code(e) == ("AccessDenied", 403)
    c.put_object_retention(Bucket="vault", Key="c", VersionId=v2,
                           Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until + datetime.timedelta(days=1)})

    v3 = c.put_object(Bucket="vault", Key="held", Body=b"h")["VersionId"]
    c.put_object_legal_hold(Bucket="vault", Key="held", VersionId=v3, LegalHold={"Status": "ON"})
    assert c.get_object_legal_hold(Bucket="vault", Key="held", VersionId=v3)["LegalHold"]["Status"] == "ON"
    with pytest.raises(ClientError) as e:
        c.delete_object(Bucket="vault", Key="held", VersionId=v3, BypassGovernanceRetention=True)
    assert code(e) == ("AccessDenied", 403)
    c.put_object_legal_hold(Bucket="vault", Key="held", VersionId=v3, LegalHold={"Status": "OFF"})
    c.delete_object(Bucket="vault", Key="held", VersionId=v3, BypassGovernanceRetention=True)

    # Object lock parameters on a bucket without object lock.
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=BUCKET, Key="nolock", Body=b"x", ObjectLockMode="GOVERNANCE",
                     ObjectLockRetainUntilDate=until, ChecksumAlgorithm="SHA256")
    assert code(e) == ("InvalidRequest", 400)
    with pytest.raises(ClientError) as e:
        c.get_object_lock_configuration(Bucket=BUCKET)
    assert code(e) == ("ObjectLockConfigurationNotFoundError", 404)
