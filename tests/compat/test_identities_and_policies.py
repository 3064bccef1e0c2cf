"""IAM users, access keys, inline policies, roles and AssumeRole through boto3 and the aws
CLI; policy evaluation (explicit deny > allow > implicit deny); and who-did-what in the
records, including denials."""
import gzip
import json
import time

import pytest
from botocore.exceptions import ClientError

ACCOUNT = "123456789012"
BUCKET = "policy-logs"
TRAIL = "policy-trail"
CONFIG = f"""
[[bucket]]
name = "{BUCKET}"
[[trail]]
name = "{TRAIL}"
bucket = "{BUCKET}"
multi_region = true
log_file_validation = true
logging = true
"""

READ_TRAILS = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["cloudtrail:Get*", "cloudtrail:Describe*", "cloudtrail:List*", "cloudtrail:LookupEvents"], "Resource": "*"}]}


@pytest.fixture(scope="module")
def srv(cairn_server_factory):
    return cairn_server_factory(config=CONFIG, delivery="1s", digest="3s")


@pytest.fixture(scope="module")
def auditor(srv):
    iam = srv.client("iam")
    iam.create_user(UserName="auditor")
    iam.put_user_policy(UserName="auditor", PolicyName="read-trails", PolicyDocument=json.dumps(READ_TRAILS))
    k = iam.create_access_key(UserName="auditor")["AccessKey"]
    return k["AccessKeyId"], k["SecretAccessKey"]


def code(e):
    return e.value.response["Error"]["Code"]


def delivered(srv):
    srv.flush(TRAIL)
    s3 = srv.client("s3")
    recs = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"AWSLogs/{ACCOUNT}/CloudTrail/"):
        for o in page.get("Contents", []):
            recs += json.loads(gzip.decompress(s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()))["Records"]
    return recs


