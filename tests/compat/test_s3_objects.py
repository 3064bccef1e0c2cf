"""S3 objects through the aws CLI and boto3: cp up and down (multipart for large files),
head-object, and the multipart API with its error cases."""
import hashlib
import json
import os

import pytest
from botocore.exceptions import ClientError

BUCKET = "objects-bucket"


@pytest.fixture(scope="module")
def srv(cairn_server_factory):
    return cairn_server_factory(config=f'[[bucket]]\nname = "{BUCKET}"\n')


def code(e):
    return e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_cp_large_file_up_and_down_uses_multipart(srv, aws_bin, tmp_path):
    data = os.urandom(20_000_000)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    srv.aws(aws_bin, "s3", "cp", str(src), f"s3://{BUCKET}/dir/big.bin")
    head = json.loads(srv.aws(aws_bin, "s3api", "head-object", "--bucket", BUCKET, "--key", "dir/big.bin").stdout)
    assert head["ContentLength"] == 20_000_000 and head["ETag"].endswith('-3"')
    dst = tmp_path / "back.bin"
    srv.aws(aws_bin, "s3", "cp", f"s3://{BUCKET}/dir/big.bin", str(dst))
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert "dir/big.bin" in srv.aws(aws_bin, "s3", "ls", f"s3://{BUCKET}/", "--recursive").stdout
    srv.aws(aws_bin, "s3", "rm", f"s3://{BUCKET}/dir/big.bin")
    assert "big.bin" not in srv.aws(aws_bin, "s3", "ls", f"s3://{BUCKET}/", "--recursive").stdout


def test_multipart_api_and_errors(srv):
    s3 = srv.client("s3")
    up = s3.create_multipart_upload(Bucket=BUCKET, Key="mp.bin", ContentType="application/x-test", Metadata={"who": "me"})
    uid = up["UploadId"]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=BUCKET)["Uploads"]] == [uid]
    p1 = os.urandom(5 << 20)
    p2 = b"tail"
    e1 = s3.upload_part(Bucket=BUCKET, Key="mp.bin", UploadId=uid, PartNumber=1, Body=p1)["ETag"]
    e2 = s3.upload_part(Bucket=BUCKET, Key="mp.bin", UploadId=uid, PartNumber=2, Body=p2)["ETag"]
    parts = s3.list_parts(Bucket=BUCKET, Key="mp.bin", UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == [(1, e1, len(p1)), (2, e2, 4)]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=BUCKET, Key="mp.bin", UploadId=uid,
                                     MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]})
    assert code(e) == ("InvalidPartOrder", 400)
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=BUCKET, Key="mp.bin", UploadId=uid,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e2}, {"PartNumber": 2, "ETag": e2}]})
    assert code(e) == ("InvalidPart", 400)
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=BUCKET, Key="mp.bin", UploadId=uid,
                                     MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 3, "ETag": e2}]})
    assert code(e) == ("InvalidPart", 400)
    done = s3.complete_multipart_upload(Bucket=BUCKET, Key="mp.bin", UploadId=uid,
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    md5s = hashlib.md5(p1).digest() + hashlib.md5(p2).digest()
    assert done["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-2"'
    got = s3.get_object(Bucket=BUCKET, Key="mp.bin")
    assert got["Body"].read() == p1 + p2 and got["Metadata"] == {"who": "me"} and got["ContentType"] == "application/x-test"
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket=BUCKET, Key="mp.bin", UploadId=uid)
    assert code(e) == ("NoSuchUpload", 404)
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_small_parts_abort_and_bad_ids(srv):
    s3 = srv.client("s3")
    uid = s3.create_multipart_upload(Bucket=BUCKET, Key="small.bin")["UploadId"]
    e1 = s3.upload_part(Bucket=BUCKET, Key="small.bin", UploadId=uid, PartNumber=1, Body=b"a" * 100)["ETag"]
    e2 = s3.upload_part(Bucket=BUCKET, Key="small.bin", UploadId=uid, PartNumber=2, Body=b"b")["ETag"]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=BUCKET, Key="small.bin", UploadId=uid,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    assert code(e) == ("EntityTooSmall", 400)
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=BUCKET, Key="small.bin", UploadId=uid, PartNumber=10001, Body=b"x")
    assert code(e) == ("InvalidArgument", 400)
    s3.abort_multipart_upload(Bucket=BUCKET, Key="small.bin", UploadId=uid)
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=BUCKET, Key="small.bin", UploadId=uid, PartNumber=3, Body=b"x")
    assert code(e) == ("NoSuchUpload", 404)
    for bad in ["../../etc", "0" * 31 + "G", "x"]:
        with pytest.raises(ClientError) as e:
            s3.list_parts(Bucket=BUCKET, Key="small.bin", UploadId=bad)
        assert code(e) == ("NoSuchUpload", 404)
    with pytest.raises(ClientError):
        s3.get_object(Bucket=BUCKET, Key="small.bin")


