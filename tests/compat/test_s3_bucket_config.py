"""Bucket configuration through the aws CLI and boto3: bucket policies (enforced on every
request, the seed's CloudTrail statements accepted), public access blocks, tagging, lifecycle
and default encryption documents."""
import json

import pytest
from botocore.exceptions import ClientError

ACCOUNT = "123456789012"
BUCKET = "config-bucket"


@pytest.fixture(scope="module")
def srv(cairn_server_factory):
    return cairn_server_factory(config=f'[[bucket]]\nname = "{BUCKET}"\n')


def code(e):
    return e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]


def cloudtrail_policy(bucket):
    trail = f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/acme-audit-trail"
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "AWSCloudTrailAclCheck20150319", "Effect": "Allow", "Principal": {"Service": "cloudtrail.amazonaws.com"},
         "Action": "s3:GetBucketAcl", "Resource": f"arn:aws:s3:::{bucket}", "Condition": {"StringEquals": {"aws:SourceArn": trail}}},
        {"Sid": "AWSCloudTrailWrite20150319", "Effect": "Allow", "Principal": {"Service": "cloudtrail.amazonaws.com"},
         "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/AWSLogs/{ACCOUNT}/*",
         "Condition": {"StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control", "aws:SourceArn": trail}}},
    ]}


def test_policy_round_trip_and_cli(srv, aws_bin):
    doc = json.dumps(cloudtrail_policy(BUCKET))
    srv.aws(aws_bin, "s3api", "put-bucket-policy", "--bucket", BUCKET, "--policy", doc)
    got = json.loads(json.loads(srv.aws(aws_bin, "s3api", "get-bucket-policy", "--bucket", BUCKET).stdout)["Policy"])
    assert got == cloudtrail_policy(BUCKET)
    s3 = srv.client("s3")
    with pytest.raises(ClientError) as e:
        s3.put_bucket_policy(Bucket=BUCKET, Policy="{not a policy")
    assert code(e) == ("MalformedPolicy", 400)
    s3.delete_bucket_policy(Bucket=BUCKET)
    with pytest.raises(ClientError) as e:
        s3.get_bucket_policy(Bucket=BUCKET)
    assert code(e) == ("NoSuchBucketPolicy", 404)