def test_iam_users_keys_and_policies_round_trip(srv, auditor):
    iam = srv.client("iam")
    u = iam.get_user(UserName="auditor")["User"]
    assert u["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/auditor" and u["UserId"].startswith("AIDA")
    assert [x["UserName"] for x in iam.list_users()["Users"]] == ["auditor"]
    assert iam.list_user_policies(UserName="auditor")["PolicyNames"] == ["read-trails"]
    assert iam.get_user_policy(UserName="auditor", PolicyName="read-trails")["PolicyDocument"] == READ_TRAILS
    keys = iam.list_access_keys(UserName="auditor")["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in keys] == [auditor[0]] and keys[0]["Status"] == "Active"
    with pytest.raises(ClientError) as e:
        iam.get_user(UserName="nobody")
    assert code(e) == "NoSuchEntity" and e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as e:
        iam.create_user(UserName="auditor")
    assert code(e) == "EntityAlreadyExists"
    with pytest.raises(ClientError) as e:
        iam.put_user_policy(UserName="auditor", PolicyName="bad", PolicyDocument="{not json")
    assert code(e) == "MalformedPolicyDocument"
    with pytest.raises(ClientError) as e:
        iam.delete_user(UserName="auditor")
    assert code(e) == "DeleteConflict"
    sts = srv.client("sts", key=auditor[0], secret=auditor[1])
    ident = sts.get_caller_identity()
    assert ident["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/auditor" and ident["Account"] == ACCOUNT


def test_a_user_without_stop_logging_is_denied_and_the_denial_is_recorded(srv, auditor):
    ct = srv.client("cloudtrail", key=auditor[0], secret=auditor[1])
    assert ct.get_trail_status(Name=TRAIL)["IsLogging"] is True
    with pytest.raises(ClientError) as e:
        ct.stop_logging(Name=TRAIL)
    assert code(e) == "AccessDeniedException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert f"User: arn:aws:iam::{ACCOUNT}:user/auditor is not authorized to perform: cloudtrail:StopLogging" in e.value.response["Error"]["Message"]
    root = srv.client("cloudtrail")
    assert root.get_trail_status(Name=TRAIL)["IsLogging"] is True, "a denied request changed nothing"
    recs = [r for r in delivered(srv) if r["eventName"] == "StopLogging"]
    assert len(recs) == 1
    r = recs[0]
    assert r["errorCode"] == "AccessDeniedException" and "not authorized" in r["errorMessage"]
    assert r["userIdentity"]["type"] == "IAMUser" and r["userIdentity"]["userName"] == "auditor"
    assert r["userIdentity"]["accessKeyId"] == auditor[0] and r["userIdentity"]["arn"].endswith(":user/auditor")
    assert "responseElements" not in r or r["responseElements"] is None
    # LookupEvents by user name finds it as well.
    evs = root.lookup_events(LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": "auditor"}])["Events"]
    assert "StopLogging" in {e["EventName"] for e in evs}


def test_explicit_deny_beats_allow(srv):
    iam = srv.client("iam")
    iam.create_user(UserName="operator")
    iam.put_user_policy(UserName="operator", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "cloudtrail:*", "Resource": "*"}]}))
    k = iam.create_access_key(UserName="operator")["AccessKey"]
    ct = srv.client("cloudtrail", key=k["AccessKeyId"], secret=k["SecretAccessKey"])
    ct.add_tags(ResourceId=f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/{TRAIL}", TagsList=[{"Key": "a", "Value": "b"}])
    iam.put_user_policy(UserName="operator", PolicyName="no-stop", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": ["cloudtrail:StopLogging", "cloudtrail:DeleteTrail"],
                                                  "Resource": f"arn:aws:cloudtrail:*:{ACCOUNT}:trail/*"}]}))
    for call in [lambda: ct.stop_logging(Name=TRAIL), lambda: ct.delete_trail(Name=TRAIL)]:
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "AccessDeniedException" and "explicit deny" in e.value.response["Error"]["Message"]
    ct.add_tags(ResourceId=f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/{TRAIL}", TagsList=[{"Key": "c", "Value": "d"}])
    # An inactive key stops working at once; deleting it too.
    iam.update_access_key(UserName="operator", AccessKeyId=k["AccessKeyId"], Status="Inactive")
    with pytest.raises(ClientError) as e:
        ct.list_trails()
    assert code(e) == "UnrecognizedClientException"
    iam.delete_access_key(UserName="operator", AccessKeyId=k["AccessKeyId"])
    assert iam.list_access_keys(UserName="operator")["AccessKeyMetadata"] == []


def test_assume_role_gives_assumed_role_identities_in_records(srv, auditor):
    iam = srv.client("iam")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/auditor"}, "Action": "sts:AssumeRole"}]}
    role = iam.create_role(RoleName="trail-admin", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    assert role["Arn"] == f"arn:aws:iam::{ACCOUNT}:role/trail-admin" and role["AssumeRolePolicyDocument"] == trust
    iam.put_role_policy(RoleName="trail-admin", PolicyName="tags", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["cloudtrail:AddTags", "cloudtrail:GetTrail"], "Resource": "*"}]}))
    assert iam.get_role_policy(RoleName="trail-admin", PolicyName="tags")["PolicyName"] == "tags"
    sts = srv.client("sts", key=auditor[0], secret=auditor[1])
    creds = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="ops-session", DurationSeconds=900)
    c = creds["Credentials"]
    assert c["AccessKeyId"].startswith("ASIA") and creds["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/trail-admin/ops-session"
    ct = srv.client("cloudtrail", key=c["AccessKeyId"], secret=c["SecretAccessKey"], token=c["SessionToken"])
    ct.add_tags(ResourceId=f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/{TRAIL}", TagsList=[{"Key": "by", "Value": "role"}])
    with pytest.raises(ClientError) as e:
        ct.stop_logging(Name=TRAIL)
    assert code(e) == "AccessDeniedException"
    # Without the session token the temporary key is refused.
    bare = srv.client("cloudtrail", key=c["AccessKeyId"], secret=c["SecretAccessKey"])
    with pytest.raises(ClientError) as e:
        bare.get_trail(Name=TRAIL)
    assert code(e) == "UnrecognizedClientException"
    ident = srv.client("sts", key=c["AccessKeyId"], secret=c["SecretAccessKey"], token=c["SessionToken"]).get_caller_identity()
    assert ident["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/trail-admin/ops-session"
    # Someone the trust policy does not name cannot assume the role.
    iam.create_user(UserName="outsider")
    ok = iam.create_access_key(UserName="outsider")["AccessKey"]
    with pytest.raises(ClientError) as e:
        srv.client("sts", key=ok["AccessKeyId"], secret=ok["SecretAccessKey"]).assume_role(RoleArn=role["Arn"], RoleSessionName="x1")
    assert code(e) == "AccessDenied"

    recs = delivered(srv)
    tagged = [r for r in recs if r["eventName"] == "AddTags" and r["userIdentity"]["type"] == "AssumedRole"]
    assert tagged, "the role session's call is in the trail"
    ui = tagged[0]["userIdentity"]
    assert ui["arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/trail-admin/ops-session"
    assert ui["principalId"].endswith(":ops-session") and ui["accessKeyId"] == c["AccessKeyId"]
    sc = ui["sessionContext"]
    assert sc["sessionIssuer"]["arn"] == role["Arn"] and sc["sessionIssuer"]["type"] == "Role"
    assert sc["attributes"]["mfaAuthenticated"] == "false"
    assumed = [r for r in recs if r["eventName"] == "AssumeRole" and not r.get("errorCode")]
    assert assumed and assumed[0]["eventSource"] == "sts.amazonaws.com" and assumed[0]["awsRegion"] == "us-east-1"
    # Secrets never reach the records.
    blob = json.dumps(recs)
    assert c["SecretAccessKey"] not in blob and c["SessionToken"] not in blob and auditor[1] not in blob
    created = [r for r in recs if r["eventName"] == "CreateAccessKey"]
    assert created and "secretAccessKey" not in json.dumps(created[0]["responseElements"])


def test_cli_iam_and_sts_commands(srv, aws_bin):
    out = json.loads(srv.aws(aws_bin, "iam", "create-user", "--user-name", "cli-user").stdout)
    assert out["User"]["UserName"] == "cli-user"
    out = json.loads(srv.aws(aws_bin, "sts", "get-caller-identity").stdout)
    assert out["Arn"] == f"arn:aws:iam::{ACCOUNT}:root"
    srv.aws(aws_bin, "iam", "delete-user", "--user-name", "cli-user")
    r = srv.aws(aws_bin, "iam", "get-user", "--user-name", "cli-user", check=False)
    assert r.returncode == 254 or r.returncode == 255
    assert "NoSuchEntity" in r.stderr
