"""The proxy backend: a bucket declared in cairn.toml as served by an upstream S3 (moto_server
here). One boto3 suite runs three ways — directly against the upstream, through cairn's
proxy, and against cairn's embedded store — and must give the same results. The proxy
streams bodies (a 40 MB single PutObject passes although cairn buffers at most 16 MiB), signs
anew for the upstream, authorizes the caller itself, and records the same data events."""
import gzip
import hashlib
import io
import json
import os
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

UPSTREAM_BUCKET = "upstream-artifacts"
PROXIED = "proxied-artifacts"
EMBEDDED = "embedded-artifacts"
LOGS = "proxy-test-logs"


@pytest.fixture(scope="module")
def setup(cairn_server_factory, moto):
    direct = boto3.client("s3", endpoint_url=moto, region_name="us-east-1",
                          aws_access_key_id="upstream-key", aws_secret_access_key="upstream-secret")
    direct.create_bucket(Bucket=UPSTREAM_BUCKET)
    direct.create_bucket(Bucket="direct-suite")
    os.environ["CAIRN_TEST_UPSTREAM_SECRET"] = "upstream-secret"
    config = f"""
[[bucket]]
name = "{LOGS}"
[[bucket]]
name = "{EMBEDDED}"
[[bucket]]
name = "{PROXIED}"
[bucket.proxy]
endpoint = "{moto}"
region = "us-east-1"
bucket = "{UPSTREAM_BUCKET}"
access_key_id = "upstream-key"
secret_access_key_env = "CAIRN_TEST_UPSTREAM_SECRET"
[[trail]]
name = "proxy-trail"
bucket = "{LOGS}"
logging = true
"""
    srv = cairn_server_factory(config=config)
    return srv, direct


def outcome(fn):
    """The comparable result of one call: its value, or its error code and HTTP status."""
    try:
        return ("ok", fn())
    except ClientError as e:
        return ("error", e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])


