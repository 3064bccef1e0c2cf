"""DynamoDB through cairn, in front of dynalite (npm) and moto_server as real upstreams.

One boto3 suite runs twice, directly against the upstream and through cairn, and must give
the same answers (items, errors, pagination keys; ARNs differ only in their account). The
delivered log files then hold one data event per item call on the audited table, none for a
table outside the trail's selectors, and the sentinel values the suite wrote (in items,
condition values, PartiQL parameters) appear nowhere: not in the log files, not in
LookupEvents, not in any file of the data directory. Callers without permission, unsigned,
wrongly signed and tampered calls are refused in DynamoDB's error shapes and never reach the
upstream."""
import gzip
import json
import re
import zlib
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from rawreq import send, signed

ACCOUNT = "123456789012"
AUDITED = "ddb-audited"
IGNORED = "ddb-ignored"
LOGS = "ddb-test-logs"
SENTINEL = "SENTINEL-7f3a9c"


def arn(table):
    return f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{table}"


def config(upstream):
    selectors = json.dumps([{"ReadWriteType": "All", "IncludeManagementEvents": True,
                             "DataResources": [{"Type": "AWS::DynamoDB::Table", "Values": [arn(AUDITED)]}]}])
    return f"""
[dynamodb]
upstream = "{upstream}"
access_key_id = "upstream-key"
secret_access_key_env = "CAIRN_TEST_DDB_SECRET"
[[bucket]]
name = "{LOGS}"
[[trail]]
name = "ddb-trail"
bucket = "{LOGS}"
logging = true
event_selectors = '{selectors}'
"""


def upstream_client(endpoint):
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="upstream-key", aws_secret_access_key="upstream-secret",
                        config=Config(retries={"total_max_attempts": 1}))


@pytest.fixture(scope="module")
def setup(cairn_server_factory, dynalite):
    srv = cairn_server_factory(config=config(dynalite), env={"CAIRN_TEST_DDB_SECRET": "upstream-secret"})
    return srv, upstream_client(dynalite)


def ddb(srv, key=None, secret=None):
    return boto3.client("dynamodb", endpoint_url=srv.endpoint, region_name="us-east-1",
                        aws_access_key_id=key or srv.key, aws_secret_access_key=secret or srv.secret,
                        config=Config(retries={"total_max_attempts": 1}))


def code(e):
    return e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]


VOLATILE = {"CreationDateTime", "TableId", "LastIncreaseDateTime", "LastDecreaseDateTime",
            "LastUpdateToPayPerRequestDateTime"}


def normalized(v):
    """An answer without its request metadata and creation times; ARNs with the account blanked."""
    if isinstance(v, dict):
        return {k: normalized(x) for k, x in v.items() if k not in VOLATILE and k != "ResponseMetadata"}
    if isinstance(v, list):
        return [normalized(x) for x in v]
    if isinstance(v, str):
        return re.sub(r"^(arn:aws:dynamodb:[a-z0-9-]+:)\d{12}:", r"\1ACCOUNT:", v)
    return v


