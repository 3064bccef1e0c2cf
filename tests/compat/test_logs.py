"""CloudWatch Logs (issue 12, in progress) with boto3 and the real aws CLI: the control plane
— log groups (tags, KMS key, retention), streams, tags — its errors, and its attacks (a caller
without the permission; a request changed after signing). Log events are not served yet."""
import json
import socket

import pytest
from botocore.exceptions import ClientError

from rawreq import send, signed

ACCOUNT = "123456789012"
GROUP = "/aws/cloudtrail/acme-audit-trail"


@pytest.fixture(scope="module")
def srv(cairn_server_factory):
    return cairn_server_factory()


def code(e):
    return e.value.response["Error"]["Code"]


def test_log_groups_streams_retention_and_tags(srv, aws_bin):
    logs = srv.client("logs")
    logs.create_log_group(logGroupName=GROUP, tags={"Project": "acme"})
    with pytest.raises(ClientError) as e:
        logs.create_log_group(logGroupName=GROUP)
    assert code(e) == "ResourceAlreadyExistsException"
    logs.put_retention_policy(logGroupName=GROUP, retentionInDays=90)
    for bad in (0, 2, 91, 4000):
        with pytest.raises(ClientError) as e:
            logs.put_retention_policy(logGroupName=GROUP, retentionInDays=bad)
        assert code(e) == "InvalidParameterException"
    g = logs.describe_log_groups(logGroupNamePrefix="/aws/cloudtrail/")["logGroups"]
    assert [x["logGroupName"] for x in g] == [GROUP]
    arn = f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:{GROUP}"
    assert (g[0]["retentionInDays"], g[0]["logGroupArn"], g[0]["arn"]) == (90, arn, arn + ":*")
    assert logs.describe_log_groups(logGroupNamePattern="ACME")["logGroups"][0]["logGroupName"] == GROUP
    # Paging.
    for n in range(5):
        logs.create_log_group(logGroupName=f"/page/{n}")
    names, token = [], None
    while True:
        kw = {"logGroupNamePrefix": "/page/", "limit": 2, **({"nextToken": token} if token else {})}
        r = logs.describe_log_groups(**kw)
        names += [x["logGroupName"] for x in r["logGroups"]]
        token = r.get("nextToken")
        if not token:
            break
    assert names == [f"/page/{n}" for n in range(5)]
    # Streams.
    stream = f"{ACCOUNT}_CloudTrail_us-east-1"
    logs.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    logs.create_log_stream(logGroupName=GROUP, logStreamName="other")
    with pytest.raises(ClientError) as e:
        logs.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    assert code(e) == "ResourceAlreadyExistsException"
    with pytest.raises(ClientError) as e:
        logs.create_log_stream(logGroupName="/nope", logStreamName="s")
    assert code(e) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        logs.create_log_stream(logGroupName=GROUP, logStreamName="bad:name")
    assert code(e) == "InvalidParameterException"
    s = logs.describe_log_streams(logGroupName=GROUP)["logStreams"]
    assert [x["logStreamName"] for x in s] == [stream, "other"]
    assert s[0]["arn"] == f"{arn}:log-stream:{stream}"
    assert [x["logStreamName"] for x in logs.describe_log_streams(logGroupName=GROUP, descending=True)["logStreams"]] == ["other", stream]
    assert [x["logStreamName"] for x in logs.describe_log_streams(logGroupIdentifier=arn, logStreamNamePrefix="oth")["logStreams"]] == ["other"]
    with pytest.raises(ClientError) as e:
        logs.describe_log_streams(logGroupName=GROUP, orderBy="LastEventTime", logStreamNamePrefix="x")
    assert code(e) == "InvalidParameterException"
    logs.delete_log_stream(logGroupName=GROUP, logStreamName="other")
    with pytest.raises(ClientError) as e:
        logs.delete_log_stream(logGroupName=GROUP, logStreamName="other")
    assert code(e) == "ResourceNotFoundException"
    # Tags, both families.
    logs.tag_resource(resourceArn=arn, tags={"Env": "ci"})
    assert logs.list_tags_for_resource(resourceArn=arn + ":*")["tags"] == {"Project": "acme", "Env": "ci"}
    logs.untag_resource(resourceArn=arn, tagKeys=["Env"])
    logs.tag_log_group(logGroupName=GROUP, tags={"Legacy": "yes"})
    assert logs.list_tags_log_group(logGroupName=GROUP)["tags"] == {"Project": "acme", "Legacy": "yes"}
    logs.untag_log_group(logGroupName=GROUP, tags=["Legacy"])
    # The real CLI.
    r = srv.aws(aws_bin, "logs", "describe-log-groups", "--log-group-name-prefix", GROUP)
    assert json.loads(r.stdout)["logGroups"][0]["retentionInDays"] == 90
    logs.delete_retention_policy(logGroupName=GROUP)
    assert "retentionInDays" not in logs.describe_log_groups(logGroupNamePrefix=GROUP)["logGroups"][0]
    # Deleting a group deletes its streams.
    logs.delete_log_group(logGroupName=GROUP)
    with pytest.raises(ClientError) as e:
        logs.describe_log_streams(logGroupName=GROUP)
    assert code(e) == "ResourceNotFoundException"
    logs.create_log_group(logGroupName=GROUP)
    assert logs.describe_log_streams(logGroupName=GROUP)["logStreams"] == []
    for bad in ("bad name", "star*name"):
        with pytest.raises(ClientError) as e:
            logs.create_log_group(logGroupName=bad)
        assert code(e) in ("InvalidParameterException", "ValidationException")


