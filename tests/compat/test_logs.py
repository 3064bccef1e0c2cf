"""CloudWatch Logs (issue 12) with boto3 and the real aws CLI: log groups (tags, KMS key,
retention), streams, tags; log events (PutLogEvents' limits, GetLogEvents' tokens,
FilterLogEvents' patterns and paging), metric filters, Insights queries, KMS association; their
errors, and their attacks (a caller without the permission; a request changed after signing;
a disabled key; stored bytes changed; a crash after an answer)."""
import json
import os
import signal
import socket
import time

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
    # The module's server has served other tests' calls too, so read every page; LookupEvents may
    # trail the journal by a moment, so look again until the deadline.
    ct = srv.client("cloudtrail")
    wants = {("CreateLogGroup", "AccessDeniedException"), ("DeleteLogGroup", "AccessDeniedException"),
             ("PutRetentionPolicy", "InvalidSignatureException"),
             ("CreateLogGroup", "RequestEntityTooLargeException")}
    deadline = time.time() + 10
    while True:
        got = set()
        for page in ct.get_paginator("lookup_events").paginate(
                LookupAttributes=[{"AttributeKey": "EventSource", "AttributeValue": "logs.amazonaws.com"}]):
            got |= {(e["EventName"], json.loads(e["CloudTrailEvent"]).get("errorCode")) for e in page["Events"]}
        if wants <= got or time.time() > deadline:
            break
        time.sleep(0.2)
    assert wants <= got, (wants - got, got)


def all_messages(logs, group, stream):
    """Every message of a stream, following GetLogEvents' forward tokens to the end."""
    got, token = [], None
    while True:
        kw = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        if token:
            kw["nextToken"] = token
        r = logs.get_log_events(**kw)
        got += [e["message"] for e in r["events"]]
        if r["nextForwardToken"] == token:
            return got
        token = r["nextForwardToken"]


def now_ms():
    return int(time.time() * 1000)