def test_bucket_policy_is_enforced_deny_beats_the_root_and_allow_grants_users(srv):
    s3 = srv.client("s3")
    s3.create_bucket(Bucket="locked-bucket")
    s3.put_object(Bucket="locked-bucket", Key="AWSLogs/x", Body=b"log")
    deny_delete = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
         "Resource": "arn:aws:s3:::locked-bucket/AWSLogs/*"},
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/reader"}, "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::locked-bucket/*"}]}
    s3.put_bucket_policy(Bucket="locked-bucket", Policy=json.dumps(deny_delete))
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket="locked-bucket", Key="AWSLogs/x")
    assert code(e) == ("AccessDenied", 403)
    assert s3.get_object(Bucket="locked-bucket", Key="AWSLogs/x")["Body"].read() == b"log"
    iam = srv.client("iam")
    iam.create_user(UserName="reader")
    k = iam.create_access_key(UserName="reader")["AccessKey"]
    reader = srv.client("s3", key=k["AccessKeyId"], secret=k["SecretAccessKey"])
    assert reader.get_object(Bucket="locked-bucket", Key="AWSLogs/x")["Body"].read() == b"log"
    with pytest.raises(ClientError) as e:
        reader.put_object(Bucket="locked-bucket", Key="AWSLogs/y", Body=b"forged")
    assert code(e) == ("AccessDenied", 403)


def test_public_access_block_refuses_public_policies(srv):
    s3 = srv.client("s3")
    s3.create_bucket(Bucket="private-bucket")
    s3.put_public_access_block(Bucket="private-bucket", PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    pab = s3.get_public_access_block(Bucket="private-bucket")["PublicAccessBlockConfiguration"]
    assert all(pab.values())
    public = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                                      "Resource": "arn:aws:s3:::private-bucket/*"}]}
    with pytest.raises(ClientError) as e:
        s3.put_bucket_policy(Bucket="private-bucket", Policy=json.dumps(public))
    assert code(e) == ("AccessDenied", 403)
    s3.put_bucket_policy(Bucket="private-bucket", Policy=json.dumps(cloudtrail_policy("private-bucket")))
    s3.delete_public_access_block(Bucket="private-bucket")
    with pytest.raises(ClientError) as e:
        s3.get_public_access_block(Bucket="private-bucket")
    assert code(e) == ("NoSuchPublicAccessBlockConfiguration", 404)


def test_tagging_lifecycle_and_encryption_documents(srv):
    s3 = srv.client("s3")
    s3.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": [{"Key": "Project", "Value": "acme"}]})
    assert s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"] == [{"Key": "Project", "Value": "acme"}]
    s3.delete_bucket_tagging(Bucket=BUCKET)
    with pytest.raises(ClientError) as e:
        s3.get_bucket_tagging(Bucket=BUCKET)
    assert code(e) == ("NoSuchTagSet", 404)
    rule = {"ID": "glacier-after-90-days", "Status": "Enabled", "Filter": {"Prefix": ""},
            "Transitions": [{"Days": 90, "StorageClass": "GLACIER"}]}
    s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [rule]})
    got = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert got[0]["ID"] == "glacier-after-90-days" and got[0]["Transitions"][0] == {"Days": 90, "StorageClass": "GLACIER"}
    s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}]})
    enc = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert enc["BucketKeyEnabled"] is True
    with pytest.raises(ClientError) as e:
        s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": []})
    assert code(e)[1] == 400


def test_trail_delivery_goes_through_the_bucket_policy(srv):
    """The seed's Troubleshooting: a bucket policy without the CloudTrail statement makes
    delivery fail, visible as LatestDeliveryError; fixing the policy lets it resume."""
    import time
    s3, ct = srv.client("s3"), srv.client("cloudtrail")
    s3.create_bucket(Bucket="trail-logs-guarded")
    unrelated = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                                                          "Action": "s3:GetObject", "Resource": "arn:aws:s3:::trail-logs-guarded/*"}]}
    s3.put_bucket_policy(Bucket="trail-logs-guarded", Policy=json.dumps(unrelated))
    with pytest.raises(ClientError) as e:
        ct.create_trail(Name="acme-audit-trail", S3BucketName="trail-logs-guarded")
    assert code(e) == ("InsufficientS3BucketPolicyException", 400)
    s3.put_bucket_policy(Bucket="trail-logs-guarded", Policy=json.dumps(cloudtrail_policy("trail-logs-guarded")))
    ct.create_trail(Name="acme-audit-trail", S3BucketName="trail-logs-guarded")
    ct.start_logging(Name="acme-audit-trail")
    time.sleep(1.1)
    srv.flush("acme-audit-trail")
    st = ct.get_trail_status(Name="acme-audit-trail")
    assert "LatestDeliveryTime" in st and "LatestDeliveryError" not in st
    # The policy loses its CloudTrail statements: delivery is refused and reported.
    s3.put_bucket_policy(Bucket="trail-logs-guarded", Policy=json.dumps(unrelated))
    ct.list_trails()
    srv.flush("acme-audit-trail")
    st = ct.get_trail_status(Name="acme-audit-trail")
    assert st.get("LatestDeliveryError") == "AccessDenied", st
    # Restored: the pending files are delivered and the error clears.
    s3.put_bucket_policy(Bucket="trail-logs-guarded", Policy=json.dumps(cloudtrail_policy("trail-logs-guarded")))
    deadline = time.time() + 15
    while time.time() < deadline:
        srv.flush("acme-audit-trail")
        st = ct.get_trail_status(Name="acme-audit-trail")
        if "LatestDeliveryError" not in st:
            break
        time.sleep(0.5)
    assert "LatestDeliveryError" not in st, st


def test_account_level_public_access_block(srv, monkeypatch):
    """S3 Control's account-wide block. SDKs address it at `ACCOUNT.<endpoint host>`; DNS for
    that name is the deployment's business (as for AWS), so this test resolves
    `*.localhost` to loopback in-process."""
    import socket

    import boto3
    real = socket.getaddrinfo

    def resolve(host, *a, **kw):
        if isinstance(host, str) and host.endswith(".localhost"):
            host = "127.0.0.1"
        return real(host, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    ctl = boto3.client("s3control", endpoint_url=f"http://localhost:{srv.port}", region_name="us-east-1",
                       aws_access_key_id=srv.key, aws_secret_access_key=srv.secret)
    with pytest.raises(ClientError) as e:
        ctl.get_public_access_block(AccountId=ACCOUNT)
    assert code(e) == ("NoSuchPublicAccessBlockConfiguration", 404)
    ctl.put_public_access_block(AccountId=ACCOUNT, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": False, "BlockPublicPolicy": True, "RestrictPublicBuckets": False})
    got = ctl.get_public_access_block(AccountId=ACCOUNT)["PublicAccessBlockConfiguration"]
    assert got == {"BlockPublicAcls": True, "IgnorePublicAcls": False, "BlockPublicPolicy": True, "RestrictPublicBuckets": False}
    # Another account's block is not ours to read.
    with pytest.raises(ClientError) as e:
        ctl.get_public_access_block(AccountId="210987654321")
    assert code(e)[1] == 403
    # The account's block binds a bucket that has none of its own.
    s3 = srv.client("s3")
    s3.create_bucket(Bucket="account-blocked")
    public = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                                      "Resource": "arn:aws:s3:::account-blocked/*"}]}
    with pytest.raises(ClientError) as e:
        s3.put_bucket_policy(Bucket="account-blocked", Policy=json.dumps(public))
    assert code(e) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as e:
        s3.put_bucket_acl(Bucket="account-blocked", ACL="public-read")
    assert code(e) == ("AccessDenied", 403)
    ctl.delete_public_access_block(AccountId=ACCOUNT)
    s3.put_bucket_policy(Bucket="account-blocked", Policy=json.dumps(public))
    with pytest.raises(ClientError) as e:
        ctl.get_public_access_block(AccountId=ACCOUNT)
    assert code(e)[0] == "NoSuchPublicAccessBlockConfiguration"