def suite(c, bucket):
    """The same S3 calls for every backend; returns what a client can observe, without
    volatile fields (dates, request and version ids)."""
    r = []
    big = hashlib.sha256(b"suite").digest() * ((5 << 20) // 32)
    r.append(outcome(lambda: c.put_object(Bucket=bucket, Key="a/1.txt", Body=b"hello world", ContentType="text/plain",
                                          Metadata={"who": "suite"})["ETag"]))
    r.append(outcome(lambda: c.put_object(Bucket=bucket, Key="a/2.txt", Body=b"second")["ETag"]))
    r.append(outcome(lambda: c.put_object(Bucket=bucket, Key="b/3 with space.txt", Body=b"third")["ETag"]))

    def get(**kw):
        o = c.get_object(Bucket=bucket, **kw)
        return (o["Body"].read(), o.get("ContentType"), o.get("Metadata"), o["ETag"], o["ContentLength"],
                o.get("ContentRange"), o["ResponseMetadata"]["HTTPStatusCode"])

    r.append(outcome(lambda: get(Key="a/1.txt")))
    r.append(outcome(lambda: get(Key="a/1.txt", Range="bytes=2-5")))
    r.append(outcome(lambda: get(Key="b/3 with space.txt")))
    r.append(outcome(lambda: get(Key="missing")))
    r.append(outcome(lambda: get(Key="a/1.txt", IfNoneMatch='"5eb63bbbe01eeed093cb22bb8f5acdc3"')))
    r.append(outcome(lambda: get(Key="a/1.txt", IfMatch='"00000000000000000000000000000000"')))
    r.append(outcome(lambda: (lambda h: (h["ContentLength"], h["ETag"], h["Metadata"]))(
        c.head_object(Bucket=bucket, Key="a/1.txt"))))
    r.append(outcome(lambda: c.head_object(Bucket=bucket, Key="missing")))
    r.append(outcome(lambda: (lambda l: ([o["Key"] for o in l.get("Contents", [])],
                                         [p["Prefix"] for p in l.get("CommonPrefixes", [])], l["KeyCount"]))(
        c.list_objects_v2(Bucket=bucket, Delimiter="/"))))
    r.append(outcome(lambda: (lambda l: [(o["Key"], o["Size"], o["ETag"]) for o in l.get("Contents", [])])(
        c.list_objects_v2(Bucket=bucket, Prefix="a/"))))
    r.append(outcome(lambda: (lambda l: ([o["Key"] for o in l.get("Contents", [])], l["IsTruncated"]))(
        c.list_objects(Bucket=bucket, MaxKeys=2))))
    r.append(outcome(lambda: c.copy_object(Bucket=bucket, Key="c/copy.txt",
                                           CopySource={"Bucket": bucket, "Key": "a/1.txt"})["CopyObjectResult"]["ETag"]))
    r.append(outcome(lambda: get(Key="c/copy.txt")[0]))
    r.append(outcome(lambda: c.put_object(Bucket=bucket, Key="bad-md5", Body=b"x",
                                          ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg==")["ETag"]))
    r.append(outcome(lambda: c.delete_object(Bucket=bucket, Key="a/2.txt")["ResponseMetadata"]["HTTPStatusCode"]))
    r.append(outcome(lambda: sorted(d["Key"] for d in c.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "c/copy.txt"}, {"Key": "never-there"}]})["Deleted"])))

    def multipart():
        up = c.create_multipart_upload(Bucket=bucket, Key="mp.bin")["UploadId"]
        e1 = c.upload_part(Bucket=bucket, Key="mp.bin", UploadId=up, PartNumber=1, Body=big)["ETag"]
        e2 = c.upload_part(Bucket=bucket, Key="mp.bin", UploadId=up, PartNumber=2, Body=b"tail")["ETag"]
        parts = [(p["PartNumber"], p["Size"]) for p in c.list_parts(Bucket=bucket, Key="mp.bin", UploadId=up)["Parts"]]
        done = c.complete_multipart_upload(Bucket=bucket, Key="mp.bin", UploadId=up, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
        o = c.get_object(Bucket=bucket, Key="mp.bin")
        return parts, done["ETag"], o["ContentLength"], hashlib.sha256(o["Body"].read()).hexdigest()

    r.append(outcome(multipart))

    def aborted():
        up = c.create_multipart_upload(Bucket=bucket, Key="ab.bin")["UploadId"]
        c.abort_multipart_upload(Bucket=bucket, Key="ab.bin", UploadId=up)
        return c.list_parts(Bucket=bucket, Key="ab.bin", UploadId=up)

    r.append(outcome(aborted))
    r.append(outcome(lambda: c.complete_multipart_upload(Bucket=bucket, Key="x", UploadId="nope",
                                                         MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"a"'}]})))
    url = c.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "a/1.txt"}, ExpiresIn=300)
    r.append(outcome(lambda: urllib.request.urlopen(url).read()))
    r.append(outcome(lambda: [(t["Key"], t["Value"]) for t in (c.put_object_tagging(
        Bucket=bucket, Key="a/1.txt", Tagging={"TagSet": [{"Key": "k", "Value": "v"}]}) and
        c.get_object_tagging(Bucket=bucket, Key="a/1.txt")["TagSet"])]))
    return r


# Calls where moto_server answers differently from AWS S3: the proxy must still give moto's
# answer (it passes the upstream's through), the embedded store gives AWS's.
MOTO_DEVIATES = {
    16: ("error", "BadDigest", 400),  # moto does not check Content-MD5
    21: ("error", "NoSuchUpload", 404),  # moto answers 500 for the parts of an aborted upload
}


def sigv4_client(endpoint, key, secret):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret, config=Config(signature_version="s3v4"))


def test_one_suite_gives_the_same_results_direct_proxied_and_embedded(setup, moto):
    srv, direct = setup
    expected = suite(sigv4_client(moto, "upstream-key", "upstream-secret"), "direct-suite")
    through_proxy = suite(sigv4_client(srv.endpoint, srv.key, srv.secret), PROXIED)
    embedded = suite(sigv4_client(srv.endpoint, srv.key, srv.secret), EMBEDDED)
    for i, (d, p, e) in enumerate(zip(expected, through_proxy, embedded)):
        assert p == d, f"call {i}: proxy {p!r} != upstream {d!r}"
        assert e == MOTO_DEVIATES.get(i, d), f"call {i}: embedded {e!r} != upstream {d!r}"
    # What the proxy wrote is in the upstream bucket, under the upstream's name.
    keys = [o["Key"] for o in direct.list_objects_v2(Bucket=UPSTREAM_BUCKET)["Contents"]]
    assert "a/1.txt" in keys and "mp.bin" in keys


def test_large_single_put_streams_through_the_proxy(setup):
    srv, direct = setup
    c = sigv4_client(srv.endpoint, srv.key, srv.secret)
    data = os.urandom(40_000_000)  # above cairn's 16 MiB request body limit: only streaming passes
    c.put_object(Bucket=PROXIED, Key="huge.bin", Body=data)
    up = direct.get_object(Bucket=UPSTREAM_BUCKET, Key="huge.bin")["Body"].read()
    assert hashlib.sha256(up).digest() == hashlib.sha256(data).digest()
    back = c.get_object(Bucket=PROXIED, Key="huge.bin")["Body"].read()
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()


def test_aws_cli_against_the_proxied_bucket(setup, aws_bin, tmp_path):
    srv, direct = setup
    (tmp_path / "d").mkdir()
    for i in range(3):
        (tmp_path / "d" / f"f{i}.txt").write_text(f"file {i}")
    big = os.urandom(20_000_000)
    (tmp_path / "big.bin").write_bytes(big)
    srv.aws(aws_bin, "s3", "sync", str(tmp_path / "d"), f"s3://{PROXIED}/sync/")
    srv.aws(aws_bin, "s3", "cp", str(tmp_path / "big.bin"), f"s3://{PROXIED}/cli/big.bin")
    out = srv.aws(aws_bin, "s3", "ls", f"s3://{PROXIED}/", "--recursive").stdout
    assert "sync/f2.txt" in out and "cli/big.bin" in out
    srv.aws(aws_bin, "s3", "cp", f"s3://{PROXIED}/cli/big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == big
    srv.aws(aws_bin, "s3", "rm", f"s3://{PROXIED}/sync/", "--recursive")
    assert "Contents" not in direct.list_objects_v2(Bucket=UPSTREAM_BUCKET, Prefix="sync/")
    assert PROXIED in srv.aws(aws_bin, "s3", "ls").stdout


def test_cairn_authorizes_before_anything_reaches_the_upstream(setup, moto):
    srv, direct = setup
    iam = srv.client("iam")
    iam.create_user(UserName="reader")
    iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
                                                "Resource": [f"arn:aws:s3:::{PROXIED}", f"arn:aws:s3:::{PROXIED}/*"]}]}))
    k = iam.create_access_key(UserName="reader")["AccessKey"]
    reader = sigv4_client(srv.endpoint, k["AccessKeyId"], k["SecretAccessKey"])
    assert reader.get_object(Bucket=PROXIED, Key="a/1.txt")["Body"].read() == b"hello world"
    with pytest.raises(ClientError) as e:
        reader.put_object(Bucket=PROXIED, Key="denied.txt", Body=b"x")
    assert (e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]) == ("AccessDenied", 403)
    with pytest.raises(ClientError):
        direct.head_object(Bucket=UPSTREAM_BUCKET, Key="denied.txt")
    # A bad signature never reaches the upstream either.
    with pytest.raises(ClientError) as e:
        sigv4_client(srv.endpoint, srv.key, "wrong-secret").put_object(Bucket=PROXIED, Key="forged.txt", Body=b"x")
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    with pytest.raises(ClientError):
        direct.head_object(Bucket=UPSTREAM_BUCKET, Key="forged.txt")