def test_put_get_and_filter_log_events(srv, aws_bin):
    logs = srv.client("logs")
    logs.create_log_group(logGroupName="/ev")
    logs.create_log_stream(logGroupName="/ev", logStreamName="a")
    logs.create_log_stream(logGroupName="/ev", logStreamName="b")
    t0 = now_ms() - 60_000
    a = [{"timestamp": t0 + i, "message": json.dumps({"eventName": "GetObject" if i % 3 else "ConsoleLogin", "n": i})}
         for i in range(250)]
    r = logs.put_log_events(logGroupName="/ev", logStreamName="a", logEvents=a)
    assert "rejectedLogEventsInfo" not in r and r["nextSequenceToken"]
    logs.put_log_events(logGroupName="/ev", logStreamName="b",
                        logEvents=[{"timestamp": t0 + 1000 + i, "message": f"ERROR b {i}"} for i in range(10)])
    # GetLogEvents from the head, forward to the end (the token repeats there).
    got, token = [], None
    while True:
        kw = {"logGroupName": "/ev", "logStreamName": "a", "limit": 100, "startFromHead": True}
        if token:
            kw["nextToken"] = token
        r = logs.get_log_events(**kw)
        got += r["events"]
        if r["nextForwardToken"] == token:
            break
        token = r["nextForwardToken"]
    assert [e["message"] for e in got] == [e["message"] for e in a]
    assert all(e["ingestionTime"] >= e["timestamp"] for e in got)
    # Without startFromHead: the newest events; backward from there.
    tail = logs.get_log_events(logGroupName="/ev", logStreamName="a", limit=10)
    assert [e["timestamp"] for e in tail["events"]] == [t0 + i for i in range(240, 250)]
    before = logs.get_log_events(logGroupName="/ev", logStreamName="a", limit=10, nextToken=tail["nextBackwardToken"])
    assert [e["timestamp"] for e in before["events"]] == [t0 + i for i in range(230, 240)]
    # A time range: start inclusive, end exclusive.
    r = logs.get_log_events(logGroupName="/ev", logStreamName="a", startTime=t0 + 5, endTime=t0 + 8, startFromHead=True)
    assert [e["timestamp"] for e in r["events"]] == [t0 + 5, t0 + 6, t0 + 7]
    # Streams show their events' times.
    s = {x["logStreamName"]: x for x in logs.describe_log_streams(logGroupName="/ev")["logStreams"]}
    assert (s["a"]["firstEventTimestamp"], s["a"]["lastEventTimestamp"]) == (t0, t0 + 249)
    order = logs.describe_log_streams(logGroupName="/ev", orderBy="LastEventTime", descending=True)["logStreams"]
    assert [x["logStreamName"] for x in order] == ["b", "a"]
    # FilterLogEvents: patterns across streams, paging.
    r = logs.filter_log_events(logGroupName="/ev", filterPattern='{ $.eventName = "ConsoleLogin" }')
    assert len(r["events"]) == 84 and all(e["logStreamName"] == "a" for e in r["events"])
    r = logs.filter_log_events(logGroupName="/ev", filterPattern="ERROR")
    assert [e["message"] for e in r["events"]] == [f"ERROR b {i}" for i in range(10)]
    seen, token = [], None
    while True:
        kw = {"logGroupName": "/ev", "limit": 37, "startTime": t0 + 10}
        if token:
            kw["nextToken"] = token
        r = logs.filter_log_events(**kw)
        seen += r["events"]
        token = r.get("nextToken")
        if not token:
            break
    assert len(seen) == 240 + 10 and len({e["eventId"] for e in seen}) == 250
    assert [e["timestamp"] for e in seen] == sorted(e["timestamp"] for e in seen)
    r = logs.filter_log_events(logGroupName="/ev", logStreamNames=["b"], filterPattern="?ERROR ?nothing")
    assert len(r["events"]) == 10
    with pytest.raises(ClientError) as e:
        logs.filter_log_events(logGroupName="/ev", filterPattern="{ $.x = ")
    assert code(e) == "InvalidParameterException"
    # The real CLI.
    out = json.loads(srv.aws(aws_bin, "logs", "filter-log-events", "--log-group-name", "/ev",
                             "--filter-pattern", "ERROR", "--log-stream-names", "b").stdout)
    assert len(out["events"]) == 10
    out = json.loads(srv.aws(aws_bin, "logs", "get-log-events", "--log-group-name", "/ev", "--log-stream-name", "b",
                             "--start-from-head").stdout)
    assert len(out["events"]) == 10


def test_put_log_events_limits(srv):
    logs = srv.client("logs")
    logs.create_log_group(logGroupName="/lim")
    logs.create_log_stream(logGroupName="/lim", logStreamName="s")
    now = now_ms()

    def put(events, stream="s"):
        return logs.put_log_events(logGroupName="/lim", logStreamName=stream, logEvents=events)

    for bad in ([{"timestamp": now, "message": "b"}, {"timestamp": now - 1, "message": "a"}],  # not chronological
                [{"timestamp": now - 25 * 3600_000, "message": "a"}, {"timestamp": now, "message": "b"}],  # > 24 h
                [{"timestamp": now, "message": "x" * 200_000}] * 6,  # > 1 MiB
                [{"timestamp": now, "message": "x"}] * 10_001):  # > 10,000 events
        with pytest.raises(ClientError) as e:
            put(bad)
        assert code(e) == "InvalidParameterException", bad[:1]
    # Exactly at the limit: 1,048,576 bytes counting 26 per event.
    n = 4
    size = 1_048_576 // n - 26
    put([{"timestamp": now, "message": "y" * size}] * n)
    with pytest.raises(ClientError) as e:
        put([{"timestamp": now, "message": "y" * (size + 1)}] + [{"timestamp": now, "message": "y" * size}] * (n - 1))
    assert code(e) == "InvalidParameterException"
    # Too old and too new are answered in rejectedLogEventsInfo; the rest is stored.
    logs.put_retention_policy(logGroupName="/lim", retentionInDays=1)
    r = put([{"timestamp": now - 20 * 3600_000, "message": "recent"},
             {"timestamp": now, "message": "now"},
             {"timestamp": now + 3 * 3600_000, "message": "future"}])
    assert r["rejectedLogEventsInfo"] == {"tooNewLogEventStartIndex": 2}
    logs.delete_retention_policy(logGroupName="/lim")
    with pytest.raises(ClientError) as e:
        put([{"timestamp": now, "message": "x"}], stream="nope")
    assert code(e) == "ResourceNotFoundException"
    msgs = [m for m in all_messages(logs, "/lim", "s") if len(m) < 100]
    assert msgs == ["recent", "now"]


