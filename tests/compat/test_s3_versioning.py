"""Versioned buckets through the aws CLI and boto3: overwrites and deletes keep every version,
delete markers, GET by version, ListObjectVersions, permanent deletes of one version."""
import json

import pytest
from botocore.exceptions import ClientError

BUCKET = "versioned-bucket"


@pytest.fixture(scope="module")
def srv(cairn_server_factory):
    return cairn_server_factory(config=f'[[bucket]]\nname = "{BUCKET}"\n')


def code(e):
    return e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_versioning_with_the_cli(srv, aws_bin, tmp_path):
    srv.aws(aws_bin, "s3api", "put-bucket-versioning", "--bucket", BUCKET, "--versioning-configuration", "Status=Enabled")
    out = json.loads(srv.aws(aws_bin, "s3api", "get-bucket-versioning", "--bucket", BUCKET).stdout)
    assert out["Status"] == "Enabled"
    f = tmp_path / "log.json"
    for body in ["one", "two"]:
        f.write_text(body)
        srv.aws(aws_bin, "s3", "cp", str(f), f"s3://{BUCKET}/AWSLogs/log.json")
    srv.aws(aws_bin, "s3", "rm", f"s3://{BUCKET}/AWSLogs/log.json")
    versions = json.loads(srv.aws(aws_bin, "s3api", "list-object-versions", "--bucket", BUCKET, "--prefix", "AWSLogs/").stdout)
    assert len(versions["Versions"]) == 2 and len(versions["DeleteMarkers"]) == 1
    assert versions["DeleteMarkers"][0]["IsLatest"] is True
    assert all(v["IsLatest"] is False for v in versions["Versions"])
    oldest = versions["Versions"][-1]["VersionId"]
    dst = tmp_path / "old.json"
    srv.aws(aws_bin, "s3api", "get-object", "--bucket", BUCKET, "--key", "AWSLogs/log.json", "--version-id", oldest, str(dst))
    assert dst.read_text() == "one"


def test_versions_markers_and_permanent_deletes(srv):
    s3 = srv.client("s3")
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=BUCKET, Key="k", Body=b"v1")["VersionId"]
    v2 = s3.put_object(Bucket=BUCKET, Key="k", Body=b"v2")["VersionId"]
    assert v1 != v2
    head = s3.head_object(Bucket=BUCKET, Key="k")
    assert head["VersionId"] == v2 and head["ContentLength"] == 2
    d = s3.delete_object(Bucket=BUCKET, Key="k")
    assert d["DeleteMarker"] is True
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key="k")
    assert code(e) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key="k", VersionId=d["VersionId"])
    assert code(e) == ("MethodNotAllowed", 405)
    assert s3.get_object(Bucket=BUCKET, Key="k", VersionId=v1)["Body"].read() == b"v1"
    # Deleting the marker restores the newest version.
    s3.delete_object(Bucket=BUCKET, Key="k", VersionId=d["VersionId"])
    assert s3.get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"v2"
    # Permanently deleting v2 makes v1 current.
    s3.delete_object(Bucket=BUCKET, Key="k", VersionId=v2)
    assert s3.get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"v1"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key="k", VersionId="nope")
    assert code(e) == ("NoSuchVersion", 404)
    # DeleteObjects with and without version ids.
    v3 = s3.put_object(Bucket=BUCKET, Key="m", Body=b"m")["VersionId"]
    out = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "m"}, {"Key": "k", "VersionId": v1}]})
    by_key = {d["Key"]: d for d in out["Deleted"]}
    assert by_key["m"]["DeleteMarker"] is True and "DeleteMarkerVersionId" in by_key["m"]
    assert by_key["k"]["VersionId"] == v1
    assert s3.get_object(Bucket=BUCKET, Key="m", VersionId=v3)["Body"].read() == b"m"
    # Pagination of versions.
    pages = s3.get_paginator("list_object_versions").paginate(Bucket=BUCKET, PaginationConfig={"PageSize": 1})
    seen = []
    for p in pages:
        seen += [(v["Key"], v["VersionId"]) for v in p.get("Versions", []) + p.get("DeleteMarkers", [])]
    assert len(seen) == len(set(seen)) and len(seen) >= 4


def test_suspended_versioning(srv):
    s3 = srv.client("s3")
    s3.create_bucket(Bucket="suspend-bucket")
    s3.put_bucket_versioning(Bucket="suspend-bucket", VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket="suspend-bucket", Key="k", Body=b"v1")["VersionId"]
    s3.put_bucket_versioning(Bucket="suspend-bucket", VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket="suspend-bucket")["Status"] == "Suspended"
    r = s3.put_object(Bucket="suspend-bucket", Key="k", Body=b"n1")
    assert r.get("VersionId") == "null"
    s3.put_object(Bucket="suspend-bucket", Key="k", Body=b"n2")
    vs = s3.list_object_versions(Bucket="suspend-bucket")["Versions"]
    assert sorted(v["VersionId"] for v in vs) == sorted(["null", v1])
    with pytest.raises(ClientError) as e:
        s3.put_bucket_versioning(Bucket="suspend-bucket", VersioningConfiguration={"Status": "Maybe"})
    assert code(e) == ("MalformedXML", 400)
