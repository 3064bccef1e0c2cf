"""Every CloudTrail operation cairn implements, through boto3 (whose parser checks the
response shapes against the botocore model), including the modelled error cases."""
import base64
import gzip
import hashlib
import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

ACCOUNT = "123456789012"
BUCKET = "trail-api-logs"
CONFIG = f"""
[[bucket]]
name = "{BUCKET}"
"""


@pytest.fixture(scope="module")
def srv(cairn_server_factory):
    return cairn_server_factory(config=CONFIG, delivery="1s", digest="3s")


@pytest.fixture(scope="module")
def ct(srv):
    return srv.client("cloudtrail")


def code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def test_trail_lifecycle_and_shapes(srv, ct):
    out = ct.create_trail(Name="api-trail", S3BucketName=BUCKET, S3KeyPrefix="audit", IsMultiRegionTrail=True,
                          EnableLogFileValidation=True, TagsList=[{"Key": "team", "Value": "sec"}])
    arn = f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/api-trail"
    assert out["TrailARN"] == arn and out["S3KeyPrefix"] == "audit" and out["LogFileValidationEnabled"] is True
    t = ct.get_trail(Name="api-trail")["Trail"]
    assert t == ct.get_trail(Name=arn)["Trail"]
    assert t["HomeRegion"] == "us-east-1" and t["IsMultiRegionTrail"] and t["IncludeGlobalServiceEvents"]
    assert t["HasCustomEventSelectors"] is False and t["HasInsightSelectors"] is False
    assert ct.list_trails()["Trails"] == [{"TrailARN": arn, "Name": "api-trail", "HomeRegion": "us-east-1"}]
    assert [x["Name"] for x in ct.describe_trails()["trailList"]] == ["api-trail"]
    assert ct.list_tags(ResourceIdList=[arn])["ResourceTagList"] == [{"ResourceId": arn, "TagsList": [{"Key": "team", "Value": "sec"}]}]

    st = ct.get_trail_status(Name="api-trail")
    assert st["IsLogging"] is False and "StartLoggingTime" not in st
    ct.start_logging(Name="api-trail")
    st = ct.get_trail_status(Name=arn)
    assert st["IsLogging"] is True and isinstance(st["StartLoggingTime"], datetime)
    time.sleep(1.1)  # digest windows have whole-second bounds: one must have begun to close
    srv.flush("api-trail")
    st = ct.get_trail_status(Name="api-trail")
    assert isinstance(st["LatestDeliveryTime"], datetime) and isinstance(st["LatestDigestDeliveryTime"], datetime)
    ct.stop_logging(Name="api-trail")
    st = ct.get_trail_status(Name="api-trail")
    assert st["IsLogging"] is False and st["StopLoggingTime"] >= st["StartLoggingTime"]

    upd = ct.update_trail(Name="api-trail", S3KeyPrefix="audit2")
    assert upd["S3KeyPrefix"] == "audit2" and upd["TrailARN"] == arn


def test_response_elements_are_logged_for_writes_with_an_answer_only(ct):
    """CloudTrail records a write's answer (its top-level members in lowerCamelCase) as
    responseElements, and null for a read or an empty answer: read back through LookupEvents."""
    ct.create_trail(Name="elements-trail", S3BucketName=BUCKET)
    status = ct.get_trail_status(Name="elements-trail")
    ct.start_logging(Name="elements-trail")

    def recorded(name):
        for _ in range(50):
            events = ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": name}],
                                      MaxResults=50)["Events"]
            for e in events:
                rec = json.loads(e["CloudTrailEvent"])
                if (rec.get("requestParameters") or {}).get("name") == "elements-trail":
                    return rec
            time.sleep(0.1)
        raise AssertionError(f"no {name} event for elements-trail")

    created = recorded("CreateTrail")["responseElements"]
    assert created["name"] == "elements-trail" and created["s3BucketName"] == BUCKET, created
    assert created["trailARN"] == f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/elements-trail", created
    read = recorded("GetTrailStatus")
    assert read["readOnly"] is True and read["responseElements"] is None, read
    assert status["IsLogging"] is False
    assert recorded("StartLogging")["responseElements"] is None
    ct.stop_logging(Name="elements-trail")
    ct.delete_trail(Name="elements-trail")