def test_metric_filters_and_test_metric_filter(srv):
    logs = srv.client("logs")
    logs.create_log_group(logGroupName="/mf")
    pattern = '{ ($.errorCode = "*UnauthorizedOperation") || ($.errorCode = "AccessDenied*") }'
    logs.put_metric_filter(logGroupName="/mf", filterName="unauthorized", filterPattern=pattern,
                           metricTransformations=[{"metricName": "UnauthorizedAPICalls", "metricNamespace": "CISBenchmark",
                                                   "metricValue": "1"}])
    f = logs.describe_metric_filters(logGroupName="/mf")["metricFilters"]
    assert [(x["filterName"], x["filterPattern"]) for x in f] == [("unauthorized", pattern)]
    assert logs.describe_metric_filters(metricName="UnauthorizedAPICalls", metricNamespace="CISBenchmark")["metricFilters"]
    assert logs.describe_log_groups(logGroupNamePrefix="/mf")["logGroups"][0]["metricFilterCount"] == 1
    for bad in ({"filterPattern": "{ $.x = "},
                {"metricTransformations": [{"metricName": "m", "metricNamespace": "n", "metricValue": "not a field"}]},
                {"metricTransformations": [{"metricName": "a:b", "metricNamespace": "n", "metricValue": "1"}]},
                {"metricTransformations": [{"metricName": "m", "metricNamespace": "n", "metricValue": "1",
                                            "defaultValue": 0, "dimensions": {"d": "$.x"}}]}):
        kw = {"logGroupName": "/mf", "filterName": "bad", "filterPattern": "x",
              "metricTransformations": [{"metricName": "m", "metricNamespace": "n", "metricValue": "1"}], **bad}
        with pytest.raises(ClientError) as e:
            logs.put_metric_filter(**kw)
        assert code(e) == "InvalidParameterException", bad
    r = logs.test_metric_filter(filterPattern=pattern, logEventMessages=[
        json.dumps({"errorCode": "AccessDenied"}), json.dumps({"errorCode": "Client.UnauthorizedOperation"}), "{}"])
    assert [m["eventNumber"] for m in r["matches"]] == [1, 2]
    r = logs.test_metric_filter(filterPattern="[ip, user, status=4*]", logEventMessages=["1.2.3.4 bob 404", "1.2.3.4 bob 200"])
    assert r["matches"] == [{"eventNumber": 1, "eventMessage": "1.2.3.4 bob 404",
                             "extractedValues": {"$ip": "1.2.3.4", "$user": "bob", "$status": "404"}}]
    logs.delete_metric_filter(logGroupName="/mf", filterName="unauthorized")
    with pytest.raises(ClientError) as e:
        logs.delete_metric_filter(logGroupName="/mf", filterName="unauthorized")
    assert code(e) == "ResourceNotFoundException"


def wait_query(logs, qid):
    for _ in range(200):
        r = logs.get_query_results(queryId=qid)
        if r["status"] in ("Complete", "Failed", "Cancelled"):
            return r
        time.sleep(0.05)
    raise AssertionError("query did not finish")