def test_a_kms_key_is_associated_only_if_its_policy_lets_logs_use_it(srv):
    kms, logs = srv.client("kms"), srv.client("logs")
    plain = kms.create_key()["KeyMetadata"]["Arn"]
    with pytest.raises(ClientError) as e:
        logs.create_log_group(logGroupName="/enc/no", kmsKeyId=plain)
    assert code(e) == "InvalidParameterException"
    policy = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"Service": "logs.us-east-1.amazonaws.com"},
         "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
         "Resource": "*",
         "Condition": {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/enc/*"}}}]})
    key = kms.create_key(Policy=policy)["KeyMetadata"]["Arn"]
    logs.create_log_group(logGroupName="/enc/yes", kmsKeyId=key)
    assert logs.describe_log_groups(logGroupNamePrefix="/enc/yes")["logGroups"][0]["kmsKeyId"] == key
    with pytest.raises(ClientError) as e:
        logs.create_log_group(logGroupName="/other/x", kmsKeyId=key)
    assert code(e) == "InvalidParameterException"


def test_callers_without_permission_and_tampered_requests_change_nothing(srv):
    iam = srv.client("iam")
    iam.create_user(UserName="logs-reader")
    iam.put_user_policy(UserName="logs-reader", PolicyName="p", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "logs:Describe*", "Resource": "*"}]}))
    k = iam.create_access_key(UserName="logs-reader")["AccessKey"]
    reader = srv.client("logs", key=k["AccessKeyId"], secret=k["SecretAccessKey"])
    srv.client("logs").create_log_group(logGroupName="/guarded")
    for call in (lambda: reader.create_log_group(logGroupName="/mine"),
                 lambda: reader.delete_log_group(logGroupName="/guarded"),
                 lambda: reader.put_retention_policy(logGroupName="/guarded", retentionInDays=1),
                 lambda: reader.create_log_stream(logGroupName="/guarded", logStreamName="s")):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "AccessDeniedException"
    assert [g["logGroupName"] for g in reader.describe_log_groups(logGroupNamePrefix="/guarded")["logGroups"]] == ["/guarded"]
    body = json.dumps({"logGroupName": "/guarded", "retentionInDays": 7}).encode()
    h = signed(srv, "logs", "POST", "/", body, headers={"X-Amz-Target": "Logs_20140328.PutRetentionPolicy",
                                                         "Content-Type": "application/x-amz-json-1.1"})
    st, _, out = send(srv, "POST", "/", h, json.dumps({"logGroupName": "/guarded", "retentionInDays": 1}).encode())
    assert st == 400 and b"Signature" in out, out
    assert "retentionInDays" not in srv.client("logs").describe_log_groups(logGroupNamePrefix="/guarded")["logGroups"][0]
    # A body over the JSON APIs' limit is refused from its headers, and nothing changes.
    big = b"{" + b" " * (3 * 1024 * 1024) + b"}"
    hb = signed(srv, "logs", "POST", "/", big, headers={"X-Amz-Target": "Logs_20140328.CreateLogGroup",
                                                         "Content-Type": "application/x-amz-json-1.1"})
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=15)
    sock.sendall(("POST / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hb.items())
                  + f"Content-Length: {len(big)}\r\n\r\n").encode())
    answer = b""
    while b"RequestEntityTooLargeException" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    sock.close()
    assert answer.split(b"\r\n")[0].split()[1] == b"413", answer[:200]
    # Every refusal is recorded.
    ct = srv.client("cloudtrail")
    events = ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventSource", "AttributeValue": "logs.amazonaws.com"}],
                              MaxResults=50)["Events"]
    got = {(e["EventName"], json.loads(e["CloudTrailEvent"]).get("errorCode")) for e in events}
    for want in [("CreateLogGroup", "AccessDeniedException"), ("DeleteLogGroup", "AccessDeniedException"),
                 ("PutRetentionPolicy", "InvalidSignatureException"),
                 ("CreateLogGroup", "RequestEntityTooLargeException")]:
        assert want in got, (want, got)