def test_shadow_trails_and_the_home_region_rule(srv, ct):
    west = srv.client("cloudtrail", region="us-west-2")
    arn = f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/api-trail"
    shadow = west.describe_trails()["trailList"]
    assert [(t["Name"], t["HomeRegion"], t["TrailARN"]) for t in shadow] == [("api-trail", "us-east-1", arn)]
    assert west.describe_trails(includeShadowTrails=False)["trailList"] == []
    assert west.describe_trails(trailNameList=[arn])["trailList"][0]["TrailARN"] == arn
    with pytest.raises(ClientError) as e:
        west.update_trail(Name=arn, S3KeyPrefix="x")
    assert code(e) == "InvalidHomeRegionException"
    with pytest.raises(ClientError) as e:
        west.stop_logging(Name=arn)
    assert code(e) == "InvalidHomeRegionException"
    # A single-region trail is invisible elsewhere.
    ct.create_trail(Name="east-only", S3BucketName=BUCKET)
    with pytest.raises(ClientError) as e:
        west.get_trail(Name="east-only")
    assert code(e) == "TrailNotFoundException"
    ct.delete_trail(Name="east-only")


def test_modelled_trail_errors(ct):
    with pytest.raises(ClientError) as e:
        ct.get_trail(Name="no-such-trail")
    assert code(e) == "TrailNotFoundException"
    assert e.value.response["Error"]["Message"] == f"Unknown trail: no-such-trail for the user: {ACCOUNT}"
    for bad, msg in [("ab", "Trail name too short. Minimum allowed length: 3 characters. Specified name length: 2 characters."),
                     ("my--trail", None), ("-trail", None), ("192.168.1.1", None)]:
        with pytest.raises(ClientError) as e:
            ct.create_trail(Name=bad, S3BucketName=BUCKET)
        assert code(e) == "InvalidTrailNameException", bad
        if msg:
            assert e.value.response["Error"]["Message"] == msg
    with pytest.raises(ClientError) as e:
        ct.create_trail(Name="api-trail", S3BucketName=BUCKET)
    assert code(e) == "TrailAlreadyExistsException"
    with pytest.raises(ClientError) as e:
        ct.create_trail(Name="nobucket", S3BucketName="no-such-bucket-here")
    assert code(e) == "S3BucketDoesNotExistException"
    with pytest.raises(ClientError) as e:
        ct.create_trail(Name="nobucket", S3BucketName="Bad_Bucket")
    assert code(e) == "InvalidS3BucketNameException"
    with pytest.raises(ClientError) as e:
        ct.create_trail(Name="combo", S3BucketName=BUCKET, IsMultiRegionTrail=True, IncludeGlobalServiceEvents=False)
    assert code(e) == "InvalidParameterCombinationException"
    with pytest.raises(ClientError) as e:
        ct.get_trail(Name="arn:aws:cloudtrail:us-east-1:123:trail/x")
    assert code(e) == "CloudTrailARNInvalidException"
    for status in [e.value.response["ResponseMetadata"]["HTTPStatusCode"]]:
        assert status == 400