def test_insights_queries(srv):
    logs = srv.client("logs")
    logs.create_log_group(logGroupName="/q")
    logs.create_log_stream(logGroupName="/q", logStreamName="s")
    t0 = now_ms() - 120_000
    names = ["GetObject", "PutObject", "ConsoleLogin"]
    events = [{"timestamp": t0 + i, "message": json.dumps({
        "eventName": names[i % 3], "userIdentity": {"arn": f"arn:aws:iam::{ACCOUNT}:user/u{i % 2}"},
        **({"errorCode": "AccessDenied"} if i % 5 == 0 else {})})} for i in range(300)]
    logs.put_log_events(logGroupName="/q", logStreamName="s", logEvents=events)
    start, end = t0 // 1000 - 1, now_ms() // 1000 + 1
    qid = logs.start_query(logGroupName="/q", startTime=start, endTime=end,
                           queryString="stats count(*) as c by eventName | sort c desc")["queryId"]
    r = wait_query(logs, qid)
    assert r["status"] == "Complete"
    rows = {tuple(f["value"] for f in row) for row in r["results"]}
    assert rows == {("GetObject", "100"), ("PutObject", "100"), ("ConsoleLogin", "100")}
    assert r["statistics"]["recordsScanned"] == 300
    qid = logs.start_query(logGroupName="/q", startTime=start, endTime=end,
                           queryString="fields @timestamp, eventName, userIdentity.arn | filter errorCode like /Denied/ | sort @timestamp desc | limit 5")["queryId"]
    r = wait_query(logs, qid)
    assert len(r["results"]) == 5 and r["statistics"]["recordsMatched"] == 60
    assert [f["field"] for f in r["results"][0]] == ["@timestamp", "eventName", "userIdentity.arn"]
    with pytest.raises(ClientError) as e:
        logs.start_query(logGroupName="/q", startTime=start, endTime=end, queryString="frobnicate everything")
    assert code(e) == "MalformedQueryException"
    with pytest.raises(ClientError) as e:
        logs.start_query(logGroupName="/nope", startTime=start, endTime=end, queryString="fields @message")
    assert code(e) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        logs.get_query_results(queryId="00000000-0000-0000-0000-000000000000")
    assert code(e) == "ResourceNotFoundException"
    assert logs.stop_query(queryId=qid)["success"] is False
    assert qid in [q["queryId"] for q in logs.describe_queries(logGroupName="/q")["queries"]]


def test_kms_sealed_group_disabled_key_and_disassociation(srv):
    kms, logs = srv.client("kms"), srv.client("logs")
    policy = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"Service": "logs.us-east-1.amazonaws.com"},
         "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
         "Resource": "*"}]})
    key = kms.create_key(Policy=policy)["KeyMetadata"]["Arn"]
    logs.create_log_group(logGroupName="/sealed")
    logs.create_log_stream(logGroupName="/sealed", logStreamName="s")
    logs.put_log_events(logGroupName="/sealed", logStreamName="s",
                        logEvents=[{"timestamp": now_ms(), "message": "before-the-key"}])
    logs.associate_kms_key(logGroupName="/sealed", kmsKeyId=key)
    assert logs.describe_log_groups(logGroupNamePrefix="/sealed")["logGroups"][0]["kmsKeyId"] == key
    logs.put_log_events(logGroupName="/sealed", logStreamName="s",
                        logEvents=[{"timestamp": now_ms(), "message": "SEALED-SENTINEL-7781"}])
    kms.disable_key(KeyId=key)
    for call in (lambda: logs.put_log_events(logGroupName="/sealed", logStreamName="s",
                                             logEvents=[{"timestamp": now_ms(), "message": "x"}]),
                 lambda: logs.get_log_events(logGroupName="/sealed", logStreamName="s", startFromHead=True)):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "InvalidParameterException"
    kms.enable_key(KeyId=key)
    logs.disassociate_kms_key(logGroupName="/sealed")
    logs.put_log_events(logGroupName="/sealed", logStreamName="s",
                        logEvents=[{"timestamp": now_ms(), "message": "after"}])
    got = [e["message"] for e in logs.get_log_events(logGroupName="/sealed", logStreamName="s", startFromHead=True)["events"]]
    assert got == ["before-the-key", "SEALED-SENTINEL-7781", "after"]
    # Events written under the key still need it after the disassociation.
    kms.disable_key(KeyId=key)
    with pytest.raises(ClientError) as e:
        logs.filter_log_events(logGroupName="/sealed")
    assert code(e) == "InvalidParameterException"
    kms.enable_key(KeyId=key)
    # Nothing in the data directory holds a message in clear.
    for root, _, files in os.walk(srv.data):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                assert b"SEALED-SENTINEL-7781" not in fh.read(), f