def test_ranges_and_conditional_gets(srv):
    s3 = srv.client("s3")
    body = bytes(range(256)) * 4
    etag = s3.put_object(Bucket=BUCKET, Key="r.bin", Body=body)["ETag"]
    r = s3.get_object(Bucket=BUCKET, Key="r.bin", Range="bytes=10-19")
    assert r["Body"].read() == body[10:20] and r["ContentRange"] == f"bytes 10-19/{len(body)}"
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert s3.get_object(Bucket=BUCKET, Key="r.bin", Range="bytes=-5")["Body"].read() == body[-5:]
    assert s3.get_object(Bucket=BUCKET, Key="r.bin", Range="bytes=1000-")["Body"].read() == body[1000:]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key="r.bin", Range="bytes=5000-")
    assert code(e) == ("InvalidRange", 416)
    assert s3.get_object(Bucket=BUCKET, Key="r.bin", IfMatch=etag)["Body"].read() == body
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key="r.bin", IfMatch='"0000"')
    assert code(e) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key="r.bin", IfNoneMatch=etag)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304


def test_sync_rm_recursive_and_server_side_copy(srv, aws_bin, tmp_path):
    src = tmp_path / "tree"
    (src / "a" / "b").mkdir(parents=True)
    for p in ["x.txt", "a/y.txt", "a/b/z.txt"]:
        (src / p).write_text(p)
    srv.aws(aws_bin, "s3", "sync", str(src), f"s3://{BUCKET}/tree/")
    listed = srv.aws(aws_bin, "s3", "ls", f"s3://{BUCKET}/tree/", "--recursive").stdout
    assert all(f"tree/{p}" in listed for p in ["x.txt", "a/y.txt", "a/b/z.txt"])
    srv.aws(aws_bin, "s3", "cp", f"s3://{BUCKET}/tree/x.txt", f"s3://{BUCKET}/copied/x.txt")
    s3 = srv.client("s3")
    assert s3.get_object(Bucket=BUCKET, Key="copied/x.txt")["Body"].read() == b"x.txt"
    (src / "x.txt").unlink()
    srv.aws(aws_bin, "s3", "sync", str(src), f"s3://{BUCKET}/tree/", "--delete")
    listed = srv.aws(aws_bin, "s3", "ls", f"s3://{BUCKET}/tree/", "--recursive").stdout
    assert "tree/x.txt" not in listed and "tree/a/y.txt" in listed
    srv.aws(aws_bin, "s3", "rm", f"s3://{BUCKET}/tree/", "--recursive")
    assert "tree/" not in srv.aws(aws_bin, "s3", "ls", f"s3://{BUCKET}/", "--recursive").stdout


def test_delete_objects_reports_per_key_results(srv):
    s3 = srv.client("s3")
    for k in ["d/1", "d/2"]:
        s3.put_object(Bucket=BUCKET, Key=k, Body=b"x")
    out = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "d/1"}, {"Key": "d/2"}, {"Key": "d/never"}]})
    assert sorted(d["Key"] for d in out["Deleted"]) == ["d/1", "d/2", "d/never"]
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="d/")["KeyCount"] == 0