def test_event_selectors_basic_advanced_and_invalid(ct):
    basic = [{"ReadWriteType": "WriteOnly", "IncludeManagementEvents": True,
              "DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3:::artifacts/"]}],
              "ExcludeManagementEventSources": []}]
    out = ct.put_event_selectors(TrailName="api-trail", EventSelectors=basic)
    assert out["EventSelectors"] == basic
    got = ct.get_event_selectors(TrailName="api-trail")
    assert got["EventSelectors"] == basic and "AdvancedEventSelectors" not in got
    assert ct.get_trail(Name="api-trail")["Trail"]["HasCustomEventSelectors"] is True
    adv = [{"Name": "S3 writes", "FieldSelectors": [
        {"Field": "eventCategory", "Equals": ["Data"]},
        {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
        {"Field": "readOnly", "Equals": ["false"]}]}]
    ct.put_event_selectors(TrailName="api-trail", AdvancedEventSelectors=adv)
    got = ct.get_event_selectors(TrailName="api-trail")
    assert got["AdvancedEventSelectors"] == adv and "EventSelectors" not in got
    with pytest.raises(ClientError) as e:
        ct.put_event_selectors(TrailName="api-trail", EventSelectors=[
            {"DataResources": [{"Type": "AWS::S3::Object", "Values": ["not-an-arn"]}]}])
    assert code(e) == "InvalidEventSelectorsException"
    with pytest.raises(ClientError) as e:
        ct.put_event_selectors(TrailName="api-trail", EventSelectors=[{}] * 6)
    assert code(e) == "InvalidEventSelectorsException"
    with pytest.raises(ClientError) as e:
        ct.put_event_selectors(TrailName="api-trail", EventSelectors=basic, AdvancedEventSelectors=adv)
    assert code(e) == "InvalidParameterCombinationException"
    with pytest.raises(ClientError) as e:
        ct.get_event_selectors(TrailName="missing-trail")
    assert code(e) == "TrailNotFoundException"


def test_insight_selectors(ct):
    with pytest.raises(ClientError) as e:
        ct.get_insight_selectors(TrailName="api-trail")
    assert code(e) == "InsightNotEnabledException"
    ct.put_insight_selectors(TrailName="api-trail", InsightSelectors=[{"InsightType": "ApiCallRateInsight"}])
    got = ct.get_insight_selectors(TrailName="api-trail")
    assert got["InsightSelectors"] == [{"InsightType": "ApiCallRateInsight"}]
    assert ct.get_trail(Name="api-trail")["Trail"]["HasInsightSelectors"] is True
    with pytest.raises(ClientError) as e:
        ct.put_insight_selectors(TrailName="api-trail", InsightSelectors=[{"InsightType": "Nope"}])
    assert code(e) == "InvalidInsightSelectorsException"


def test_tags(ct):
    arn = f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/api-trail"
    ct.add_tags(ResourceId=arn, TagsList=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "audit"}])
    ct.remove_tags(ResourceId=arn, TagsList=[{"Key": "env"}])
    tags = ct.list_tags(ResourceIdList=[arn])["ResourceTagList"][0]["TagsList"]
    assert tags == [{"Key": "team", "Value": "audit"}]
    with pytest.raises(ClientError) as e:
        ct.add_tags(ResourceId=arn, TagsList=[{"Key": f"k{i}", "Value": "v"} for i in range(51)])
    assert code(e) == "TagsLimitExceededException"
    with pytest.raises(ClientError) as e:
        ct.list_tags(ResourceIdList=[f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/ghost"])
    assert code(e) == "ResourceNotFoundException"


def test_list_public_keys(ct):
    keys = ct.list_public_keys(StartTime=datetime(2000, 1, 1, tzinfo=timezone.utc))["PublicKeyList"]
    assert keys
    for k in keys:
        assert len(k["Value"]) == 270 and k["Value"][:4] == b"0\x82\x01\n"
        assert hashlib.md5(k["Value"]).hexdigest() == k["Fingerprint"]
        assert k["ValidityEndTime"] - k["ValidityStartTime"] == timedelta(days=30)
    with pytest.raises(ClientError) as e:
        ct.list_public_keys(StartTime=datetime(2030, 1, 1), EndTime=datetime(2020, 1, 1))
    assert code(e) == "InvalidTimeRangeException"


def test_lookup_events_pages_newest_first_and_validates(srv, ct):
    for i in range(5):
        ct.add_tags(ResourceId=f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/api-trail",
                    TagsList=[{"Key": f"page{i}", "Value": "x"}])
    attrs = [{"AttributeKey": "EventName", "AttributeValue": "AddTags"}]
    seen, token, pages = [], None, 0
    while True:
        kw = {"LookupAttributes": attrs, "MaxResults": 2}
        if token:
            kw["NextToken"] = token
        out = ct.lookup_events(**kw)
        assert len(out["Events"]) <= 2
        seen += out["Events"]
        pages += 1
        token = out.get("NextToken")
        if not token:
            break
    assert pages >= 3 and len(seen) >= 6
    times = [e["EventTime"] for e in seen]
    assert times == sorted(times, reverse=True)
    assert len({e["EventId"] for e in seen}) == len(seen)
    assert all(e["EventName"] == "AddTags" and e["ReadOnly"] == "false" for e in seen)
    assert seen[0]["Resources"][0]["ResourceType"] == "AWS::CloudTrail::Trail"
    # ReadOnly and Username attributes.
    ro = ct.lookup_events(LookupAttributes=[{"AttributeKey": "ReadOnly", "AttributeValue": "true"}], MaxResults=5)["Events"]
    assert ro and all(e["ReadOnly"] == "true" for e in ro)
    assert ct.lookup_events(LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": "root"}], MaxResults=1)["Events"]
    first = ct.lookup_events(LookupAttributes=attrs, MaxResults=2)
    with pytest.raises(ClientError) as e:
        ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "StartLogging"}],
                         MaxResults=2, NextToken=first["NextToken"])
    assert code(e) == "InvalidNextTokenException"
    with pytest.raises(ClientError) as e:
        ct.lookup_events(NextToken="garbage")
    assert code(e) == "InvalidNextTokenException"
    with pytest.raises(ClientError) as e:
        ct.lookup_events(StartTime=datetime(2030, 1, 1), EndTime=datetime(2020, 1, 1))
    assert code(e) == "InvalidTimeRangeException"
    with pytest.raises(ClientError) as e:
        ct.lookup_events(LookupAttributes=attrs + [{"AttributeKey": "ReadOnly", "AttributeValue": "true"}])
    assert code(e) == "InvalidLookupAttributesException"
    with pytest.raises(ClientError) as e:
        ct.lookup_events(LookupAttributes=[{"AttributeKey": "Colour", "AttributeValue": "x"}])
    assert code(e) == "InvalidLookupAttributesException"
    with pytest.raises(ClientError) as e:
        ct.lookup_events(MaxResults=51)
    assert code(e) == "InvalidMaxResultsException"
    # Time range is inclusive and filters.
    future = ct.lookup_events(StartTime=datetime.now(timezone.utc) + timedelta(hours=1),
                              EndTime=datetime.now(timezone.utc) + timedelta(hours=2))
    assert future["Events"] == []