def test_log_event_permissions_and_tampering(srv):
    admin = srv.client("logs")
    admin.create_log_group(logGroupName="/perm")
    admin.create_log_stream(logGroupName="/perm", logStreamName="s")
    admin.put_log_events(logGroupName="/perm", logStreamName="s", logEvents=[{"timestamp": now_ms(), "message": "secret"}])
    iam = srv.client("iam")
    iam.create_user(UserName="writer")
    iam.put_user_policy(UserName="writer", PolicyName="p", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "logs:PutLogEvents",
                                                "Resource": f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/perm:*"}]}))
    k = iam.create_access_key(UserName="writer")["AccessKey"]
    w = srv.client("logs", key=k["AccessKeyId"], secret=k["SecretAccessKey"])
    w.put_log_events(logGroupName="/perm", logStreamName="s", logEvents=[{"timestamp": now_ms(), "message": "from-writer"}])
    for call in (lambda: w.get_log_events(logGroupName="/perm", logStreamName="s"),
                 lambda: w.filter_log_events(logGroupName="/perm"),
                 lambda: w.start_query(logGroupName="/perm", startTime=0, endTime=int(time.time()), queryString="fields @message"),
                 lambda: w.put_metric_filter(logGroupName="/perm", filterName="f", filterPattern="x",
                                             metricTransformations=[{"metricName": "m", "metricNamespace": "n", "metricValue": "1"}]),
                 lambda: w.associate_kms_key(logGroupName="/perm", kmsKeyId="alias/x"),
                 lambda: w.put_log_events(logGroupName="/other", logStreamName="s",
                                          logEvents=[{"timestamp": now_ms(), "message": "x"}])):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "AccessDeniedException"
    # A PutLogEvents changed after signing is refused and stores nothing.
    body = json.dumps({"logGroupName": "/perm", "logStreamName": "s",
                       "logEvents": [{"timestamp": now_ms(), "message": "signed"}]}).encode()
    h = signed(srv, "logs", "POST", "/", body, headers={"X-Amz-Target": "Logs_20140328.PutLogEvents",
                                                         "Content-Type": "application/x-amz-json-1.1"})
    st, _, out = send(srv, "POST", "/", h, body.replace(b"signed", b"forged"))
    assert st == 400 and b"Signature" in out, out
    got = [e["message"] for e in admin.get_log_events(logGroupName="/perm", logStreamName="s", startFromHead=True)["events"]]
    assert got == ["secret", "from-writer"]
    # The record of a PutLogEvents names the stream and the count, never the messages.
    ct = srv.client("cloudtrail")
    events = ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "PutLogEvents"}])["Events"]
    assert events and all("secret" not in e["CloudTrailEvent"] and "forged" not in e["CloudTrailEvent"] for e in events)
    assert any(json.loads(e["CloudTrailEvent"]).get("errorCode") == "InvalidSignatureException" for e in events)


def test_acknowledged_log_events_survive_sigkill(cairn_server_factory):
    srv = cairn_server_factory()
    logs = srv.client("logs")
    logs.create_log_group(logGroupName="/crash")
    logs.create_log_stream(logGroupName="/crash", logStreamName="s")
    acked = []
    t0 = now_ms()
    for b in range(20):
        batch = [{"timestamp": t0 + b * 100 + i, "message": f"e{b}-{i}"} for i in range(100)]
        logs.put_log_events(logGroupName="/crash", logStreamName="s", logEvents=batch)
        acked += [e["message"] for e in batch]
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    srv.log.close()
    srv.start()
    assert all_messages(srv.client("logs"), "/crash", "s") == acked


TRUST = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "cloudtrail.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