def test_copy_source_is_opaque_and_authorized_against_its_own_bucket(srv):
    s3 = srv.client("s3")
    s3.create_bucket(Bucket="secret-bucket")
    s3.put_object(Bucket="secret-bucket", Key="k", Body=b"secret")
    s3.put_object(Bucket=BUCKET, Key="a/../k", Body=b"dotdot")
    # `..` in a copy source is part of the key, never a path step into another bucket.
    s3.copy_object(Bucket=BUCKET, Key="c1", CopySource=f"{BUCKET}/a/../k")
    assert s3.get_object(Bucket=BUCKET, Key="c1")["Body"].read() == b"dotdot"
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=BUCKET, Key="c2", CopySource=f"{BUCKET}/../secret-bucket/k")
    assert code(e) == ("NoSuchKey", 404)
    # A user who may write here but not read the other bucket cannot copy out of it.
    iam = srv.client("iam")
    iam.create_user(UserName="writer")
    iam.put_user_policy(UserName="writer", PolicyName="p", PolicyDocument=json.dumps({"Statement": [
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": f"arn:aws:s3:::{BUCKET}/*"}]}))
    k = iam.create_access_key(UserName="writer")["AccessKey"]
    w = srv.client("s3", key=k["AccessKeyId"], secret=k["SecretAccessKey"])
    w.copy_object(Bucket=BUCKET, Key="c3", CopySource=f"{BUCKET}/c1")
    with pytest.raises(ClientError) as e:
        w.copy_object(Bucket=BUCKET, Key="c4", CopySource="secret-bucket/k")
    assert code(e) == ("AccessDenied", 403)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=BUCKET, Key="c4")


def test_bad_content_md5(srv):
    s3 = srv.client("s3")
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=BUCKET, Key="md5", Body=b"abc", ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==")
    assert code(e) == ("BadDigest", 400)
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=BUCKET, Key="md5", Body=b"abc", ContentMD5="not base64!")
    assert code(e) == ("InvalidDigest", 400)


def test_presigned_urls(srv):
    import time
    import urllib.error
    import urllib.request
    import boto3
    from botocore.config import Config
    # SigV4 presigning (the SigV2 form `aws s3 presign` makes is tested below).
    s3 = boto3.client("s3", endpoint_url=srv.endpoint, region_name="us-east-1", aws_access_key_id=srv.key,
                      aws_secret_access_key=srv.secret, config=Config(signature_version="s3v4"))
    s3.put_object(Bucket=BUCKET, Key="shared.txt", Body=b"shared")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "shared.txt"}, ExpiresIn=60)
    assert urllib.request.urlopen(url).read() == b"shared"
    # Tampering with the signed query fails the signature.
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url.replace("shared.txt", "shared.txT"))
    assert e.value.code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in e.value.read()
    # B12: expired.
    short = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "shared.txt"}, ExpiresIn=1)
    time.sleep(2.2)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(short)
    body = e.value.read()
    assert e.value.code == 403 and b"<Code>AccessDenied</Code>" in body and b"Request has expired" in body
    # B13: a lifetime beyond 7 days.
    long = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "shared.txt"}, ExpiresIn=604801)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(long)
    assert e.value.code == 400 and b"<Code>AuthorizationQueryParametersError</Code>" in e.value.read()


def test_aws_s3_presign_sigv2_urls(srv, aws_bin):
    """`aws s3 presign` (awscli v1) signs with SigV2 query parameters."""
    import time
    import urllib.error
    import urllib.request
    srv.client("s3").put_object(Bucket=BUCKET, Key="dir/pre signed.txt", Body=b"v2 body")
    url = srv.aws(aws_bin, "s3", "presign", f"s3://{BUCKET}/dir/pre signed.txt", "--expires-in", "60").stdout.strip()
    assert "AWSAccessKeyId=" in url and "Signature=" in url, url
    assert urllib.request.urlopen(url).read() == b"v2 body"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url.replace("signed.txt", "signed.txT"))
    assert e.value.code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in e.value.read()
    short = srv.aws(aws_bin, "s3", "presign", f"s3://{BUCKET}/dir/pre signed.txt", "--expires-in", "1").stdout.strip()
    time.sleep(2.2)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(short)
    body = e.value.read()
    assert e.value.code == 403 and b"Request has expired" in body
    # boto3's default S3 presigner in us-east-1 also makes SigV2 URLs.
    import boto3
    default = boto3.client("s3", endpoint_url=srv.endpoint, region_name="us-east-1",
                           aws_access_key_id=srv.key, aws_secret_access_key=srv.secret)
    url2 = default.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "dir/pre signed.txt"})
    assert urllib.request.urlopen(url2).read() == b"v2 body"


def test_list_multipart_uploads_with_parts_of_several_uploads_and_keys(srv):
    # Issue 14's report: two uploads of one key and one of another, a 5 MiB part each, then
    # ListMultipartUploads answered InternalFailure. It must list all three, keys in order.
    s3 = srv.client("s3")
    keys = ["lmu/a", "lmu/a", "lmu/b"]
    ids = [s3.create_multipart_upload(Bucket=BUCKET, Key=k)["UploadId"] for k in keys]
    for k, u in zip(keys, ids):
        s3.upload_part(Bucket=BUCKET, Key=k, UploadId=u, PartNumber=1, Body=b"p" * (5 << 20))
    got = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="lmu/")["Uploads"]
    assert sorted((u["Key"], u["UploadId"]) for u in got) == sorted(zip(keys, ids))
    assert [u["Key"] for u in got] == sorted(keys)
    page = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="lmu/", MaxUploads=2)
    assert page["IsTruncated"] and len(page["Uploads"]) == 2
    rest = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="lmu/", KeyMarker=page["NextKeyMarker"],
                                     UploadIdMarker=page["NextUploadIdMarker"])["Uploads"]
    assert len(page["Uploads"]) + len(rest) == 3
    seen = page["Uploads"] + rest
    assert [(u["Key"], u["UploadId"]) for u in seen] == [(u["Key"], u["UploadId"]) for u in got]
    # A delimiter rolls keys up; a page ending on a common prefix continues after its group.
    extra = s3.create_multipart_upload(Bucket=BUCKET, Key="lmu/z/1")["UploadId"]
    top = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="lmu/", Delimiter="/")
    assert [u["Key"] for u in top["Uploads"]] == ["lmu/a", "lmu/a", "lmu/b"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["lmu/z/"]
    p1 = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="lmu/z", Delimiter="/", MaxUploads=1)
    assert [p["Prefix"] for p in p1["CommonPrefixes"]] == ["lmu/z/"] and not p1["IsTruncated"]
    # Keys come back URL-encoded when asked.
    odd = s3.create_multipart_upload(Bucket=BUCKET, Key="lmu/sp ace")["UploadId"]
    enc = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="lmu/sp", EncodingType="url")
    assert [u["Key"] for u in enc["Uploads"]] == ["lmu/sp%20ace"] and enc["EncodingType"] == "url"
    for k, u in list(zip(keys, ids)) + [("lmu/z/1", extra), ("lmu/sp ace", odd)]:
        s3.abort_multipart_upload(Bucket=BUCKET, Key=k, UploadId=u)
    assert s3.list_multipart_uploads(Bucket=BUCKET, Prefix="lmu/").get("Uploads", []) == []