def suite(c, table):
    """The same calls, in order; returns their comparable outcomes and the item calls made."""
    out, item_calls = [], []

    def call(name, **kw):
        if name in ITEM_CALLS and kw.get("TableName", table) == table:
            item_calls.append(name)
        try:
            out.append((name, "ok", normalized(getattr(c, snake(name))(**kw))))
        except ClientError as e:
            out.append((name, "error", e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]))
        return out[-1]

    call("CreateTable", TableName=table, BillingMode="PAY_PER_REQUEST",
         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                               {"AttributeName": "sk", "AttributeType": "N"},
                               {"AttributeName": "email", "AttributeType": "S"}],
         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
         GlobalSecondaryIndexes=[{"IndexName": "byEmail", "KeySchema": [{"AttributeName": "email", "KeyType": "HASH"}],
                                  "Projection": {"ProjectionType": "ALL"}}])
    c.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    call("DescribeTable", TableName=table)
    for i in range(1, 8):
        call("PutItem", TableName=table, Item={"pk": {"S": "u1"}, "sk": {"N": str(i)},
                                               "email": {"S": f"{SENTINEL}-mail-{i % 2}"},
                                               "secret": {"S": f"{SENTINEL}-item-{i}"}, "n": {"N": str(i * 10)}})
    call("PutItem", TableName=table, Item={"pk": {"S": "u1"}, "sk": {"N": "1"}, "secret": {"S": SENTINEL}},
         ConditionExpression="attribute_not_exists(pk)")
    call("GetItem", TableName=table, Key={"pk": {"S": "u1"}, "sk": {"N": "2"}})
    call("GetItem", TableName=table, Key={"pk": {"S": "u1"}, "sk": {"N": "99"}})
    call("GetItem", TableName=table, Key={"pk": {"S": "u1"}, "sk": {"N": "3"}}, ProjectionExpression="#s, n",
         ExpressionAttributeNames={"#s": "secret"}, ConsistentRead=True)
    page = call("Query", TableName=table, KeyConditionExpression="pk = :p AND sk > :s",
                ExpressionAttributeValues={":p": {"S": "u1"}, ":s": {"N": "1"}}, Limit=3)
    start = page[2].get("LastEvaluatedKey") if page[1] == "ok" else None
    assert start, page
    call("Query", TableName=table, KeyConditionExpression="pk = :p AND sk > :s",
         ExpressionAttributeValues={":p": {"S": "u1"}, ":s": {"N": "1"}}, Limit=3, ExclusiveStartKey=start)
    call("Query", TableName=table, IndexName="byEmail", KeyConditionExpression="email = :e",
         ExpressionAttributeValues={":e": {"S": f"{SENTINEL}-mail-1"}})
    call("Query", TableName=table, KeyConditionExpression="pk = :p", FilterExpression="n > :n",
         ExpressionAttributeValues={":p": {"S": "u1"}, ":n": {"N": "35"}}, ScanIndexForward=False)
    scan = call("Scan", TableName=table, Limit=4)
    call("Scan", TableName=table, Limit=4, ExclusiveStartKey=scan[2]["LastEvaluatedKey"])
    call("UpdateItem", TableName=table, Key={"pk": {"S": "u1"}, "sk": {"N": "4"}},
         UpdateExpression="SET #s = :v ADD n :one", ExpressionAttributeNames={"#s": "secret"},
         ExpressionAttributeValues={":v": {"S": f"{SENTINEL}-updated"}, ":one": {"N": "1"}}, ReturnValues="ALL_NEW")
    call("UpdateItem", TableName=table, Key={"pk": {"S": "u1"}, "sk": {"N": "4"}},
         UpdateExpression="SET n = :v", ConditionExpression="secret = :c",
         ExpressionAttributeValues={":v": {"N": "0"}, ":c": {"S": f"{SENTINEL}-condition"}})
    call("DeleteItem", TableName=table, Key={"pk": {"S": "u1"}, "sk": {"N": "5"}}, ReturnValues="ALL_OLD")
    call("BatchWriteItem", RequestItems={table: [
        {"PutRequest": {"Item": {"pk": {"S": "u2"}, "sk": {"N": "1"}, "secret": {"S": f"{SENTINEL}-batch"}}}},
        {"PutRequest": {"Item": {"pk": {"S": "u2"}, "sk": {"N": "2"}}}},
        {"DeleteRequest": {"Key": {"pk": {"S": "u1"}, "sk": {"N": "6"}}}}]})
    got = call("BatchGetItem", RequestItems={table: {"Keys": [{"pk": {"S": "u2"}, "sk": {"N": "1"}},
                                                             {"pk": {"S": "u1"}, "sk": {"N": "2"}}]}})
    if got[1] == "ok":
        # The order of a batch's items is not part of the answer.
        got[2]["Responses"][table].sort(key=lambda i: json.dumps(i, sort_keys=True))
    # Client mistakes, as the upstream words them.
    call("GetItem", TableName="ddb-no-such-table", Key={"pk": {"S": "x"}})
    call("PutItem", TableName=table, Item={"sk": {"N": "1"}, "secret": {"S": SENTINEL}})
    call("Query", TableName=table, KeyConditionExpression="sk = :s", ExpressionAttributeValues={":s": {"N": "1"}})
    call("DescribeTable", TableName="ddb-no-such-table")
    desc = c.describe_table(TableName=table)["Table"]
    call("TagResource", ResourceArn=desc["TableArn"], Tags=[{"Key": "team", "Value": "audit"}])
    call("ListTagsOfResource", ResourceArn=desc["TableArn"])
    call("DeleteTable", TableName=table)
    c.get_waiter("table_not_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    return out, item_calls


ITEM_CALLS = {"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "BatchGetItem", "BatchWriteItem",
              "TransactGetItems", "TransactWriteItems", "ExecuteStatement", "BatchExecuteStatement",
              "ExecuteTransaction"}
READ = {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"}


def snake(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def delivered(srv, trail="ddb-trail"):
    srv.flush(trail)
    s3 = srv.client("s3")
    records, texts = [], []
    for o in s3.list_objects_v2(Bucket=LOGS, Prefix="AWSLogs/").get("Contents", []):
        if "/CloudTrail/" in o["Key"]:
            text = gzip.decompress(s3.get_object(Bucket=LOGS, Key=o["Key"])["Body"].read()).decode()
            texts.append(text)
            records += json.loads(text)["Records"]
    return records, "\n".join(texts)


def assert_nowhere(srv, text, sentinel=SENTINEL):
    assert sentinel not in text
    ct = srv.client("cloudtrail")
    token, events = None, []
    while True:
        kw = {"NextToken": token} if token else {}
        page = ct.lookup_events(MaxResults=50, **kw)
        events += page["Events"]
        token = page.get("NextToken")
        if not token:
            break
    assert events and not [e for e in events if sentinel in e["CloudTrailEvent"]]
    for p in Path(srv.data).rglob("*"):
        if p.is_file():
            assert sentinel.encode() not in p.read_bytes(), f"{sentinel} found in {p}"


def test_the_same_suite_gives_the_same_answers_direct_and_through_cairn(setup):
    srv, direct = setup
    want, _ = suite(direct, AUDITED)
    got, item_calls = suite(ddb(srv), AUDITED)
    assert len(got) == len(want)
    for w, g in zip(want, got):
        assert g == w, json.dumps([w, g], default=str)
    # The ARNs cairn shows are its own.
    desc = [o for o in got if o[0] == "DescribeTable" and o[1] == "ok"][0][2]
    assert desc["Table"]["TableName"] == AUDITED
    c = ddb(srv)
    c.create_table(TableName=IGNORED, BillingMode="PAY_PER_REQUEST",
                   AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                   KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    c.get_waiter("table_exists").wait(TableName=IGNORED, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    assert c.describe_table(TableName=IGNORED)["Table"]["TableArn"] == arn(IGNORED)
    c.put_item(TableName=IGNORED, Item={"pk": {"S": "k"}, "v": {"S": SENTINEL}})
    assert c.get_item(TableName=IGNORED, Key={"pk": {"S": "k"}})["Item"]["v"]["S"] == SENTINEL

    records, text = delivered(srv)
    data = [r for r in records if r.get("eventCategory") == "Data" and r["eventSource"] == "dynamodb.amazonaws.com"]
    # One data event per item call on the audited table (errors included), none for the other.
    audited = [r for r in data if any(x["ARN"] == arn(AUDITED) for x in r.get("resources", []))]
    assert sorted(r["eventName"] for r in audited) == sorted(n for n in item_calls), \
        (sorted(r["eventName"] for r in audited), sorted(item_calls))
    assert not [r for r in data if any(x["ARN"] == arn(IGNORED) for x in r.get("resources", []))]
    for r in audited:
        assert r["readOnly"] is (r["eventName"] in READ), r
        assert r["managementEvent"] is False and r["apiVersion"] == "2012-08-10"
        assert r["resources"] == [{"accountId": ACCOUNT, "type": "AWS::DynamoDB::Table", "ARN": arn(AUDITED)}]
        assert r["responseElements"] is None
    put = [r for r in audited if r["eventName"] == "PutItem" and "errorCode" not in r][0]
    assert put["requestParameters"]["tableName"] == AUDITED
    assert put["requestParameters"]["key"] == {"pk": "u1", "sk": "1"}
    assert put["requestParameters"]["item"] == ["pk", "sk", "email", "secret", "n"]
    failed = [r for r in audited if r["eventName"] == "PutItem" and r.get("errorCode")]
    assert {r["errorCode"] for r in failed} == {"ConditionalCheckFailedException", "ValidationException"}
    upd = [r for r in audited if r["eventName"] == "UpdateItem" and r.get("errorCode")][0]
    assert upd["errorCode"] == "ConditionalCheckFailedException"
    assert upd["requestParameters"]["conditionExpression"] == "secret = :c"
    assert "expressionAttributeValues" not in upd["requestParameters"]
    q = [r for r in audited if r["eventName"] == "Query" and r["requestParameters"].get("indexName") == "byEmail"][0]
    assert q["requestParameters"]["keyConditionExpression"] == "email = :e"
    bw = [r for r in audited if r["eventName"] == "BatchWriteItem"][0]
    assert bw["requestParameters"]["requestItems"][AUDITED][0]["putRequest"]["key"] == {"pk": "u2", "sk": "1"}
    # Management calls are management events (and in LookupEvents).
    mgmt = {r["eventName"] for r in records if r["eventSource"] == "dynamodb.amazonaws.com"
            and r.get("eventCategory") == "Management"}
    assert {"CreateTable", "DescribeTable", "TagResource", "ListTagsOfResource", "DeleteTable"} <= mgmt
    create = [r for r in records if r["eventName"] == "CreateTable"
              and r["requestParameters"]["tableName"] == AUDITED and "errorCode" not in r][-1]
    assert create["responseElements"]["tableDescription"]["tableArn"] == arn(AUDITED)
    assert_nowhere(srv, text)


def test_refused_calls_never_reach_the_upstream(setup):
    srv, direct = setup
    c = ddb(srv)
    c.create_table(TableName="ddb-guarded", BillingMode="PAY_PER_REQUEST",
                   AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                   KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    c.get_waiter("table_exists").wait(TableName="ddb-guarded", WaiterConfig={"Delay": 1, "MaxAttempts": 30})

    def absent(pk):
        return "Item" not in direct.get_item(TableName="ddb-guarded", Key={"pk": {"S": pk}})

    # Wrong secret, unknown key.
    with pytest.raises(ClientError) as e:
        ddb(srv, secret="wrong").put_item(TableName="ddb-guarded", Item={"pk": {"S": "forged"}})
    assert code(e) == ("InvalidSignatureException", 400)
    with pytest.raises(ClientError) as e:
        ddb(srv, key="AKIANOSUCHKEY0000000").put_item(TableName="ddb-guarded", Item={"pk": {"S": "forged"}})
    assert code(e) == ("UnrecognizedClientException", 400)
    # Unsigned.
    body = json.dumps({"TableName": "ddb-guarded", "Item": {"pk": {"S": "unsigned"}}}).encode()
    h = {"Host": f"127.0.0.1:{srv.port}", "X-Amz-Target": "DynamoDB_20120810.PutItem",
         "Content-Type": "application/x-amz-json-1.0"}
    st, headers, out = send(srv, "POST", "/", h, body)
    assert st == 400 and json.loads(out)["__type"].endswith("#MissingAuthenticationTokenException"), out
    assert "x-amz-crc32" in {k.lower() for k in headers}
    # Signed, then changed: the key swapped in the body.
    good = json.dumps({"TableName": "ddb-guarded", "Item": {"pk": {"S": "honest"}}}).encode()
    hs = signed(srv, "dynamodb", "POST", "/", good, headers={"X-Amz-Target": "DynamoDB_20120810.PutItem",
                                                             "Content-Type": "application/x-amz-json-1.0"})
    st, _, out = send(srv, "POST", "/", hs, good.replace(b"honest", b"tamper"))
    assert st == 400 and json.loads(out)["__type"].endswith("#InvalidSignatureException"), out
    # A user allowed only to read, and only their own partition.
    iam = srv.client("iam")
    iam.create_user(UserName="ddb-reader")
    iam.put_user_policy(UserName="ddb-reader", PolicyName="p", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:DescribeTable",
                                          "dynamodb:PartiQLSelect", "dynamodb:Scan"],
            "Resource": arn("ddb-guarded"),
            "Condition": {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["${aws:username}"]}}}]}))
    k = iam.create_access_key(UserName="ddb-reader")["AccessKey"]
    reader = ddb(srv, k["AccessKeyId"], k["SecretAccessKey"])
    c.put_item(TableName="ddb-guarded", Item={"pk": {"S": "ddb-reader"}, "v": {"S": "mine"}})
    c.put_item(TableName="ddb-guarded", Item={"pk": {"S": "someone-else"}, "v": {"S": SENTINEL}})
    assert reader.get_item(TableName="ddb-guarded", Key={"pk": {"S": "ddb-reader"}})["Item"]["v"]["S"] == "mine"
    assert reader.query(TableName="ddb-guarded", KeyConditionExpression="pk = :p",
                        ExpressionAttributeValues={":p": {"S": "ddb-reader"}})["Count"] == 1
    for call in (lambda: reader.get_item(TableName="ddb-guarded", Key={"pk": {"S": "someone-else"}}),
                 lambda: reader.query(TableName="ddb-guarded", KeyConditionExpression="#k = :p",
                                      ExpressionAttributeNames={"#k": "pk"},
                                      ExpressionAttributeValues={":p": {"S": "someone-else"}}),
                 lambda: reader.put_item(TableName="ddb-guarded", Item={"pk": {"S": "ddb-reader"}, "v": {"S": "w"}}),
                 lambda: reader.delete_item(TableName="ddb-guarded", Key={"pk": {"S": "ddb-reader"}}),
                 lambda: reader.execute_statement(
                     Statement="SELECT * FROM \"ddb-guarded\" WHERE pk = 'someone-else'"),
                 lambda: reader.execute_statement(Statement="SELECT * FROM \"ddb-guarded\" WHERE pk = ?",
                                                  Parameters=[{"S": "someone-else"}]),
                 lambda: reader.delete_table(TableName="ddb-guarded"),
                 lambda: reader.batch_get_item(RequestItems={"ddb-guarded": {"Keys": [{"pk": {"S": "ddb-reader"}}]}}),
                 lambda: reader.transact_write_items(TransactItems=[
                     {"Put": {"TableName": "ddb-guarded", "Item": {"pk": {"S": "ddb-reader"}}}}])):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == ("AccessDeniedException", 400), e.value.response
    # Statements cairn and an upstream could read differently are refused, not forwarded.
    for st in ["SELECT * --\rFROM \"ddb-secret\" WHERE pk = 'v' OR a = '\nFROM \"ddb-guarded\" --'",
               "SELECT * FROM \"ddb-guarded\" /* FROM x */", "SELECT * FROM \"ddb-guarded\" WHERE a = `{b: 1}`",
               "SELECT * FROM a, b", "DROP TABLE \"ddb-guarded\""]:
        with pytest.raises(ClientError) as e:
            c.execute_statement(Statement=st)
        assert code(e) == ("ValidationException", 400), st
    # Members twice, differing in case; both sources of a restore: refused.
    raw = json.dumps({"TableName": "ddb-guarded", "tableName": "ddb-secret", "Key": {"pk": {"S": "x"}}}).encode()
    hs = signed(srv, "dynamodb", "POST", "/", raw, headers={"X-Amz-Target": "DynamoDB_20120810.GetItem",
                                                            "Content-Type": "application/x-amz-json-1.0"})
    st, _, out = send(srv, "POST", "/", hs, raw)
    assert st == 400 and json.loads(out)["__type"].endswith("#SerializationException"), out
    with pytest.raises(ClientError) as e:
        c.restore_table_to_point_in_time(SourceTableArn=arn("ddb-guarded"), SourceTableName="ddb-secret",
                                         TargetTableName="ddb-copy")
    assert code(e) == ("ValidationException", 400)
    # A table given by another account's ARN is not cairn's to serve.
    with pytest.raises(ClientError) as e:
        c.get_item(TableName="arn:aws:dynamodb:us-east-1:999999999999:table/ddb-guarded", Key={"pk": {"S": "x"}})
    assert code(e) == ("ValidationException", 400)
    # A user restricted to some attributes reads only those, and only by projection.
    iam.create_user(UserName="ddb-partial")
    iam.put_user_policy(UserName="ddb-partial", PolicyName="p", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": arn("ddb-guarded"),
            "Condition": {"ForAllValues:StringEquals": {"dynamodb:Attributes": ["pk", "v"]},
                          "StringEquals": {"dynamodb:Select": "SPECIFIC_ATTRIBUTES"}}}]}))
    k = iam.create_access_key(UserName="ddb-partial")["AccessKey"]
    partial = ddb(srv, k["AccessKeyId"], k["SecretAccessKey"])
    got = partial.get_item(TableName="ddb-guarded", Key={"pk": {"S": "ddb-reader"}}, ProjectionExpression="v")
    assert got["Item"] == {"v": {"S": "mine"}}
    for kw in ({}, {"ProjectionExpression": "v, secret"}):
        with pytest.raises(ClientError) as e:
            partial.get_item(TableName="ddb-guarded", Key={"pk": {"S": "ddb-reader"}}, **kw)
        assert code(e) == ("AccessDeniedException", 400)
    # A legacy filter names an attribute too (its matches would reveal it).
    iam.put_user_policy(UserName="ddb-partial", PolicyName="scan", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "dynamodb:Scan", "Resource": arn("ddb-guarded"),
            "Condition": {"ForAllValues:StringEquals": {"dynamodb:Attributes": ["pk", "v"]}}}]}))
    assert partial.scan(TableName="ddb-guarded", ProjectionExpression="v")["Count"] >= 1
    with pytest.raises(ClientError) as e:
        partial.scan(TableName="ddb-guarded", ProjectionExpression="v",
                     ScanFilter={"secret": {"ComparisonOperator": "NOT_NULL"}})
    assert code(e) == ("AccessDeniedException", 400)
    # PartiQL names its attributes too: the ones a statement uses are what the policy sees.
    iam.put_user_policy(UserName="ddb-partial", PolicyName="partiql", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "dynamodb:PartiQLSelect", "Resource": arn("ddb-guarded"),
            "Condition": {"ForAllValues:StringEquals": {"dynamodb:Attributes": ["pk", "v"]},
                          "StringEquals": {"dynamodb:Select": "SPECIFIC_ATTRIBUTES"}}}]}))
    with pytest.raises(ClientError) as e:
        # Allowed by cairn; dynalite itself has no PartiQL and says so.
        partial.execute_statement(Statement="SELECT v FROM \"ddb-guarded\" WHERE pk = 'ddb-reader'")
    assert code(e)[0] != "AccessDeniedException", e.value.response
    for st in ["SELECT secret FROM \"ddb-guarded\" WHERE pk = 'ddb-reader'",
               "SELECT * FROM \"ddb-guarded\" WHERE pk = 'ddb-reader'",
               "SELECT v FROM \"ddb-guarded\" WHERE \"secret\" = 'x'"]:
        with pytest.raises(ClientError) as e:
            partial.execute_statement(Statement=st)
        assert code(e) == ("AccessDeniedException", 400), st
    # None of it reached the upstream.
    for pk in ["forged", "unsigned", "honest", "tamper"]:
        assert absent(pk), pk
    assert direct.get_item(TableName="ddb-guarded", Key={"pk": {"S": "ddb-reader"}})["Item"]["v"]["S"] == "mine"
    # Every refusal is recorded (management refusals in LookupEvents).
    events = srv.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "EventSource", "AttributeValue": "dynamodb.amazonaws.com"}],
        MaxResults=50)["Events"]
    got = {(e["EventName"], json.loads(e["CloudTrailEvent"]).get("errorCode")) for e in events}
    assert ("DeleteTable", "AccessDeniedException") in got, got


