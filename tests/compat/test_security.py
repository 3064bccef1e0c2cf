"""Attacks a low-privilege key could make (issue: "Security first"), each performed as
described and asserted to fail, and each refusal found in the trail. The seven confirmed
attacks are reproduced exactly; the gaps found by reading follow."""
import gzip
import hashlib
import json
import time
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

from rawreq import send, signed

ACCOUNT = "123456789012"
LOGS = "sec-logs"
TRAIL = "sec-trail"
CONFIG = f"""
[[bucket]]
name = "{LOGS}"
[[trail]]
name = "{TRAIL}"
bucket = "{LOGS}"
multi_region = true
log_file_validation = true
logging = true
event_selectors = '[{{"ReadWriteType":"All","IncludeManagementEvents":true,"DataResources":[{{"Type":"AWS::S3::Object","Values":["arn:aws:s3"]}}]}}]'
"""


@pytest.fixture(scope="module")
def srv(cairn_server_factory):
    return cairn_server_factory(config=CONFIG, delivery="1s", digest="3s")


def code(e):
    return e.value.response["Error"]["Code"]


def status(e):
    return e.value.response["ResponseMetadata"]["HTTPStatusCode"]


def make_user(srv, name, statements, path=None):
    iam = srv.client("iam")
    iam.create_user(UserName=name, **({"Path": path} if path else {}))
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))
    k = iam.create_access_key(UserName=name)["AccessKey"]
    return k["AccessKeyId"], k["SecretAccessKey"]


def client_for(srv, service, name, statements):
    """A client of `service` for a new user `name` whose policy holds `statements`."""
    key, secret = make_user(srv, name, statements)
    return srv.client(service, key=key, secret=secret)


def delivered(srv, trail=TRAIL, bucket=LOGS):
    srv.flush(trail)
    s3 = srv.client("s3")
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"AWSLogs/{ACCOUNT}/CloudTrail/"):
        for o in page.get("Contents", []):
            raw = gzip.decompress(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())
            out.append((o["Key"], raw, json.loads(raw)["Records"]))
    return out


def records(srv, **kw):
    return [r for _, _, recs in delivered(srv, **kw) for r in recs]


