"""PutAuditEvents is idempotent on (channel, event id), as trust-and-testing C12 asks: a
retried id is answered with its original eventID and stored once — while the first request
is still in flight, after it, and after a SIGKILL of the server."""
import gzip
import json
import signal
import threading
from datetime import datetime, timezone

import pytest
from botocore.exceptions import ClientError

ACCOUNT = "123456789012"
LOGS = "lake-logs"


def event(n):
    return json.dumps({"version": "1.0", "userIdentity": {"type": "AppUser", "principalId": "alice"},
                       "eventSource": "billing.acme.example", "eventName": f"Approve{n}",
                       "eventTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
                       "UID": f"u-{n}", "recipientAccountId": ACCOUNT})


def ids_of(out):
    assert out["failed"] == [], out["failed"]
    return {s["id"]: s["eventID"] for s in out["successful"]}


def delivered(box):
    box.flush("lake-trail")
    s3, recs = box.client("s3"), []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=LOGS, Prefix="AWSLogs/"):
        for o in page.get("Contents", []):
            if "/CloudTrail/" in o["Key"]:
                recs += json.loads(gzip.decompress(s3.get_object(Bucket=LOGS, Key=o["Key"])["Body"].read()))["Records"]
    return [r for r in recs if r.get("eventCategory") == "ActivityAuditLog"]


@pytest.fixture
def box(cairn_server_factory):
    box = cairn_server_factory(config=f'[[bucket]]\nname = "{LOGS}"\n', delivery="1s", digest="3s")
    ct = box.client("cloudtrail")
    ct.create_trail(Name="lake-trail", S3BucketName=LOGS)
    ct.put_event_selectors(TrailName="lake-trail", AdvancedEventSelectors=[
        {"Name": "lake", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["ActivityAuditLog"]}]}])
    ct.start_logging(Name="lake-trail")
    box.channels = [ct.create_channel(Name=n, Source="Custom", Destinations=[
        {"Type": "EVENT_DATA_STORE", "Location": "arn:aws:cloudtrail:us-east-1:123456789012:eventdatastore/x"}])["ChannelArn"]
        for n in ("app", "other")]
    yield box
    box.stop()


def test_a_retried_id_is_answered_with_its_event_id_and_stored_once(box):
    app, other = box.channels
    data = box.client("cloudtrail-data")
    first = ids_of(data.put_audit_events(channelArn=app, auditEvents=[
        {"id": "a", "eventData": event(1)}, {"id": "b", "eventData": event(2)}]))
    again = ids_of(data.put_audit_events(channelArn=app, auditEvents=[
        {"id": "a", "eventData": event(1)}, {"id": "b", "eventData": event(2)}, {"id": "c", "eventData": event(3)}]))
    assert again["a"] == first["a"] and again["b"] == first["b"] and again["c"] not in first.values()
    # The same id on another channel is another event.
    elsewhere = ids_of(data.put_audit_events(channelArn=other, auditEvents=[{"id": "a", "eventData": event(1)}]))
    assert elsewhere["a"] != first["a"]
    # Many senders of one id at once (a retry racing its original): one eventID, one record.
    answers = []

    def send():
        c = box.client("cloudtrail-data")
        answers.append(ids_of(c.put_audit_events(channelArn=app, auditEvents=[{"id": "race", "eventData": event(4)}]))["race"])

    threads = [threading.Thread(target=send) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(answers) == 8 and len(set(answers)) == 1, answers
    # Across a SIGKILL: the index is rebuilt from the journal before the first answer.
    before_kill = ids_of(data.put_audit_events(channelArn=app, auditEvents=[{"id": "k", "eventData": event(5)}]))
    box.proc.send_signal(signal.SIGKILL)
    box.proc.wait()
    box.log.close()
    box.start()
    data = box.client("cloudtrail-data")
    after = ids_of(data.put_audit_events(channelArn=app, auditEvents=[
        {"id": "k", "eventData": event(5)}, {"id": "a", "eventData": event(1)}, {"id": "race", "eventData": event(4)}]))
    assert after == {"k": before_kill["k"], "a": first["a"], "race": answers[0]}
    recs = delivered(box)
    by_id = {}
    for r in recs:
        by_id.setdefault(r["eventID"], 0)
        by_id[r["eventID"]] += 1
    want = {first["a"], first["b"], again["c"], elsewhere["a"], answers[0], before_kill["k"]}
    assert {e: by_id.get(e, 0) for e in want} == {e: 1 for e in want}, by_id
    assert len(recs) == len(want), [r["eventData"]["eventName"] for r in recs]


def test_a_caller_without_permission_learns_nothing_from_a_stored_id(box):
    app, _ = box.channels
    data = box.client("cloudtrail-data")
    ids_of(data.put_audit_events(channelArn=app, auditEvents=[{"id": "secret", "eventData": event(1)}]))
    iam = box.client("iam")
    iam.create_user(UserName="reader")
    iam.put_user_policy(UserName="reader", PolicyName="p", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "cloudtrail:Describe*", "Resource": "*"}]}))
    k = iam.create_access_key(UserName="reader")["AccessKey"]
    intruder = box.client("cloudtrail-data", key=k["AccessKeyId"], secret=k["SecretAccessKey"])
    with pytest.raises(ClientError) as e:
        intruder.put_audit_events(channelArn=app, auditEvents=[{"id": "secret", "eventData": event(1)}])
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    # A wrong secret: refused before anything is looked up.
    forged = box.client("cloudtrail-data", key=k["AccessKeyId"], secret="not-the-secret")
    with pytest.raises(ClientError) as e:
        forged.put_audit_events(channelArn=app, auditEvents=[{"id": "secret", "eventData": event(1)}])
    assert e.value.response["Error"]["Code"] in ("InvalidSignatureException", "SignatureDoesNotMatch")
    assert len([r for r in delivered(box) if r["eventData"]["UID"] == "u-1"]) == 1
