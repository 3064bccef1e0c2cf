"""S3 buckets through the aws CLI and boto3: mb/ls/rb, locations, and the "not configured"
answers every bucket gives until configured (what Terraform's AWS provider reads)."""
import json

import pytest
from botocore.exceptions import ClientError


@pytest.fixture(scope="module")
def srv(cairn_server_factory):
    return cairn_server_factory()


def code(e):
    return e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_mb_ls_rb_with_the_cli(srv, aws_bin):
    srv.aws(aws_bin, "s3", "mb", "s3://cli-bucket-1")
    out = srv.aws(aws_bin, "s3", "ls").stdout
    assert "cli-bucket-1" in out
    srv.aws(aws_bin, "s3api", "head-bucket", "--bucket", "cli-bucket-1")
    loc = json.loads(srv.aws(aws_bin, "s3api", "get-bucket-location", "--bucket", "cli-bucket-1").stdout)
    assert loc["LocationConstraint"] is None
    srv.aws(aws_bin, "s3", "rb", "s3://cli-bucket-1")
    assert "cli-bucket-1" not in srv.aws(aws_bin, "s3", "ls").stdout


def test_bucket_errors(srv):
    s3 = srv.client("s3")
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket="Not_Valid")
    assert code(e) == ("InvalidBucketName", 400)
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket="wrong-region-bucket", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert code(e) == ("IllegalLocationConstraintException", 400)
    s3.create_bucket(Bucket="full-bucket")
    s3.put_object(Bucket="full-bucket", Key="k", Body=b"x")
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket="full-bucket")
    assert code(e) == ("BucketNotEmpty", 409)
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket="never-created")
    assert code(e) == ("NoSuchBucket", 404)
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket="never-created")
    assert code(e)[1] == 404


def test_regional_bucket_location(srv):
    west = srv.client("s3", region="eu-west-1")
    west.create_bucket(Bucket="west-bucket", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert west.get_bucket_location(Bucket="west-bucket")["LocationConstraint"] == "eu-west-1"
    with pytest.raises(ClientError) as e:
        west.create_bucket(Bucket="west-bucket", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert code(e) == ("BucketAlreadyOwnedByYou", 409)
    names = [b["Name"] for b in srv.client("s3").list_buckets()["Buckets"]]
    assert "west-bucket" in names and names == sorted(names)


def test_unconfigured_bucket_answers(srv):
    s3 = srv.client("s3")
    s3.create_bucket(Bucket="plain-bucket")
    missing = {
        "get_bucket_policy": "NoSuchBucketPolicy",
        "get_bucket_cors": "NoSuchCORSConfiguration",
        "get_bucket_website": "NoSuchWebsiteConfiguration",
        "get_bucket_lifecycle_configuration": "NoSuchLifecycleConfiguration",
        "get_bucket_replication": "ReplicationConfigurationNotFoundError",
        "get_object_lock_configuration": "ObjectLockConfigurationNotFoundError",
        "get_bucket_tagging": "NoSuchTagSet",
        "get_public_access_block": "NoSuchPublicAccessBlockConfiguration",
    }
    for call, want in missing.items():
        with pytest.raises(ClientError) as e:
            getattr(s3, call)(Bucket="plain-bucket")
        assert code(e) == (want, 404), call
    assert "Status" not in s3.get_bucket_versioning(Bucket="plain-bucket")
    assert s3.get_bucket_request_payment(Bucket="plain-bucket")["Payer"] == "BucketOwner"
    assert "LoggingEnabled" not in s3.get_bucket_logging(Bucket="plain-bucket")
    assert "Status" not in s3.get_bucket_accelerate_configuration(Bucket="plain-bucket")
    enc = s3.get_bucket_encryption(Bucket="plain-bucket")["ServerSideEncryptionConfiguration"]
    assert enc["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    acl = s3.get_bucket_acl(Bucket="plain-bucket")
    assert acl["Grants"][0]["Permission"] == "FULL_CONTROL" and acl["Owner"]["ID"] == srv.account
    with pytest.raises(ClientError) as e:
        s3.get_bucket_versioning(Bucket="never-created")
    assert code(e) == ("NoSuchBucket", 404)


def test_bucket_calls_are_management_events(srv):
    srv.client("s3").create_bucket(Bucket="audited-bucket")
    evs = srv.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "CreateBucket"}])["Events"]
    recs = [json.loads(e["CloudTrailEvent"]) for e in evs]
    mine = [r for r in recs if r["requestParameters"]["bucketName"] == "audited-bucket"]
    assert mine and mine[0]["eventSource"] == "s3.amazonaws.com" and mine[0]["managementEvent"] is True