def test_1_copy_object_reads_its_source_under_the_source_bucket_policy(srv):
    root = srv.client("s3")
    root.create_bucket(Bucket="secrets")
    root.put_object(Bucket="secrets", Key="k", Body=b"top secret")
    mallory = make_user(srv, "mallory", [
        {"Effect": "Allow", "Action": ["s3:CreateBucket", "s3:PutBucketPolicy"], "Resource": "arn:aws:s3:::mine-*"},
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": "arn:aws:s3:::mine-*/*"}])
    s3 = srv.client("s3", key=mallory[0], secret=mallory[1])
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="secrets", Key="k")
    assert (code(e), status(e)) == ("AccessDenied", 403)
    s3.create_bucket(Bucket="mine-x")
    # The attack's policy: grant herself GetObject on every bucket through her own bucket.
    grab = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/mallory"},
                                                   "Action": "s3:GetObject", "Resource": "arn:aws:s3:::*"}]}
    with pytest.raises(ClientError) as e:
        s3.put_bucket_policy(Bucket="mine-x", Policy=json.dumps(grab))
    assert (code(e), status(e)) == ("MalformedPolicy", 400)
    assert "Policy has invalid resource" in e.value.response["Error"]["Message"]
    # Even a policy that names only her own bucket grants nothing on the source.
    own = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/mallory"},
                                                  "Action": "s3:GetObject", "Resource": ["arn:aws:s3:::mine-x", "arn:aws:s3:::mine-x/*"]}]}
    s3.put_bucket_policy(Bucket="mine-x", Policy=json.dumps(own))
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket="mine-x", Key="loot", CopySource={"Bucket": "secrets", "Key": "k"})
    assert (code(e), status(e)) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="mine-x", Key="loot")
    assert code(e) == "NoSuchKey"
    # UploadPartCopy is held to the same rule.
    up = s3.create_multipart_upload(Bucket="mine-x", Key="loot2")["UploadId"]
    with pytest.raises(ClientError) as e:
        s3.upload_part_copy(Bucket="mine-x", Key="loot2", UploadId=up, PartNumber=1, CopySource={"Bucket": "secrets", "Key": "k"})
    assert (code(e), status(e)) == ("AccessDenied", 403)
    assert root.list_parts(Bucket="mine-x", Key="loot2", UploadId=up).get("Parts", []) == []
    # A source bucket's Deny binds even the account root.
    root.put_bucket_policy(Bucket="secrets", Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::secrets/*"}]}))
    with pytest.raises(ClientError) as e:
        root.copy_object(Bucket="mine-x", Key="by-root", CopySource={"Bucket": "secrets", "Key": "k"})
    assert code(e) == "AccessDenied"
    # The refusals are in the trail, as the data events of the destination.
    recs = records(srv)
    copies = [r for r in recs if r["eventName"] in ("CopyObject", "UploadPartCopy") and r.get("errorCode") == "AccessDenied"]
    assert {r["eventName"] for r in copies} == {"CopyObject", "UploadPartCopy"}
    assert any(r["userIdentity"].get("userName") == "mallory" for r in copies)
    assert any(r["userIdentity"]["type"] == "Root" for r in copies)
    pol = [r for r in recs if r["eventName"] == "PutBucketPolicy" and r.get("errorCode") == "MalformedPolicy"]
    assert pol and pol[0]["userIdentity"]["userName"] == "mallory"


def test_1_a_source_bucket_policy_can_still_grant_a_copy(srv):
    root = srv.client("s3")
    root.create_bucket(Bucket="shared-src")
    root.put_object(Bucket="shared-src", Key="doc", Body=b"shared")
    root.create_bucket(Bucket="reader-dst")
    reader = make_user(srv, "copier", [{"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": "arn:aws:s3:::reader-dst/*"}])
    root.put_bucket_policy(Bucket="shared-src", Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/copier"}, "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::shared-src/*"}]}))
    s3 = srv.client("s3", key=reader[0], secret=reader[1])
    s3.copy_object(Bucket="reader-dst", Key="copy", CopySource={"Bucket": "shared-src", "Key": "doc"})
    assert s3.get_object(Bucket="reader-dst", Key="copy")["Body"].read() == b"shared"
    # A versioned source is read at the version asked for (s3:GetObjectVersion).
    root.put_bucket_versioning(Bucket="shared-src", VersioningConfiguration={"Status": "Enabled"})
    v1 = root.put_object(Bucket="shared-src", Key="doc", Body=b"v1")["VersionId"]
    root.put_object(Bucket="shared-src", Key="doc", Body=b"v2")
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket="reader-dst", Key="old", CopySource={"Bucket": "shared-src", "Key": "doc", "VersionId": v1})
    assert code(e) == "AccessDenied"
    root.copy_object(Bucket="reader-dst", Key="old", CopySource={"Bucket": "shared-src", "Key": "doc", "VersionId": v1})
    assert root.get_object(Bucket="reader-dst", Key="old")["Body"].read() == b"v1"


def _form(srv, body, key=None, secret=None, service="iam"):
    h = signed(srv, service, "POST", "/", body, headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
               key=key, secret=secret)
    return h


def test_2_a_signed_request_body_cannot_be_swapped(srv):
    iam = srv.client("iam")
    iam.create_user(UserName="victim")
    before = iam.list_access_keys(UserName="victim")["AccessKeyMetadata"]
    # Query protocol: ListUsers signed by the root key, replayed as CreateAccessKey.
    listed = b"Action=ListUsers&Version=2010-05-08"
    h = _form(srv, listed)
    assert send(srv, "POST", "/", h, listed)[0] == 200
    h["X-Amz-Content-SHA256"] = hashlib.sha256(listed).hexdigest()
    swapped = b"Action=CreateAccessKey&UserName=victim&Version=2010-05-08"
    st, _, data = send(srv, "POST", "/", h, swapped)
    assert st == 403 and b"<Code>SignatureDoesNotMatch</Code>" in data, data
    assert iam.list_access_keys(UserName="victim")["AccessKeyMetadata"] == before
    # JSON protocol: a GetTrailStatus replayed as StopLogging's body on the same target.
    target = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.GetTrailStatus"
    body = json.dumps({"Name": TRAIL}).encode()
    h = signed(srv, "cloudtrail", "POST", "/", body, headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"})
    h["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    other = json.dumps({"Name": "x" * 5}).encode()
    st, _, data = send(srv, "POST", "/", h, other)
    assert (st, json.loads(data)["__type"]) == (400, "InvalidSignatureException")
    # REST-JSON (cloudtrail-data): the same.
    pae = json.dumps({"auditEvents": []}).encode()
    h = signed(srv, "cloudtrail-data", "POST", "/PutAuditEvents?channelArn=x", pae, headers={"Content-Type": "application/json"})
    h["X-Amz-Content-SHA256"] = hashlib.sha256(pae).hexdigest()
    st, hdrs, data = send(srv, "POST", "/PutAuditEvents?channelArn=x", h, b'{"auditEvents": [{"id": "1"}]}')
    assert st == 400 and "InvalidSignatureException" in (data.decode() + str(hdrs)), data
    # REST-XML (S3): the declared hash is compared with the body, and is itself signed.
    s3 = srv.client("s3")
    s3.create_bucket(Bucket="swap-bucket")
    h = signed(srv, "s3", "PUT", "/swap-bucket/k", b"original", s3=True)
    st, _, data = send(srv, "PUT", "/swap-bucket/k", h, b"replaced")
    assert st == 400 and b"<Code>XAmzContentSHA256Mismatch</Code>" in data
    h["X-Amz-Content-SHA256"] = hashlib.sha256(b"replaced").hexdigest()
    st, _, data = send(srv, "PUT", "/swap-bucket/k", h, b"replaced")
    assert st == 403 and b"<Code>SignatureDoesNotMatch</Code>" in data
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="swap-bucket", Key="k")
    assert status(e) == 404
    # The refused replays are recorded.
    recs = records(srv)
    bad = [r for r in recs if r["eventName"] == "CreateAccessKey" and r.get("errorCode") == "SignatureDoesNotMatch"]
    assert bad and bad[0]["userIdentity"]["type"] == "Unknown"


def test_3_assume_role_assumes_exactly_the_role_named(srv):
    iam = srv.client("iam")
    trust = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"}]})
    iam.create_role(RoleName="admin", AssumeRolePolicyDocument=trust)
    iam.put_role_policy(RoleName="admin", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    tool = iam.create_role(RoleName="dev-tool", Path="/dev/", AssumeRolePolicyDocument=trust)["Role"]
    assert tool["Arn"] == f"arn:aws:iam::{ACCOUNT}:role/dev/dev-tool"
    dev = make_user(srv, "dev", [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": f"arn:aws:iam::{ACCOUNT}:role/dev/*"}])
    sts = srv.client("sts", key=dev[0], secret=dev[1])
    for arn in [f"arn:aws:iam::{ACCOUNT}:role/dev/admin",            # the reproduced attack
                f"arn:aws:iam::{ACCOUNT}:role/admin",                # not allowed by the policy
                f"arn:aws-cn:iam::{ACCOUNT}:role/dev/dev-tool",      # another partition
                f"arn:aws:iam::999999999999:role/dev/dev-tool",      # another account
                f"arn:aws:iam::{ACCOUNT}:role/other/dev-tool"]:      # the right name on the wrong path
        with pytest.raises(ClientError) as e:
            sts.assume_role(RoleArn=arn, RoleSessionName="s1")
        assert (code(e), status(e)) == ("AccessDenied", 403), arn
    creds = sts.assume_role(RoleArn=tool["Arn"], RoleSessionName="ok")["Credentials"]
    who = srv.client("sts", key=creds["AccessKeyId"], secret=creds["SecretAccessKey"], token=creds["SessionToken"]).get_caller_identity()
    assert who["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/dev-tool/ok"
    recs = [r for r in records(srv) if r["eventName"] == "AssumeRole"]
    ok = [r for r in recs if "errorCode" not in r]
    assert ok and ok[-1]["resources"][0]["ARN"] == tool["Arn"]
    denied = [r for r in recs if r.get("errorCode") == "AccessDenied"]
    assert len(denied) >= 5 and all(r["userIdentity"]["userName"] == "dev" for r in denied)


def test_5_an_arn_in_another_partition_does_not_escape_a_deny(srv):
    trail_arn = f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/{TRAIL}"
    op = make_user(srv, "op5", [
        {"Effect": "Allow", "Action": "cloudtrail:*", "Resource": "*"},
        {"Effect": "Deny", "Action": ["cloudtrail:StopLogging", "cloudtrail:DeleteTrail", "cloudtrail:UpdateTrail",
                                      "cloudtrail:PutEventSelectors"], "Resource": trail_arn}])
    ct = srv.client("cloudtrail", key=op[0], secret=op[1])
    with pytest.raises(ClientError) as e:
        ct.stop_logging(Name=TRAIL)
    assert code(e) == "AccessDeniedException"
    forged = f"arn:aws-x:cloudtrail:us-east-1:{ACCOUNT}:trail/{TRAIL}"
    calls = [lambda n: ct.stop_logging(Name=n), lambda n: ct.delete_trail(Name=n),
             lambda n: ct.update_trail(Name=n, EnableLogFileValidation=False),
             lambda n: ct.put_event_selectors(TrailName=n, EventSelectors=[{"ReadWriteType": "All", "IncludeManagementEvents": False}])]
    for call in calls:
        with pytest.raises(ClientError) as e:
            call(forged)
        assert code(e) == "CloudTrailARNInvalidException"
        # The real ARN, and the name signed from a shadow region, are denied.
        for name, region in [(trail_arn, "us-east-1"), (TRAIL, "us-east-1")]:
            with pytest.raises(ClientError) as e:
                call(name)
            assert code(e) == "AccessDeniedException"
    shadow = srv.client("cloudtrail", key=op[0], secret=op[1], region="us-west-2")
    with pytest.raises(ClientError) as e:
        shadow.stop_logging(Name=TRAIL)
    assert code(e) in ("AccessDeniedException", "InvalidHomeRegionException")
    root = srv.client("cloudtrail")
    assert root.get_trail_status(Name=TRAIL)["IsLogging"] is True
    assert root.get_event_selectors(TrailName=TRAIL)["EventSelectors"][0]["IncludeManagementEvents"] is True
    # A region cairn does not serve is refused, whichever protocol.
    with pytest.raises(ClientError) as e:
        srv.client("cloudtrail", region="xx-fake-1").list_trails()
    assert code(e) == "InvalidSignatureException"
    # (botocore would retry S3 in the region the error names, so this one is sent by hand.)
    st, _, data = send(srv, "GET", f"/{LOGS}", signed(srv, "s3", "GET", f"/{LOGS}", s3=True, region="xx-fake-1"))
    assert st == 400 and b"<Code>AuthorizationHeaderMalformed</Code>" in data and b"<Region>us-east-1</Region>" in data
    with pytest.raises(ClientError) as e:
        srv.client("iam", region="xx-fake-1").list_users()
    assert code(e) == "SignatureDoesNotMatch"
    # Recorded in a region cairn serves, so single-region trails see it.
    evs = root.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "ListTrails"}])["Events"]
    refused = [json.loads(e["CloudTrailEvent"]) for e in evs]
    refused = [r for r in refused if r.get("errorCode") == "InvalidSignatureException"]
    assert refused and all(r["awsRegion"] == "us-east-1" for r in refused)


def test_6_stop_logging_and_delete_trail_are_in_the_trail_they_end(srv):
    s3, ct = srv.client("s3"), srv.client("cloudtrail")
    s3.create_bucket(Bucket="stop-logs")
    ct.create_trail(Name="stopper", S3BucketName="stop-logs")
    ct.start_logging(Name="stopper")
    rid = ct.stop_logging(Name="stopper")["ResponseMetadata"]["RequestId"]
    recs = records(srv, trail="stopper", bucket="stop-logs")
    assert [r["eventName"] for r in recs if r.get("requestID") == rid] == ["StopLogging"]
    ct.start_logging(Name="stopper")
    rid = ct.delete_trail(Name="stopper")["ResponseMetadata"]["RequestId"]
    srv.flush(TRAIL)
    got = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="stop-logs", Prefix=f"AWSLogs/{ACCOUNT}/CloudTrail/"):
        for o in page.get("Contents", []):
            got += json.loads(gzip.decompress(s3.get_object(Bucket="stop-logs", Key=o["Key"])["Body"].read()))["Records"]
    assert [r["eventName"] for r in got if r.get("requestID") == rid] == ["DeleteTrail"]


def test_7_presigned_credentials_never_reach_the_trail(srv):
    sts = srv.client("sts")
    iam = srv.client("iam")
    # Presigned GETs, as EKS- and Vault-style logins make them.
    urls = [sts.generate_presigned_url("get_caller_identity", ExpiresIn=600, HttpMethod="GET"),
            iam.generate_presigned_url("list_users", ExpiresIn=600, HttpMethod="GET")]
    for u in urls:
        assert "X-Amz-Signature=" in u
        with urllib.request.urlopen(u) as r:
            assert r.status == 200
    # A role session's token travels in the query too.
    trust = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"}]})
    role = iam.create_role(RoleName="presigner", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    k = make_user(srv, "presign-user", [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role}])
    c = srv.client("sts", key=k[0], secret=k[1]).assume_role(RoleArn=role, RoleSessionName="presigned")["Credentials"]
    sess = srv.client("sts", key=c["AccessKeyId"], secret=c["SecretAccessKey"], token=c["SessionToken"])
    u = sess.generate_presigned_url("get_caller_identity", ExpiresIn=600, HttpMethod="GET")
    assert "X-Amz-Security-Token=" in u
    with urllib.request.urlopen(u) as r:
        assert r.status == 200
    forbidden = [b"x-amz-signature", b"x-amz-credential", b"x-amz-security-token"]
    for key, raw, _ in delivered(srv):
        low = raw.lower()
        assert not any(f in low for f in forbidden), key
    ct = srv.client("cloudtrail")
    for name in ["GetCallerIdentity", "ListUsers"]:
        evs = ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": name}])["Events"]
        assert evs
        for ev in evs:
            assert not any(f.decode() in ev["CloudTrailEvent"].lower() for f in forbidden)


def test_10_a_deny_on_aws_username_binds_that_user(srv):
    srv.client("s3").create_bucket(Bucket="u5-bucket")
    u5 = make_user(srv, "u5", [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": {"StringEquals": {"aws:username": "u5"}}}])
    with pytest.raises(ClientError) as e:
        srv.client("s3", key=u5[0], secret=u5[1]).put_object(Bucket="u5-bucket", Key="x", Body=b"x")
    assert code(e) == "AccessDenied"
    u6 = make_user(srv, "u6", [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::u5-bucket/${aws:username}/*"},
        {"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": {"NotIpAddress": {"aws:SourceIp": "127.0.0.0/8"}}}])
    s3 = srv.client("s3", key=u6[0], secret=u6[1])
    s3.put_object(Bucket="u5-bucket", Key="u6/own", Body=b"x")
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="u5-bucket", Key="u5/other", Body=b"x")
    assert code(e) == "AccessDenied"
    # The operators people write are accepted, not refused as malformed.
    iam = srv.client("iam")
    iam.put_user_policy(UserName="u6", PolicyName="dates", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": {
            "DateGreaterThan": {"aws:CurrentTime": "2000-01-01T00:00:00Z"},
            "ForAnyValue:StringEquals": {"aws:PrincipalType": ["User"]},
            "NumericGreaterThanEquals": {"aws:EpochTime": 1}}}]}))
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="u5-bucket", Key="u6/own", Body=b"x")
    assert code(e) == "AccessDenied"


def test_10_object_lock_and_acl_headers_need_their_own_permissions(srv):
    root = srv.client("s3")
    root.create_bucket(Bucket="locked-writes", ObjectLockEnabledForBucket=True)
    w = make_user(srv, "writer", [{"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": "arn:aws:s3:::locked-writes/*"}])
    s3 = srv.client("s3", key=w[0], secret=w[1])
    s3.put_object(Bucket="locked-writes", Key="plain", Body=b"x")
    far = "2099-01-01T00:00:00Z"
    for extra in [dict(ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=far), dict(ObjectLockLegalHoldStatus="ON"),
                  dict(ACL="bucket-owner-full-control"), dict(Tagging="a=b")]:
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket="locked-writes", Key="guarded", Body=b"x", ChecksumAlgorithm="CRC32", **extra)
        assert code(e) == "AccessDenied", extra
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="locked-writes", Key="guarded")
    assert status(e) == 404
    # BlockPublicAcls binds ACL headers on writes too.
    root.create_bucket(Bucket="pab-writes")
    root.put_public_access_block(Bucket="pab-writes", PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    for acl in ["public-read", "public-read-write", "authenticated-read"]:
        with pytest.raises(ClientError) as e:
            root.put_object(Bucket="pab-writes", Key="k", Body=b"x", ACL=acl)
        assert (code(e), status(e)) == ("AccessDenied", 403), acl
    with pytest.raises(ClientError) as e:
        root.put_object(Bucket="pab-writes", Key="k", Body=b"x", GrantRead='uri="http://acs.amazonaws.com/groups/global/AllUsers"')
    assert code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        root.create_multipart_upload(Bucket="pab-writes", Key="k", ACL="public-read")
    assert code(e) == "AccessDenied"
    root.put_object(Bucket="pab-writes", Key="k", Body=b"x", ACL="private")


def test_10_sse_c_is_refused_not_ignored(srv):
    s3 = srv.client("s3")
    s3.create_bucket(Bucket="ssec")
    key = b"k" * 32
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="ssec", Key="x", Body=b"secret", SSECustomerAlgorithm="AES256", SSECustomerKey=key)
    assert (code(e), status(e)) == ("NotImplemented", 501)
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="ssec", Key="x")
    assert status(e) == 404


def test_10_bucket_policies_that_are_public_in_s3s_sense_are_blocked(srv):
    s3 = srv.client("s3")
    s3.create_bucket(Bucket="pub-check")
    s3.put_public_access_block(Bucket="pub-check", PublicAccessBlockConfiguration={
        "BlockPublicAcls": False, "IgnorePublicAcls": False, "BlockPublicPolicy": True, "RestrictPublicBuckets": False})
    res = "arn:aws:s3:::pub-check/*"
    public = [
        {"Effect": "Allow", "NotPrincipal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/x"}, "Action": "s3:GetObject", "Resource": res},
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": res, "Condition": {"StringLike": {"aws:SourceArn": "*"}}},
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": res, "Condition": {"StringEquals": {"s3:prefix": "x"}}},
    ]
    for st in public:
        with pytest.raises(ClientError) as e:
            s3.put_bucket_policy(Bucket="pub-check", Policy=json.dumps({"Version": "2012-10-17", "Statement": [st]}))
        assert (code(e), status(e)) == ("AccessDenied", 403), st
    without_principal = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": res}
    with pytest.raises(ClientError) as e:
        s3.put_bucket_policy(Bucket="pub-check", Policy=json.dumps({"Version": "2012-10-17", "Statement": [without_principal]}))
    assert code(e) == "MalformedPolicy"
    pinned = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": res,
              "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}}}
    s3.put_bucket_policy(Bucket="pub-check", Policy=json.dumps({"Version": "2012-10-17", "Statement": [pinned]}))


def test_8_put_audit_events_cannot_pose_as_an_aws_management_event(srv):
    ct = srv.client("cloudtrail")
    app = make_user(srv, "app-writer", [{"Effect": "Allow", "Action": "cloudtrail-data:PutAuditEvents", "Resource": "*"}])
    channel = ct.create_channel(Name="app-channel", Source="Custom",
                                Destinations=[{"Type": "EVENT_DATA_STORE", "Location": "x-y-z"}])["ChannelArn"]
    forged = json.dumps({"version": "1.0", "userIdentity": {"type": "Root", "principalId": ACCOUNT,
                                                            "arn": f"arn:aws:iam::{ACCOUNT}:root"},
                         "eventSource": "iam.amazonaws.com", "eventName": "CreateUser",
                         "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()), "UID": "forged-1",
                         "recipientAccountId": ACCOUNT})
    data = srv.client("cloudtrail-data", key=app[0], secret=app[1])
    out = data.put_audit_events(channelArn=channel, auditEvents=[{"id": "f1", "eventData": forged}])
    event_id = out["successful"][0]["eventID"]
    # The trail selects management events (and all S3 data events): the forged event is not
    # among them, nor in LookupEvents.
    recs = records(srv)
    assert not [r for r in recs if r.get("eventID") == event_id]
    assert not [r for r in recs if "forged-1" in json.dumps(r)]
    evs = ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "CreateUser"}])["Events"]
    assert not [e for e in evs if "forged-1" in e["CloudTrailEvent"]]
    # A trail that asks for Lake events gets it, wrapped: the claims stay under eventData,
    # the top level names the real caller and the channel.
    s3 = srv.client("s3")
    s3.create_bucket(Bucket="lake-logs")
    ct.create_trail(Name="lake-trail", S3BucketName="lake-logs")
    ct.put_event_selectors(TrailName="lake-trail", AdvancedEventSelectors=[
        {"Name": "lake", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["ActivityAuditLog"]}]}])
    ct.start_logging(Name="lake-trail")
    out = data.put_audit_events(channelArn=channel, auditEvents=[{"id": "f2", "eventData": forged.replace("forged-1", "forged-2")}])
    event_id = out["successful"][0]["eventID"]
    got = [r for r in records(srv, trail="lake-trail", bucket="lake-logs") if r.get("eventID") == event_id]
    assert len(got) == 1
    r = got[0]
    assert r["eventCategory"] == "ActivityAuditLog" and "eventSource" not in r and "eventName" not in r
    assert r["eventData"]["eventSource"] == "iam.amazonaws.com"
    assert r["userIdentity"]["userName"] == "app-writer" and r["userIdentity"]["type"] == "IAMUser"
    assert r["metadata"]["channelARN"] == channel and r["recipientAccountId"] == ACCOUNT


def test_10_sigv2_presigned_urls_sign_every_subresource_and_expire_within_a_week(srv):
    import botocore.config
    s3 = srv.client("s3")
    s3.create_bucket(Bucket="v2-bucket")
    s3.put_object(Bucket="v2-bucket", Key="k", Body=b"v2")
    v2 = __import__("boto3").client("s3", endpoint_url=srv.endpoint, region_name="us-east-1",
                                    aws_access_key_id=srv.key, aws_secret_access_key=srv.secret,
                                    config=botocore.config.Config(signature_version="s3"))
    url = v2.generate_presigned_url("get_object", Params={"Bucket": "v2-bucket", "Key": "k"}, ExpiresIn=600)
    assert "AWSAccessKeyId=" in url
    with urllib.request.urlopen(url) as r:
        assert r.read() == b"v2"
    # The same signature with a sub-resource it does not cover is refused.
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url + "&retention")
    assert e.value.code == 403
    long = v2.generate_presigned_url("get_object", Params={"Bucket": "v2-bucket", "Key": "k"}, ExpiresIn=8 * 86400)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(long)
    assert e.value.code == 400 and b"AuthorizationQueryParametersError" in e.value.read()


def test_review_deleting_a_version_needs_delete_object_version(srv):
    root = srv.client("s3")
    root.create_bucket(Bucket="keep-versions")
    root.put_bucket_versioning(Bucket="keep-versions", VersioningConfiguration={"Status": "Enabled"})
    v = root.put_object(Bucket="keep-versions", Key="AWSLogs/x", Body=b"log")["VersionId"]
    s3 = client_for(srv, "s3", "version-eraser", [
        {"Effect": "Allow", "Action": "s3:DeleteObject", "Resource": "arn:aws:s3:::keep-versions/*"},
        {"Effect": "Deny", "Action": "s3:DeleteObjectVersion", "Resource": "arn:aws:s3:::keep-versions/*"}])
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket="keep-versions", Key="AWSLogs/x", VersionId=v)
    assert code(e) == "AccessDenied"
    assert root.get_object(Bucket="keep-versions", Key="AWSLogs/x", VersionId=v)["Body"].read() == b"log"


def test_review_tag_conditions_bind_copies_tagging_and_retention_bodies(srv):
    root = srv.client("s3")
    root.create_bucket(Bucket="tagged-src")
    root.put_object(Bucket="tagged-src", Key="x", Body=b"restricted", Tagging="class=restricted")
    root.create_bucket(Bucket="tag-dst")
    s3 = client_for(srv, "s3", "tag-copier", [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:PutObjectTagging"], "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "*",
         "Condition": {"StringEquals": {"s3:ExistingObjectTag/class": "restricted"}}},
        {"Effect": "Deny", "Action": "s3:PutObjectTagging", "Resource": "*",
         "Condition": {"ForAnyValue:StringEquals": {"s3:RequestObjectTagKeys": ["class"]}}}])
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="tagged-src", Key="x")
    assert code(e) == "AccessDenied"
    # Copying with REPLACE (so the copy has no tags) is still a read of the tagged source.
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket="tag-dst", Key="loot", CopySource={"Bucket": "tagged-src", "Key": "x"}, TaggingDirective="REPLACE")
    assert code(e) == "AccessDenied"
    # Tags in a PutObjectTagging body are condition keys too.
    root.put_object(Bucket="tag-dst", Key="mine", Body=b"x")
    with pytest.raises(ClientError) as e:
        s3.put_object_tagging(Bucket="tag-dst", Key="mine", Tagging={"TagSet": [{"Key": "class", "Value": "public"}]})
    assert code(e) == "AccessDenied"
    s3.put_object_tagging(Bucket="tag-dst", Key="mine", Tagging={"TagSet": [{"Key": "team", "Value": "a"}]})
    # A retention longer than policy allows, named only in the body, is refused.
    root.create_bucket(Bucket="retention-cap", ObjectLockEnabledForBucket=True)
    root.put_object(Bucket="retention-cap", Key="k", Body=b"x")
    s3r = client_for(srv, "s3", "retainer", [
        {"Effect": "Allow", "Action": "s3:PutObjectRetention", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:PutObjectRetention", "Resource": "*",
         "Condition": {"NumericGreaterThan": {"s3:object-lock-remaining-retention-days": "30"}}}])
    with pytest.raises(ClientError) as e:
        s3r.put_object_retention(Bucket="retention-cap", Key="k",
                                 Retention={"Mode": "COMPLIANCE", "RetainUntilDate": "2099-01-01T00:00:00Z"})
    assert code(e) == "AccessDenied"
    assert "Retention" not in root.head_object(Bucket="retention-cap", Key="k") and \
        root.head_object(Bucket="retention-cap", Key="k").get("ObjectLockMode") is None


def test_review_acls_on_buckets_and_the_root_and_its_bucket_policy(srv):
    root = srv.client("s3")
    root.create_bucket(Bucket="acl-target")
    root.put_public_access_block(Bucket="acl-target", PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    with pytest.raises(ClientError) as e:
        root.put_bucket_acl(Bucket="acl-target", ACL="authenticated-read")
    assert code(e) == "AccessDenied"
    # CreateBucket with an ACL needs s3:PutBucketAcl.
    maker = client_for(srv, "s3", "bucket-maker", [
        {"Effect": "Allow", "Action": "s3:CreateBucket", "Resource": "*"}])
    with pytest.raises(ClientError) as e:
        maker.create_bucket(Bucket="made-public", ACL="public-read")
    assert code(e) == "AccessDenied"
    maker.create_bucket(Bucket="made-private")
    # A bucket policy denying everything to everyone cannot lock the root out of the policy.
    root.put_bucket_policy(Bucket="made-private", Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": ["arn:aws:s3:::made-private", "arn:aws:s3:::made-private/*"]}]}))
    with pytest.raises(ClientError) as e:
        root.put_object(Bucket="made-private", Key="k", Body=b"x")
    assert code(e) == "AccessDenied"
    root.get_bucket_policy(Bucket="made-private")
    root.delete_bucket_policy(Bucket="made-private")
    root.put_object(Bucket="made-private", Key="k", Body=b"x")


def test_review_trail_tags_are_condition_keys(srv):
    ct = srv.client("cloudtrail")
    srv.client("s3").create_bucket(Bucket="tagged-trail-logs")
    ct.create_trail(Name="protected-trail", S3BucketName="tagged-trail-logs",
                    TagsList=[{"Key": "protected", "Value": "yes"}])
    ct.start_logging(Name="protected-trail")
    op = client_for(srv, "cloudtrail", "trail-op", [
        {"Effect": "Allow", "Action": "cloudtrail:*", "Resource": "*"},
        {"Effect": "Deny", "Action": ["cloudtrail:StopLogging", "cloudtrail:RemoveTags"], "Resource": "*",
         "Condition": {"StringEquals": {"aws:ResourceTag/protected": "yes"}}},
        {"Effect": "Deny", "Action": "cloudtrail:CreateTrail", "Resource": "*",
         "Condition": {"Null": {"aws:RequestTag/owner": "true"}}}])
    with pytest.raises(ClientError) as e:
        op.stop_logging(Name="protected-trail")
    assert code(e) == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        op.create_trail(Name="untagged-trail", S3BucketName="tagged-trail-logs")
    assert code(e) == "AccessDeniedException"
    op.create_trail(Name="owned-trail", S3BucketName="tagged-trail-logs", TagsList=[{"Key": "owner", "Value": "ops"}])
    assert ct.get_trail_status(Name="protected-trail")["IsLogging"] is True


def test_every_refusal_above_is_in_the_trail(srv):
    """Each attack of this file was refused, and each refusal is an event with its error."""
    seen = {(r["eventName"], r.get("errorCode")) for r in records(srv)}
    for expected in [("CopyObject", "AccessDenied"), ("UploadPartCopy", "AccessDenied"),
                     ("PutBucketPolicy", "MalformedPolicy"), ("PutBucketPolicy", "AccessDenied"),
                     ("CreateAccessKey", "SignatureDoesNotMatch"), ("PutObject", "XAmzContentSHA256Mismatch"),
                     ("AssumeRole", "AccessDenied"), ("StopLogging", "AccessDeniedException"),
                     ("StopLogging", "CloudTrailARNInvalidException"), ("ListTrails", "InvalidSignatureException"),
                     ("PutObject", "AccessDenied"), ("PutObject", "NotImplemented"),
                     ("CreateMultipartUpload", "AccessDenied"), ("DeleteObject", "AccessDenied"),
                     ("GetObject", "AccessDenied"), ("PutObjectTagging", "AccessDenied"),
                     ("PutObjectRetention", "AccessDenied"), ("PutBucketAcl", "AccessDenied"),
                     ("CreateBucket", "AccessDenied"), ("CreateTrail", "AccessDeniedException")]:
        assert expected in seen, expected


def test_review_account_controls_answer_to_no_bucket_policy(srv):
    """The account's public access block is the account's: a request for it that names a
    bucket in its Host is not judged by that bucket's policy (which its owner could write to
    grant themselves the account's controls)."""
    root = srv.client("s3")
    root.create_bucket(Bucket="pab-trap")
    key, secret = make_user(srv, "trapper", [
        {"Effect": "Allow", "Action": ["s3:PutBucketPolicy", "s3:GetBucketPolicy"], "Resource": "arn:aws:s3:::pab-trap"}])
    trapper = srv.client("s3", key=key, secret=secret)
    me = f"arn:aws:iam::{ACCOUNT}:user/trapper"
    try:
        trapper.put_bucket_policy(Bucket="pab-trap", Policy=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": me}, "Action": "s3:PutAccountPublicAccessBlock",
             "NotResource": "arn:aws:s3:::pab-trap/nothing"}]}))
    except ClientError as e:
        assert e.response["Error"]["Code"] == "MalformedPolicy"
    body = (b'<PublicAccessBlockConfiguration xmlns="http://awss3control.amazonaws.com/doc/2018-08-20/">'
            b"<BlockPublicAcls>false</BlockPublicAcls></PublicAccessBlockConfiguration>")
    path = "/v20180820/configuration/publicAccessBlock"
    vhost = f"pab-trap.s3.localhost:{srv.port}"
    h = signed(srv, "s3", "PUT", path, body, s3=True, key=key, secret=secret,
               headers={"Host": vhost, "x-amz-account-id": ACCOUNT})
    h["Host"] = vhost
    st, _, data = send(srv, "PUT", path, h, body)
    assert st == 403 and b"AccessDenied" in data, (st, data)
    h = signed(srv, "s3", "GET", path, b"", s3=True, headers={"x-amz-account-id": ACCOUNT})
    st, _, data = send(srv, "GET", path, h)
    assert st == 404 and b"NoSuchPublicAccessBlockConfiguration" in data, (st, data)


def test_review_refused_iam_and_sts_inputs_are_recorded_as_global_calls(srv):
    """A global call refused for its inputs is still recorded in us-east-1 with its
    parameters, whatever region it was signed for."""
    key, secret = make_user(srv, "bad-inputs", [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}])
    sts = srv.client("sts", key=key, secret=secret, region="eu-west-1")
    with pytest.raises(ClientError) as e:
        sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/none", RoleSessionName="not valid!")
    assert code(e) == "ValidationError"
    ct = srv.client("cloudtrail", region="us-east-1")
    found = []
    for _ in range(50):
        out = ct.lookup_events(LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": "bad-inputs"}])
        found = [json.loads(ev["CloudTrailEvent"]) for ev in out["Events"] if ev["EventName"] == "AssumeRole"]
        if found:
            break
        time.sleep(0.1)
    assert found, "the refused AssumeRole is in us-east-1's history"
    rec = found[0]
    assert rec["awsRegion"] == "us-east-1" and rec["errorCode"] == "ValidationError"
    assert rec["requestParameters"]["roleSessionName"] == "not valid!"