def test_channels_and_put_audit_events(srv, ct):
    ch = ct.create_channel(Name="app-events", Source="Custom",
                           Destinations=[{"Type": "EVENT_DATA_STORE", "Location": f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/api-trail"}])
    arn = ch["ChannelArn"]
    assert ct.get_channel(Channel=arn)["Name"] == "app-events"
    assert [c["Name"] for c in ct.list_channels()["Channels"]] == ["app-events"]
    with pytest.raises(ClientError) as e:
        ct.create_channel(Name="app-events", Source="Custom", Destinations=[{"Type": "EVENT_DATA_STORE", "Location": "x-y-z"}])
    assert code(e) == "ChannelAlreadyExistsException"
    ct.start_logging(Name="api-trail")
    # Lake integration events are their own category: a trail delivers them only when its
    # advanced selectors name it (never as management events).
    ct.put_event_selectors(TrailName="api-trail", AdvancedEventSelectors=[
        {"Name": "management", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]}]},
        {"Name": "lake", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["ActivityAuditLog"]}]}])

    data = srv.client("cloudtrail-data")
    good = json.dumps({"version": "1.0", "userIdentity": {"type": "AppUser", "principalId": "alice"},
                       "eventSource": "billing.acme.example", "eventName": "ApproveInvoice",
                       "eventTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
                       "UID": "u-1", "recipientAccountId": ACCOUNT})
    checksum = base64.b64encode(hashlib.sha256(good.encode()).digest()).decode()
    out = data.put_audit_events(channelArn=arn, externalId="ext-1", auditEvents=[
        {"id": "ok1", "eventData": good, "eventDataChecksum": checksum},
        {"id": "badsum", "eventData": good, "eventDataChecksum": base64.b64encode(b"x" * 32).decode()},
        {"id": "nofield", "eventData": json.dumps({"version": "1.0"})},
        {"id": "otheracct", "eventData": good.replace(ACCOUNT, "999999999999")},
    ])
    assert [s["id"] for s in out["successful"]] == ["ok1"]
    failed = {f["id"]: f["errorCode"] for f in out["failed"]}
    assert failed == {"badsum": "InvalidChecksum", "nofield": "FieldNotFound", "otheracct": "InvalidRecipient"}
    event_id = out["successful"][0]["eventID"]
    with pytest.raises(ClientError) as e:
        data.put_audit_events(channelArn=arn, auditEvents=[{"id": "d", "eventData": good}, {"id": "d", "eventData": good}])
    assert code(e) == "DuplicatedAuditEventId"
    with pytest.raises(ClientError) as e:
        data.put_audit_events(channelArn=f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:channel/nope", auditEvents=[{"id": "a", "eventData": good}])
    assert code(e) == "ChannelNotFound"

    # The accepted event reaches the trail's log files, wrapped as an ActivityAuditLog record.
    srv.flush("api-trail")
    s3 = srv.client("s3")
    recs = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="audit2/AWSLogs/"):
        for o in page.get("Contents", []):
            if "/CloudTrail/" in o["Key"]:
                recs += json.loads(gzip.decompress(s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()))["Records"]
    mine = [r for r in recs if r.get("eventID") == event_id]
    assert len(mine) == 1
    r = mine[0]
    assert r["eventCategory"] == "ActivityAuditLog" and r["eventType"] == "ActivityLog"
    assert r["eventData"]["eventName"] == "ApproveInvoice" and r["metadata"]["channelARN"] == arn
    assert "eventName" not in r and r["userIdentity"]["type"] == "Root"
    ct.delete_channel(Channel=arn)
    with pytest.raises(ClientError) as e:
        ct.get_channel(Channel=arn)
    assert code(e) == "ChannelNotFoundException"


def test_unsupported_and_delete(ct):
    with pytest.raises(ClientError) as e:
        ct.list_event_data_stores()
    assert code(e) == "UnsupportedOperationException"
    ct.delete_trail(Name="api-trail")
    with pytest.raises(ClientError) as e:
        ct.get_trail_status(Name="api-trail")
    assert code(e) == "TrailNotFoundException"
    assert ct.list_trails()["Trails"] == []