def test_proxied_calls_are_data_events_in_the_delivered_logs(setup):
    srv, _ = setup
    ct = srv.client("cloudtrail")
    ct.put_event_selectors(TrailName="proxy-trail", EventSelectors=[{
        "ReadWriteType": "All", "IncludeManagementEvents": True,
        "DataResources": [{"Type": "AWS::S3::Object", "Values": [f"arn:aws:s3:::{PROXIED}/"]}]}])
    c = sigv4_client(srv.endpoint, srv.key, srv.secret)
    c.put_object(Bucket=PROXIED, Key="evented.txt", Body=b"0123456789")
    c.get_object(Bucket=PROXIED, Key="evented.txt")["Body"].read()
    with pytest.raises(ClientError):
        c.get_object(Bucket=PROXIED, Key="no-such-key")
    c.list_objects_v2(Bucket=PROXIED, Prefix="evented")
    c.delete_object(Bucket=PROXIED, Key="evented.txt")
    c.put_object(Bucket=EMBEDDED, Key="not-selected.txt", Body=b"x")
    srv.flush("proxy-trail")
    s3 = srv.client("s3")
    records = []
    for o in s3.list_objects_v2(Bucket=LOGS, Prefix="AWSLogs/").get("Contents", []):
        if "/CloudTrail/" in o["Key"]:
            body = s3.get_object(Bucket=LOGS, Key=o["Key"])["Body"].read()
            records += json.loads(gzip.decompress(body))["Records"]
    ours = [r for r in records if r.get("eventCategory") == "Data"
            and (r.get("requestParameters") or {}).get("bucketName") == PROXIED]
    by = {}
    for r in ours:
        by.setdefault(r["eventName"], []).append(r)
    put = [r for r in by["PutObject"] if r["requestParameters"]["key"] == "evented.txt"][0]
    assert put["additionalEventData"]["bytesTransferredIn"] == 10
    assert put["resources"][0] == {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{PROXIED}/evented.txt"}
    get = [r for r in by["GetObject"] if r["requestParameters"]["key"] == "evented.txt"][0]
    assert get["additionalEventData"]["bytesTransferredOut"] == 10 and "errorCode" not in get
    miss = [r for r in by["GetObject"] if r["requestParameters"]["key"] == "no-such-key"][0]
    assert miss["errorCode"] == "NoSuchKey" and miss["errorMessage"]
    lst = [r for r in by["ListObjects"] if r["requestParameters"].get("prefix") == "evented"][0]
    assert lst["requestParameters"]["list-type"] == "2"
    assert any(r["requestParameters"]["key"] == "evented.txt" for r in by["DeleteObject"])
    assert not [r for r in records if (r.get("requestParameters") or {}).get("key") == "not-selected.txt"]


def normalized(text):
    """CLI JSON output without what differs run to run (ids, dates, owners, request ids)."""
    import re
    if not text.strip():
        return text
    try:
        doc = json.loads(text)
    except ValueError:
        return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "DATE", text)

    def walk(v):
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()
                    if k not in ("VersionId", "LastModified", "Owner", "RequestId", "ResponseMetadata",
                                 "CreationDate", "Initiated", "UploadId")}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v
    return walk(doc)