def test_without_an_upstream_dynamodb_calls_say_how_to_configure_one(cairn_server_factory):
    srv = cairn_server_factory()
    with pytest.raises(ClientError) as e:
        ddb(srv).list_tables()
    assert code(e) == ("NotImplemented", 501)
    assert "[dynamodb]" in e.value.response["Error"]["Message"]
    assert "--dynamodb-upstream" in e.value.response["Error"]["Message"]


@pytest.fixture(scope="module")
def moto_setup(cairn_server_factory, moto_ddb):
    srv = cairn_server_factory(config=config(moto_ddb), env={"CAIRN_TEST_DDB_SECRET": "upstream-secret"})
    return srv, upstream_client(moto_ddb)


def test_transactions_and_partiql_are_recorded_without_their_values(moto_setup):
    srv, direct = moto_setup
    c = ddb(srv)
    for t in (AUDITED, IGNORED):
        c.create_table(TableName=t, BillingMode="PAY_PER_REQUEST",
                       AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                       KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    c.transact_write_items(TransactItems=[
        {"Put": {"TableName": AUDITED, "Item": {"pk": {"S": "t1"}, "secret": {"S": f"{SENTINEL}-tx"}}}},
        {"Put": {"TableName": IGNORED, "Item": {"pk": {"S": "t2"}, "secret": {"S": f"{SENTINEL}-tx2"}}}}])
    got = c.transact_get_items(TransactItems=[{"Get": {"TableName": AUDITED, "Key": {"pk": {"S": "t1"}}}}])
    assert got["Responses"][0]["Item"]["secret"]["S"] == f"{SENTINEL}-tx"
    with pytest.raises(ClientError) as e:
        c.transact_write_items(TransactItems=[{"ConditionCheck": {
            "TableName": AUDITED, "Key": {"pk": {"S": "t1"}}, "ConditionExpression": "secret = :v",
            "ExpressionAttributeValues": {":v": {"S": f"{SENTINEL}-cond"}}}}])
    assert e.value.response["Error"]["Code"] == "TransactionCanceledException"
    c.execute_statement(Statement=f"INSERT INTO \"{AUDITED}\" VALUE {{'pk': 'p1', 'secret': '{SENTINEL}-literal'}}")
    c.execute_statement(Statement=f"UPDATE \"{AUDITED}\" SET secret = ? WHERE pk = 'p1'",
                        Parameters=[{"S": f"{SENTINEL}-param"}])
    sel = c.execute_statement(Statement=f"SELECT * FROM \"{AUDITED}\" WHERE pk = ?", Parameters=[{"S": "p1"}])
    assert sel["Items"][0]["secret"]["S"] == f"{SENTINEL}-param"
    c.batch_execute_statement(Statements=[
        {"Statement": f"INSERT INTO \"{AUDITED}\" VALUE {{'pk': 'p2', 'secret': '{SENTINEL}-batch'}}"}])
    # TTL and continuous backups, which dynalite lacks, pass through too.
    c.update_time_to_live(TableName=AUDITED, TimeToLiveSpecification={"Enabled": True, "AttributeName": "exp"})
    assert direct.describe_time_to_live(TableName=AUDITED)["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"

    records, text = delivered(srv)
    data = [r for r in records if r.get("eventCategory") == "Data"]
    names = sorted(r["eventName"] for r in data)
    assert names == sorted(["TransactWriteItems", "TransactGetItems", "TransactWriteItems", "ExecuteStatement",
                            "ExecuteStatement", "ExecuteStatement", "BatchExecuteStatement"]), names
    tx = [r for r in data if r["eventName"] == "TransactWriteItems" and "errorCode" not in r][0]
    # Every table the transaction touches is listed (the trail selects it for the audited one).
    assert {x["ARN"] for x in tx["resources"]} == {arn(AUDITED), arn(IGNORED)}
    assert [i["operation"] for i in tx["requestParameters"]["requestItems"]] == ["Put", "Put"]
    assert tx["requestParameters"]["requestItems"][0]["key"] == {"pk": "t1"}
    failed = [r for r in data if r["eventName"] == "TransactWriteItems" and r.get("errorCode")][0]
    assert failed["errorCode"] == "TransactionCanceledException"
    upd = [r for r in data if r["eventName"] == "ExecuteStatement" and "UPDATE" in r["requestParameters"]["statement"]][0]
    assert upd["requestParameters"]["statement"] == f"UPDATE \"{AUDITED}\" SET secret = ? WHERE pk = 'p1'"
    ins = [r for r in data if r["eventName"] == "ExecuteStatement" and "INSERT" in r["requestParameters"]["statement"]][0]
    assert ins["requestParameters"]["statement"] == \
        f"INSERT INTO \"{AUDITED}\" VALUE {{'pk': ***(Redacted), 'secret': ***(Redacted)}}"
    assert upd["readOnly"] is False
    sel = [r for r in data if r["eventName"] == "ExecuteStatement" and "SELECT" in r["requestParameters"]["statement"]][0]
    assert sel["readOnly"] is True and "parameters" not in sel["requestParameters"]
    assert_nowhere(srv, text)


def test_an_upstream_that_fails_or_hangs_after_the_event_is_durable_is_recorded_as_failed(cairn_server_factory):
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from conftest import free_port

    seen = []

    class Hang(BaseHTTPRequestHandler):
        """Describes any table; takes every other call and never answers it."""
        def do_POST(self):
            op = self.headers.get("X-Amz-Target", "").split(".")[-1]
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append(op)
            if op != "DescribeTable":
                time.sleep(30)
                return
            body = json.dumps({"Table": {"TableName": AUDITED, "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                                         "TableArn": f"arn:aws:dynamodb:us-east-1:000000000000:table/{AUDITED}"}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    hang = ThreadingHTTPServer(("127.0.0.1", 0), Hang)
    hang.daemon_threads = True
    threading.Thread(target=hang.serve_forever, daemon=True).start()
    # One upstream refuses connections (nothing listens); the other takes the write and hangs.
    for upstream, want in ((f"http://127.0.0.1:{free_port()}", "could not be reached"),
                           (f"http://127.0.0.1:{hang.server_address[1]}", "outcome upstream is unknown")):
        srv = cairn_server_factory(config=config(upstream).replace(
            'secret_access_key_env = "CAIRN_TEST_DDB_SECRET"',
            'secret_access_key_env = "CAIRN_TEST_DDB_SECRET"\ntimeout = "1s"'),
            env={"CAIRN_TEST_DDB_SECRET": "upstream-secret"})
        c = ddb(srv)
        with pytest.raises(ClientError) as e:
            c.put_item(TableName=AUDITED, Item={"pk": {"S": "k"}, "v": {"S": SENTINEL}})
        assert code(e) == ("ServiceUnavailable", 503), e.value.response
        assert want in e.value.response["Error"]["Message"]
        with pytest.raises(ClientError) as e:
            c.list_tables()
        assert code(e) == ("ServiceUnavailable", 503)
        records, text = delivered(srv)
        puts = [r for r in records if r["eventName"] == "PutItem"]
        # Recorded once, with the failure: never as a success.
        assert len(puts) == 1 and puts[0]["errorCode"] == "ServiceUnavailable", puts
        lists = [r for r in records if r["eventName"] == "ListTables"]
        assert len(lists) == 1 and lists[0]["errorCode"] == "ServiceUnavailable"
        assert_nowhere(srv, text)
    # The hanging upstream did get the write: it was forwarded once its event was durable.
    assert "PutItem" in seen
    hang.shutdown()


def test_endpoints_name_cairn_and_other_regions_are_refused(setup):
    srv, _ = setup
    c = ddb(srv)
    eps = c.describe_endpoints()["Endpoints"]
    assert eps == [{"Address": f"127.0.0.1:{srv.port}", "CachePeriodInMinutes": 1440}]
    west = boto3.client("dynamodb", endpoint_url=srv.endpoint, region_name="us-west-2",
                        aws_access_key_id=srv.key, aws_secret_access_key=srv.secret,
                        config=Config(retries={"total_max_attempts": 1}))
    with pytest.raises(ClientError) as e:
        west.list_tables()
    assert code(e) == ("UnrecognizedClientException", 400)
    assert "us-east-1 only" in e.value.response["Error"]["Message"]


def test_an_https_upstream_is_verified_against_the_configured_ca(cairn_server_factory, dynalite, tls_certs):
    import socket
    import ssl
    import threading

    # A TLS front for dynalite with the test CA's certificate for 127.0.0.1.
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls_certs / "cert.pem", tls_certs / "key.pem")
    front = socket.socket()
    front.bind(("127.0.0.1", 0))
    front.listen(64)
    host, port = dynalite.rsplit(":", 1)[0].split("//")[1], int(dynalite.rsplit(":", 1)[1])

    def pump(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve():
        while True:
            try:
                raw, _ = front.accept()
            except OSError:
                return
            try:
                tls = ctx.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                raw.close()
                continue
            up = socket.create_connection((host, port))
            threading.Thread(target=pump, args=(tls, up), daemon=True).start()
            threading.Thread(target=pump, args=(up, tls), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    https = f"https://127.0.0.1:{front.getsockname()[1]}"
    trusted = config(https).replace(
        'secret_access_key_env = "CAIRN_TEST_DDB_SECRET"',
        f'secret_access_key_env = "CAIRN_TEST_DDB_SECRET"\nca_file = "{tls_certs / "ca.pem"}"')
    srv = cairn_server_factory(config=trusted, env={"CAIRN_TEST_DDB_SECRET": "upstream-secret"})
    c = ddb(srv)
    c.create_table(TableName="ddb-tls", BillingMode="PAY_PER_REQUEST",
                   AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                   KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    c.get_waiter("table_exists").wait(TableName="ddb-tls", WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    c.put_item(TableName="ddb-tls", Item={"pk": {"S": "over-tls"}})
    assert c.get_item(TableName="ddb-tls", Key={"pk": {"S": "over-tls"}})["Item"]["pk"]["S"] == "over-tls"
    # Without the CA the upstream's certificate is not trusted: nothing is sent to it.
    srv2 = cairn_server_factory(config=config(https), env={"CAIRN_TEST_DDB_SECRET": "upstream-secret"})
    with pytest.raises(ClientError) as e:
        ddb(srv2).put_item(TableName="ddb-tls", Item={"pk": {"S": "untrusted"}})
    assert code(e) == ("ServiceUnavailable", 503)
    assert "Item" not in upstream_client(dynalite).get_item(TableName="ddb-tls", Key={"pk": {"S": "untrusted"}})
    front.close()


def raw_call(srv, op, payload):
    """One signed DynamoDB call as raw HTTP: (status, headers lowercased, body bytes)."""
    body = json.dumps(payload).encode()
    h = signed(srv, "dynamodb", "POST", "/", body, headers={"X-Amz-Target": f"DynamoDB_20120810.{op}",
                                                           "Content-Type": "application/x-amz-json-1.0"})
    st, headers, out = send(srv, "POST", "/", h, body)
    return st, {k.lower(): v for k, v in headers.items()}, out


def test_every_answer_carries_the_crc32_of_the_bytes_sent(setup):
    """The SDKs check `x-amz-crc32` against the body they receive: it must stay right when the
    answer streams through untouched (item calls), when cairn rewrites it (the upstream's ARNs
    become cairn's in control-plane answers), for upstream errors and for cairn's own."""
    srv, _ = setup
    table = "ddb-crc"
    calls = [
        ("CreateTable", {"TableName": table, "BillingMode": "PAY_PER_REQUEST",
                         "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                         "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]}),
        ("DescribeTable", {"TableName": table}),
        ("PutItem", {"TableName": table, "Item": {"pk": {"S": "k"}, "v": {"S": "x" * 3000}}}),
        ("GetItem", {"TableName": table, "Key": {"pk": {"S": "k"}}}),
        ("Scan", {"TableName": table}),
        ("ListTables", {}),
        ("GetItem", {"TableName": "ddb-crc-missing", "Key": {"pk": {"S": "k"}}}),
        ("PutItem", {"TableName": table, "Item": {"nokey": {"S": "v"}}}),
        ("NoSuchOperation", {}),
        ("DeleteTable", {"TableName": table}),
    ]
    seen = []
    for op, payload in calls:
        if op == "PutItem" and len(seen) == 2:
            ddb(srv).get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        st, headers, out = raw_call(srv, op, payload)
        assert "x-amz-crc32" in headers, (op, st, headers)
        assert int(headers["x-amz-crc32"]) == zlib.crc32(out), (op, st, out[:200])
        seen.append((op, st))
    assert [s for _, s in seen[:6]] == [200] * 6, seen
    assert all(s == 400 for _, s in seen[6:9]), seen
    # The rewritten answer names cairn's account, not the upstream's.
    st, _, out = raw_call(srv, "DescribeTable", {"TableName": "ddb-crc-missing"})
    assert st == 400


def records_under(srv, prefix, trail):
    srv.flush(trail)
    s3 = srv.client("s3")
    out = []
    for o in s3.list_objects_v2(Bucket=LOGS, Prefix=prefix).get("Contents", []):
        if "/CloudTrail/" in o["Key"]:
            out += json.loads(gzip.decompress(s3.get_object(Bucket=LOGS, Key=o["Key"])["Body"].read()))["Records"]
    return out


def make_table(c, name):
    try:
        c.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                       AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                       KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    except ClientError as e:
        assert e.response["Error"]["Code"] == "ResourceInUseException"
    c.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})


def test_batch_and_transaction_calls_list_every_table_they_touch(moto_setup):
    srv, _ = moto_setup
    c = ddb(srv)
    other = "ddb-other"
    for t in (AUDITED, other):
        make_table(c, t)
    c.batch_write_item(RequestItems={
        AUDITED: [{"PutRequest": {"Item": {"pk": {"S": "b1"}, "v": {"S": f"{SENTINEL}-bw"}}}}],
        other: [{"PutRequest": {"Item": {"pk": {"S": "b2"}}}}]})
    got = c.batch_get_item(RequestItems={AUDITED: {"Keys": [{"pk": {"S": "b1"}}]},
                                         other: {"Keys": [{"pk": {"S": "b2"}}]}})
    assert {t: len(v) for t, v in got["Responses"].items()} == {AUDITED: 1, other: 1}
    c.execute_transaction(TransactStatements=[
        {"Statement": f"UPDATE \"{AUDITED}\" SET v = ? WHERE pk = 'b1'", "Parameters": [{"S": f"{SENTINEL}-xt"}]},
        {"Statement": f"UPDATE \"{other}\" SET v = ? WHERE pk = 'b2'", "Parameters": [{"S": f"{SENTINEL}-xt2"}]}])
    c.batch_execute_statement(Statements=[
        {"Statement": f"SELECT * FROM \"{AUDITED}\" WHERE pk = ?", "Parameters": [{"S": "b1"}]},
        {"Statement": f"SELECT * FROM \"{other}\" WHERE pk = ?", "Parameters": [{"S": "b2"}]}])
    records, text = delivered(srv)
    data = [r for r in records if r.get("eventCategory") == "Data"]
    both = {arn(AUDITED), arn(other)}
    for name, read in (("BatchWriteItem", False), ("BatchGetItem", True), ("ExecuteTransaction", False),
                       ("BatchExecuteStatement", True)):
        rs = [r for r in data if r["eventName"] == name and "errorCode" not in r
              and {x["ARN"] for x in r["resources"]} == both]
        assert len(rs) == 1, (name, [(r["eventName"], r.get("resources")) for r in data if r["eventName"] == name])
        assert rs[0]["readOnly"] is read, rs[0]
    assert_nowhere(srv, text)


def test_advanced_selectors_choose_dynamodb_data_events_by_arn_prefix_read_only_and_name(moto_setup):
    srv, _ = moto_setup
    c = ddb(srv)
    make_table(c, AUDITED)
    ct = srv.client("cloudtrail")
    ct.create_trail(Name="ddb-advanced", S3BucketName=LOGS, S3KeyPrefix="adv")
    ct.put_event_selectors(TrailName="ddb-advanced", AdvancedEventSelectors=[{"Name": "ddb writes", "FieldSelectors": [
        {"Field": "eventCategory", "Equals": ["Data"]},
        {"Field": "resources.type", "Equals": ["AWS::DynamoDB::Table"]},
        {"Field": "resources.ARN", "StartsWith": ["arn:aws:dynamodb"]},
        {"Field": "readOnly", "Equals": ["false"]},
        {"Field": "eventName", "NotEquals": ["DeleteItem"]}]}])
    ct.start_logging(Name="ddb-advanced")
    c.put_item(TableName=AUDITED, Item={"pk": {"S": "adv"}})
    c.get_item(TableName=AUDITED, Key={"pk": {"S": "adv"}})
    c.update_item(TableName=AUDITED, Key={"pk": {"S": "adv"}}, UpdateExpression="SET n = :v",
                  ExpressionAttributeValues={":v": {"N": "1"}})
    c.delete_item(TableName=AUDITED, Key={"pk": {"S": "adv"}})
    c.describe_table(TableName=AUDITED)
    recs = records_under(srv, "adv/AWSLogs/", "ddb-advanced")
    ddb_recs = [r for r in recs if r["eventSource"] == "dynamodb.amazonaws.com"]
    assert sorted(r["eventName"] for r in ddb_recs) == ["PutItem", "UpdateItem"], \
        [(r["eventName"], r.get("eventCategory")) for r in ddb_recs]
    assert all(r["eventCategory"] == "Data" and r["readOnly"] is False for r in ddb_recs)
    ct.stop_logging(Name="ddb-advanced")
    ct.delete_trail(Name="ddb-advanced")