def cw_role(iam, name, group_arn):
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST)
    iam.put_role_policy(RoleName=name, PolicyName="cw", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": f"{group_arn}:*"}]}))
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


def cw_events(logs, group):
    out, token = [], None
    while True:
        kw = {"logGroupName": group, **({"nextToken": token} if token else {})}
        r = logs.filter_log_events(**kw)
        out += r["events"]
        token = r.get("nextToken")
        if not token:
            return out


def wait_for(pred, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    return pred()


def test_trail_delivers_to_its_log_group(cairn_server_factory):
    srv = cairn_server_factory()
    iam, logs, ct, s3 = (srv.client(s) for s in ("iam", "logs", "cloudtrail", "s3"))
    s3.create_bucket(Bucket="cw-trail-logs")
    group = "/aws/cloudtrail/cw-trail"
    logs.create_log_group(logGroupName=group)
    logs.put_retention_policy(logGroupName=group, retentionInDays=90)
    garn = f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:{group}:*"
    role = cw_role(iam, "CloudTrailToCloudWatch", garn.removesuffix(":*"))
    # What CloudTrail checks: the group exists, the role trusts it and may write there.
    iam.create_role(RoleName="NoTrust", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))
    iam.create_role(RoleName="NoPolicy", AssumeRolePolicyDocument=TRUST)
    for g, r, want in ((f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/nope:*", role, "InvalidCloudWatchLogsLogGroupArnException"),
                       (garn, f"arn:aws:iam::{ACCOUNT}:role/Missing", "InvalidCloudWatchLogsRoleArnException"),
                       (garn, f"arn:aws:iam::{ACCOUNT}:role/NoTrust", "InvalidCloudWatchLogsRoleArnException"),
                       (garn, f"arn:aws:iam::{ACCOUNT}:role/NoPolicy", "InvalidCloudWatchLogsLogGroupArnException")):
        with pytest.raises(ClientError) as e:
            ct.create_trail(Name="cw-trail", S3BucketName="cw-trail-logs", CloudWatchLogsLogGroupArn=g, CloudWatchLogsRoleArn=r)
        assert code(e) == want, (g, r)
    ct.create_trail(Name="cw-trail", S3BucketName="cw-trail-logs", IsMultiRegionTrail=True,
                    CloudWatchLogsLogGroupArn=garn, CloudWatchLogsRoleArn=role)
    ct.start_logging(Name="cw-trail")
    # Recorded calls reach the stream <account>_CloudTrail_<region> within 2 s.
    started = time.time()
    ct.describe_trails(trailNameList=["cw-trail"])
    found = wait_for(lambda: [e for e in cw_events(logs, group) if json.loads(e["message"])["eventName"] == "DescribeTrails"])
    assert found and time.time() - started < 2.5, (time.time() - started, ct.get_trail_status(Name="cw-trail"),
                                                    [json.loads(e["message"])["eventName"] for e in cw_events(logs, group)])
    assert found[0]["logStreamName"] == f"{ACCOUNT}_CloudTrail_us-east-1"
    rec = json.loads(found[0]["message"])
    assert rec["eventSource"] == "cloudtrail.amazonaws.com" and rec["recipientAccountId"] == ACCOUNT
    st = ct.get_trail_status(Name="cw-trail")
    assert "LatestCloudWatchLogsDeliveryTime" in st and "LatestCloudWatchLogsDeliveryError" not in st
    # A revoked role policy shows in the status; events wait and arrive once it is fixed.
    iam.delete_role_policy(RoleName="CloudTrailToCloudWatch", PolicyName="cw")
    iam.get_user()  # recorded while delivery fails
    err = wait_for(lambda: ct.get_trail_status(Name="cw-trail").get("LatestCloudWatchLogsDeliveryError"))
    assert err and "Access denied" in err, err
    iam.put_role_policy(RoleName="CloudTrailToCloudWatch", PolicyName="cw", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                                                "Resource": garn}]}))
    assert wait_for(lambda: any(json.loads(e["message"])["eventName"] == "GetUser" for e in cw_events(logs, group)), 15)
    assert wait_for(lambda: "LatestCloudWatchLogsDeliveryError" not in ct.get_trail_status(Name="cw-trail"), 15)
    # Exactly once across a SIGKILL: every event id once, and every LookupEvents event there.
    for i in range(30):
        iam.list_users()
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    srv.log.close()
    srv.start()
    logs, ct = srv.client("logs"), srv.client("cloudtrail")
    ct.get_trail(Name="cw-trail")

    def complete():
        got = cw_events(logs, group)
        ids = [json.loads(e["message"])["eventID"] for e in got]
        return got if sum(1 for e in got if json.loads(e["message"])["eventName"] == "ListUsers") >= 30 and \
            any(json.loads(e["message"])["eventName"] == "GetTrail" for e in got) else None
    got = wait_for(complete, 15)
    assert got, "events recorded before the crash did not all arrive"
    ids = [json.loads(e["message"])["eventID"] for e in got]
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    looked = ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "ListUsers"}])["Events"]
    assert {e["EventId"] for e in looked} <= set(ids)
    # An Insights query over the group counts what the trail recorded.
    qid = logs.start_query(logGroupName=group, startTime=int(time.time()) - 600, endTime=int(time.time()) + 60,
                           queryString="filter eventName = 'ListUsers' | stats count(*) as n")["queryId"]
    r = wait_query(logs, qid)
    assert r["results"][0][0]["value"] == "30"