def test_the_aws_cli_gives_the_same_answers_through_the_proxy_as_from_the_upstream(setup, moto, aws_bin, tmp_path):
    srv, direct = setup
    direct.create_bucket(Bucket="cli-direct")
    srv.client("s3").create_bucket(Bucket="cli-embedded")
    (tmp_path / "f.txt").write_text("cli body")
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                                                                 "Action": "s3:GetObject", "Resource": "arn:aws:s3:::BUCKET/*"}]})
    lifecycle = json.dumps({"Rules": [{"ID": "archive", "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
                                       "Transitions": [{"Days": 90, "StorageClass": "GLACIER"}]}]})
    commands = [
        ["s3api", "put-bucket-versioning", "--bucket", "BUCKET", "--versioning-configuration", "Status=Enabled"],
        ["s3api", "get-bucket-versioning", "--bucket", "BUCKET"],
        ["s3", "cp", "--no-progress", str(tmp_path / "f.txt"), "s3://BUCKET/clicmp/f.txt"],
        ["s3", "cp", "--no-progress", str(tmp_path / "f.txt"), "s3://BUCKET/clicmp/f.txt"],
        ["s3api", "list-object-versions", "--bucket", "BUCKET", "--prefix", "clicmp/"],
        ["s3", "ls", "s3://BUCKET/clicmp/"],
        ["s3api", "head-object", "--bucket", "BUCKET", "--key", "clicmp/f.txt"],
        ["s3api", "put-bucket-policy", "--bucket", "BUCKET", "--policy", "POLICY"],
        ["s3api", "put-bucket-lifecycle-configuration", "--bucket", "BUCKET", "--lifecycle-configuration", lifecycle],
        ["s3api", "get-bucket-lifecycle-configuration", "--bucket", "BUCKET"],
        ["s3api", "put-public-access-block", "--bucket", "BUCKET", "--public-access-block-configuration",
         "BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true"],
        ["s3api", "get-public-access-block", "--bucket", "BUCKET"],
        ["s3", "rm", "--no-progress", "s3://BUCKET/clicmp/f.txt"],
        ["s3api", "list-object-versions", "--bucket", "BUCKET", "--prefix", "clicmp/"],
        ["s3api", "get-object", "--bucket", "BUCKET", "--key", "clicmp/missing", str(tmp_path / "out")],
    ]

    def run(env, bucket):
        out = []
        for c in commands:
            args = [a.replace("BUCKET", bucket).replace("POLICY", policy.replace("BUCKET", bucket)) for a in c]
            r = srv.aws(aws_bin, *args, env=env, check=False)
            out.append((r.returncode, normalized(r.stdout.replace(bucket, "B")), r.stderr.replace(bucket, "B").strip()))
        return out

    moto_env = {**srv.env(), "AWS_ENDPOINT_URL": moto, "AWS_ACCESS_KEY_ID": "upstream-key",
                "AWS_SECRET_ACCESS_KEY": "upstream-secret"}
    expected = run(moto_env, "cli-direct")
    got = run(srv.env(), PROXIED)
    for c, e, g in zip(commands, expected, got):
        assert g == e, f"aws {' '.join(c[:2])}: proxy {g!r} != upstream {e!r}"
    assert expected[-1][0] != 0 and "NoSuchKey" in expected[-1][2]
    embedded = run(srv.env(), "cli-embedded")
    for c, e, g in zip(commands, expected, embedded):
        # What AWS (and cairn) send and moto does not: the SSE-S3 header every object has by
        # default, and the lifecycle's minimum transition size in the PUT answer (moto sends it on
        # GET only).
        aws_only = {"head-object": ("ServerSideEncryption", "AES256"),
                    "put-bucket-lifecycle-configuration": ("TransitionDefaultMinimumObjectSize", "all_storage_classes_128K")}
        if c[1] in aws_only:
            field, value = aws_only[c[1]]
            assert g[1].pop(field) == value, (c, g)
            if g[1] == {}:
                g = (g[0], "", g[2])
        assert g == e, f"aws {' '.join(c[:2])}: embedded {g!r} != upstream {e!r}"


def test_presign_mb_and_chunked_uploads_through_the_proxy(setup, aws_bin):
    """`aws s3 presign` (SigV2) and `aws s3 mb` on the proxied bucket, and an aws-chunked
    upload with a CRC32 trailer (what SDKs send over HTTPS): cairn checks the trailer, the
    upstream gets the object and its checksum."""
    import base64
    import zlib

    from s3raw import chunked_body, send
    srv, direct = setup
    c = sigv4_client(srv.endpoint, srv.key, srv.secret)
    c.put_object(Bucket=PROXIED, Key="presign/p.txt", Body=b"presigned through the proxy")
    url = srv.aws(aws_bin, "s3", "presign", f"s3://{PROXIED}/presign/p.txt").stdout.strip()
    assert "AWSAccessKeyId=" in url
    assert urllib.request.urlopen(url).read() == b"presigned through the proxy"
    # The bucket exists upstream: mb answers what the upstream answers (moto: it is yours).
    mb = srv.aws(aws_bin, "s3", "mb", f"s3://{PROXIED}", check=False)
    direct_mb = srv.aws(aws_bin, "s3", "mb", f"s3://{UPSTREAM_BUCKET}", check=False,
                        env={**srv.env(), "AWS_ENDPOINT_URL": direct.meta.endpoint_url,
                             "AWS_ACCESS_KEY_ID": "upstream-key", "AWS_SECRET_ACCESS_KEY": "upstream-secret"})
    assert mb.returncode == direct_mb.returncode
    data = os.urandom(20000) + b"tail"
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    body = chunked_body([data[:10000], data[10000:], b""], trailer=("x-amz-checksum-crc32", crc))
    hs = {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
          "x-amz-trailer": "x-amz-checksum-crc32", "x-amz-sdk-checksum-algorithm": "CRC32"}
    (status, _, text), _ = send(srv, "PUT", f"/{PROXIED}/chunked.bin", headers=hs, body=body,
                                payload="STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    assert status == 200, text
    up = direct.get_object(Bucket=UPSTREAM_BUCKET, Key="chunked.bin", ChecksumMode="ENABLED")
    assert up["Body"].read() == data and up.get("ChecksumCRC32") == crc
    bad = chunked_body([data[:10000], data[10000:], b""], trailer=("x-amz-checksum-crc32", "AAAAAA=="))
    (status, _, text), _ = send(srv, "PUT", f"/{PROXIED}/chunked-bad.bin", headers=hs, body=bad,
                                payload="STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    assert status == 400 and "BadDigest" in text.decode()
    with pytest.raises(ClientError):
        direct.head_object(Bucket=UPSTREAM_BUCKET, Key="chunked-bad.bin")
    # Larger than any body cairn reads whole (16 MiB): decoded on its way and re-encoded for
    # the upstream with the trailer; a bad trailer still stores nothing upstream.
    big = os.urandom(20 << 20) + b"end"
    crc = base64.b64encode(zlib.crc32(big).to_bytes(4, "big")).decode()
    pieces = [big[i:i + 65536] for i in range(0, len(big), 65536)] + [b""]
    hs["x-amz-decoded-content-length"] = str(len(big))
    (status, _, text), _ = send(srv, "PUT", f"/{PROXIED}/chunked-big.bin", headers=hs,
                                body=chunked_body(pieces, trailer=("x-amz-checksum-crc32", crc)),
                                payload="STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    assert status == 200, text
    up = direct.get_object(Bucket=UPSTREAM_BUCKET, Key="chunked-big.bin", ChecksumMode="ENABLED")
    assert up["Body"].read() == big and up.get("ChecksumCRC32") == crc
    (status, _, text), _ = send(srv, "PUT", f"/{PROXIED}/chunked-big-bad.bin", headers=hs,
                                body=chunked_body(pieces, trailer=("x-amz-checksum-crc32", "AAAAAA==")),
                                payload="STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    assert status == 400 and "BadDigest" in text.decode(), text
    with pytest.raises(ClientError):
        direct.head_object(Bucket=UPSTREAM_BUCKET, Key="chunked-big-bad.bin")


def signed_chunked_put(srv, key, chunks, *, declared=None, tamper=False):
    """A chunk-signed aws-chunked PUT (`declared`: the x-amz-decoded-content-length sent;
    `tamper`: the last data chunk's signature, or the final one's, is wrong)."""
    import datetime
    import hashlib
    import hmac
    import http.client
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/us-east-1/s3/aws4_request"
    mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    length = sum(len(c) for c in chunks) if declared is None else declared
    hs = {"host": f"127.0.0.1:{srv.port}", "x-amz-date": amz_date, "x-amz-content-sha256": mode,
          "content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(length)}
    signed = sorted(hs)
    path = f"/{PROXIED}/{key}"
    creq = "\n".join(["PUT", path, "", *[f"{h}:{hs[h]}" for h in signed], "", ";".join(signed), mode])
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])

    def h(k, m):
        return hmac.new(k, m.encode(), hashlib.sha256).digest()
    k = h(h(h(h(("AWS4" + srv.secret).encode(), day), "us-east-1"), "s3"), "aws4_request")
    seed = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    hs["authorization"] = (f"AWS4-HMAC-SHA256 Credential={srv.key}/{scope}, SignedHeaders={';'.join(signed)}, "
                           f"Signature={seed}")
    empty = hashlib.sha256(b"").hexdigest()
    body, prev = b"", seed
    frames = [*chunks, b""]
    bad = len(frames) - 2 if len(frames) > 1 else 0
    for n, data in enumerate(frames):
        csts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, empty, hashlib.sha256(data).hexdigest()])
        sig = hmac.new(k, csts.encode(), hashlib.sha256).hexdigest()
        prev = sig
        if tamper and n == bad:
            sig = ("0" if sig[0] != "0" else "1") + sig[1:]
        body += f"{len(data):x};chunk-signature={sig}\r\n".encode() + data + b"\r\n"
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("PUT", path, body=body, headers=hs)
    r = conn.getresponse()
    out = (r.status, r.read())
    conn.close()
    return out


def test_an_empty_chunk_signed_body_is_checked_before_the_upstream_sees_it(setup):
    """An empty aws-chunked body has no data to hold back: cairn checks its framing and
    final chunk signature whole before the upstream gets anything."""
    srv, direct = setup
    status, text = signed_chunked_put(srv, "empty-bad-sig", [], tamper=True)
    assert status == 403 and b"SignatureDoesNotMatch" in text, text
    with pytest.raises(ClientError):
        direct.head_object(Bucket=UPSTREAM_BUCKET, Key="empty-bad-sig")
    status, text = signed_chunked_put(srv, "empty-good", [])
    assert status == 200, text
    assert direct.get_object(Bucket=UPSTREAM_BUCKET, Key="empty-good")["Body"].read() == b""


def test_a_chunked_body_longer_than_declared_never_reaches_the_upstream_whole(setup):
    """The upstream takes Content-Length bytes as the whole body: a decoded body longer than
    its declared length (here with a bad chunk signature too) must not give it a prefix."""
    srv, direct = setup
    data = os.urandom(200_000)
    status, text = signed_chunked_put(srv, "too-long", [data], declared=10, tamper=True)
    assert status in (400, 403), text
    with pytest.raises(ClientError):
        direct.head_object(Bucket=UPSTREAM_BUCKET, Key="too-long")
    status, text = signed_chunked_put(srv, "too-long-2", [data[:100_000], data[100_000:]], declared=10)
    assert status in (400, 403), text
    with pytest.raises(ClientError):
        direct.head_object(Bucket=UPSTREAM_BUCKET, Key="too-long-2")
    status, text = signed_chunked_put(srv, "just-right", [data[:100_000], data[100_000:]])
    assert status == 200, text
    assert direct.get_object(Bucket=UPSTREAM_BUCKET, Key="just-right")["Body"].read() == data