def test_insights_answers_match_the_trails_s3_log_files(cairn_server_factory):
    """Insights queries over the trail's log group, checked against counts computed
    independently from the same trail's delivered S3 log files."""
    import gzip
    from collections import Counter
    srv = cairn_server_factory()
    iam, logs, ct, s3 = (srv.client(s) for s in ("iam", "logs", "cloudtrail", "s3"))
    s3.create_bucket(Bucket="insights-trail-logs")
    group = "/aws/cloudtrail/insights"
    logs.create_log_group(logGroupName=group)
    garn = f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:{group}"
    role = cw_role(iam, "InsightsRole", garn)
    iam.create_user(UserName="limited")
    k = iam.create_access_key(UserName="limited")["AccessKey"]
    limited = srv.client("iam", key=k["AccessKeyId"], secret=k["SecretAccessKey"])
    ct.create_trail(Name="insights-trail", S3BucketName="insights-trail-logs",
                    CloudWatchLogsLogGroupArn=garn + ":*", CloudWatchLogsRoleArn=role)
    ct.start_logging(Name="insights-trail")
    time.sleep(1.1)
    t_start = int(time.time())
    for i in range(12):
        iam.list_users()
        if i % 3 == 0:
            iam.list_roles()
        if i % 4 == 0:
            with pytest.raises(ClientError):
                limited.list_users()
        ct.describe_trails()
    t_end = int(time.time())
    time.sleep(1.1)
    srv.flush("insights-trail")
    # Independently: the records of the window from the S3 log files.
    records = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="insights-trail-logs", Prefix=f"AWSLogs/{ACCOUNT}/CloudTrail/"):
        for o in page.get("Contents", []):
            body = s3.get_object(Bucket="insights-trail-logs", Key=o["Key"])["Body"].read()
            records += json.loads(gzip.decompress(body))["Records"]

    def epoch(r):
        from datetime import datetime
        return int(datetime.strptime(r["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=__import__("datetime").timezone.utc).timestamp())
    window = [r for r in records if t_start <= epoch(r) <= t_end]
    assert len(window) >= 31
    wait_for(lambda: len(cw_events(logs, group)) >= len([r for r in records if epoch(r) >= t_start]), 10)

    def query(q):
        qid = logs.start_query(logGroupName=group, startTime=t_start, endTime=t_end, queryString=q)["queryId"]
        r = wait_query(logs, qid)
        assert r["status"] == "Complete", r
        return [{f["field"]: f["value"] for f in row} for row in r["results"]]

    by_name = {row["eventName"]: int(row["count(*)"]) for row in query("stats count(*) by eventName")}
    assert by_name == dict(Counter(r["eventName"] for r in window))
    denied = query("filter errorCode like /Denied/ | stats count(*) as n")
    assert int(denied[0]["n"]) == sum(1 for r in window if "Denied" in (r.get("errorCode") or "")) == 3
    by_user = {row["userIdentity.arn"]: int(row["n"]) for row in
               query("stats count(*) as n by userIdentity.arn | sort n desc")}
    assert by_user == dict(Counter(r["userIdentity"].get("arn", "") for r in window))
    iam_rows = query("filter eventSource = 'iam.amazonaws.com' and eventName in ['ListUsers', 'ListRoles'] "
                     "| stats count(*) as n by eventName | sort n desc | limit 1")
    assert iam_rows == [{"eventName": "ListUsers", "n": str(sum(1 for r in window if r["eventName"] == "ListUsers"))}]


def test_attacks_on_queries_roles_and_records(srv):
    """Query results need permission on the groups read; handing CloudTrail a role needs
    iam:PassRole; a malformed PutLogEvents keeps its messages out of the record; a bin()
    period that overflows is a malformed query."""
    admin, iam, ct = srv.client("logs"), srv.client("iam"), srv.client("cloudtrail")
    for g in ("/secret", "/open"):
        admin.create_log_group(logGroupName=g)
        admin.create_log_stream(logGroupName=g, logStreamName="s")
        admin.put_log_events(logGroupName=g, logStreamName="s",
                             logEvents=[{"timestamp": now_ms(), "message": f"{g} payload"}])
    iam.create_user(UserName="open-reader")
    iam.put_user_policy(UserName="open-reader", PolicyName="p", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["logs:*", "cloudtrail:*"],
             "Resource": [f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/open:*", "arn:aws:cloudtrail:*:*:*", "*"]},
            {"Effect": "Deny", "Action": ["logs:GetQueryResults", "logs:StopQuery", "logs:StartQuery"],
             "Resource": f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/secret:*"}]}))
    k = iam.create_access_key(UserName="open-reader")["AccessKey"]
    reader = srv.client("logs", key=k["AccessKeyId"], secret=k["SecretAccessKey"])
    qid = admin.start_query(logGroupName="/secret", startTime=0, endTime=int(time.time()) + 60,
                            queryString="fields @message")["queryId"]
    wait_query(admin, qid)
    for call in (lambda: reader.get_query_results(queryId=qid), lambda: reader.stop_query(queryId=qid)):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "AccessDeniedException"
    assert qid not in [q["queryId"] for q in reader.describe_queries()["queries"]]
    mine = reader.start_query(logGroupName="/open", startTime=0, endTime=int(time.time()) + 60,
                              queryString="fields @message")["queryId"]
    assert wait_query(reader, mine)["results"][0][0]["value"] == "/open payload"
    with pytest.raises(ClientError) as e:
        admin.start_query(logGroupName="/open", startTime=0, endTime=1, queryString="stats count(*) by bin(2305843009213693952s)")
    assert code(e) == "MalformedQueryException"
    # iam:PassRole: a caller allowed everything in CloudTrail and Logs but not to pass roles.
    srv.client("s3").create_bucket(Bucket="passrole-trail-logs")
    garn = f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/open"
    role = cw_role(iam, "PassMe", garn)
    rct = srv.client("cloudtrail", key=k["AccessKeyId"], secret=k["SecretAccessKey"])
    with pytest.raises(ClientError) as e:
        rct.create_trail(Name="passrole-trail", S3BucketName="passrole-trail-logs",
                         CloudWatchLogsLogGroupArn=garn + ":*", CloudWatchLogsRoleArn=role)
    assert code(e) == "AccessDeniedException" and "iam:PassRole" in str(e.value)
    assert ct.describe_trails(trailNameList=["passrole-trail"])["trailList"] == []
    # A PutLogEvents that does not parse (a timestamp as text) is recorded without its messages.
    body = json.dumps({"logGroupName": "/open", "logStreamName": "s",
                       "logEvents": [{"timestamp": "soon", "message": "NEVER-RECORDED-8812"}]}).encode()
    h = signed(srv, "logs", "POST", "/", body, headers={"X-Amz-Target": "Logs_20140328.PutLogEvents",
                                                         "Content-Type": "application/x-amz-json-1.1"})
    st, _, out = send(srv, "POST", "/", h, body)
    assert st == 400 and b"InvalidParameterException" in out, out
    events = ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "PutLogEvents"}])["Events"]
    assert events and not any("NEVER-RECORDED-8812" in e["CloudTrailEvent"] for e in events)
