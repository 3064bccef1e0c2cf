"""Terraform's AWS provider (5.100, from the machine's filesystem mirror) applies the seed's
`aws_cloudtrail` resource against cairn, and a second plan shows no changes."""
import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CONFIG = """
[[bucket]]
name = "acme-artifacts-cloudtrail-logs-tf"
[[bucket]]
name = "acme-artifacts"
"""


def mirror():
    for cand in [os.environ.get("CAIRN_TF_MIRROR"), "/opt/tf-plugins", os.path.expanduser("~/.terraform.d/plugins")]:
        if cand and list(Path(cand).glob("registry.terraform.io/hashicorp/aws/5.100.0/*/terraform-provider-aws*")):
            return cand
    return None


def terraform_world(cairn_server_factory, tmp_path_factory, config_dir, cairn_config):
    exe = shutil.which("terraform")
    mir = mirror()
    if not exe or not mir:
        if os.environ.get("CAIRN_REQUIRE_TERRAFORM"):
            pytest.fail(f"terraform ({exe}) or the AWS provider mirror ({mir}) is missing")
        pytest.skip("terraform or the AWS provider mirror is not installed")
    srv = cairn_server_factory(config=cairn_config)
    work = tmp_path_factory.mktemp("tf")
    shutil.copy(HERE / config_dir / "main.tf", work / "main.tf")
    rc = work / "terraformrc"
    rc.write_text(f'''provider_installation {{
  filesystem_mirror {{
    path    = "{mir}"
    include = ["registry.terraform.io/hashicorp/aws"]
  }}
  direct {{
    exclude = ["registry.terraform.io/hashicorp/aws"]
  }}
}}
''')
    env = {**srv.env(), "TF_CLI_CONFIG_FILE": str(rc), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1",
           "TF_VAR_endpoint": srv.endpoint, "HOME": str(work)}

    def run(*args, check=True):
        r = subprocess.run([exe, *args], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        if check and r.returncode != 0:
            raise AssertionError(f"terraform {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
        return r

    run("init", "-input=false", "-no-color")
    return {"run": run, "srv": srv}


@pytest.fixture(scope="module")
def tf(cairn_server_factory, tmp_path_factory):
    return terraform_world(cairn_server_factory, tmp_path_factory, "terraform", CONFIG)


@pytest.fixture(scope="module")
def tf_s3(cairn_server_factory, tmp_path_factory):
    return terraform_world(cairn_server_factory, tmp_path_factory, "terraform_s3", "")


def test_apply_then_plan_shows_no_changes(tf):
    run, srv = tf["run"], tf["srv"]
    run("apply", "-auto-approve", "-input=false", "-no-color")
    out = json.loads(run("output", "-json").stdout)
    arn = "arn:aws:cloudtrail:us-east-1:123456789012:trail/acme-audit-trail"
    assert out["trail_arn"]["value"] == arn
    ct = srv.client("cloudtrail")
    t = ct.get_trail(Name="acme-audit-trail")["Trail"]
    assert t["IsMultiRegionTrail"] and t["IncludeGlobalServiceEvents"] and t["LogFileValidationEnabled"]
    assert t["HasCustomEventSelectors"]
    sel = ct.get_event_selectors(TrailName="acme-audit-trail")["EventSelectors"]
    assert [s["DataResources"][0]["Type"] for s in sel] == ["AWS::S3::Object", "AWS::DynamoDB::Table"]
    assert ct.get_trail_status(Name="acme-audit-trail")["IsLogging"] is True
    assert ct.list_tags(ResourceIdList=[arn])["ResourceTagList"][0]["TagsList"] == [{"Key": "Project", "Value": "acme"}]
    plan = run("plan", "-detailed-exitcode", "-input=false", "-no-color", check=False)
    assert plan.returncode == 0, f"second plan is not empty:\n{plan.stdout}\n{plan.stderr}"
    # And destroy removes it.
    run("destroy", "-auto-approve", "-input=false", "-no-color")
    assert ct.list_trails()["Trails"] == []


def test_log_bucket_and_trail_apply_then_plan_shows_no_changes(tf_s3):
    run, srv = tf_s3["run"], tf_s3["srv"]
    run("apply", "-auto-approve", "-input=false", "-no-color")
    s3 = srv.client("s3")
    logs = "acme-artifacts-cloudtrail-logs-0001"
    assert s3.get_bucket_versioning(Bucket=logs)["Status"] == "Enabled"
    assert all(s3.get_public_access_block(Bucket=logs)["PublicAccessBlockConfiguration"].values())
    rules = s3.get_bucket_lifecycle_configuration(Bucket=logs)["Rules"]
    assert rules[0]["Transitions"][0] == {"Days": 90, "StorageClass": "GLACIER"}
    assert "AWSCloudTrailWrite20150319" in s3.get_bucket_policy(Bucket=logs)["Policy"]
    assert srv.client("cloudtrail").get_trail_status(Name="acme-audit-trail")["IsLogging"] is True
    plan = run("plan", "-detailed-exitcode", "-input=false", "-no-color", check=False)
    assert plan.returncode == 0, f"second plan is not empty:\n{plan.stdout}\n{plan.stderr}"
    # The trail delivers into the bucket Terraform made, through its policy: data events of
    # the artifacts bucket are in the log files, encrypted at rest (SSE-S3) and versioned.
    import gzip
    art = "acme-artifacts"
    s3.put_object(Bucket=art, Key="pkg/tool-1.0.tgz", Body=b"package")
    s3.get_object(Bucket=art, Key="pkg/tool-1.0.tgz")["Body"].read()
    s3.delete_object(Bucket=art, Key="pkg/tool-1.0.tgz")
    srv.flush("acme-audit-trail")
    assert s3.get_bucket_encryption(Bucket=logs)["ServerSideEncryptionConfiguration"]["Rules"][0][
        "ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    names = set()
    for o in s3.list_objects_v2(Bucket=logs, Prefix="AWSLogs/123456789012/CloudTrail/")["Contents"]:
        head = s3.head_object(Bucket=logs, Key=o["Key"])
        assert head["ServerSideEncryption"] == "AES256" and head.get("VersionId")
        for r in json.loads(gzip.decompress(s3.get_object(Bucket=logs, Key=o["Key"])["Body"].read()))["Records"]:
            if (r.get("requestParameters") or {}).get("bucketName") == art and r.get("eventCategory") == "Data":
                names.add(r["eventName"])
    assert {"PutObject", "GetObject", "DeleteObject"} <= names, names
    status = srv.client("cloudtrail").get_trail_status(Name="acme-audit-trail")
    assert "LatestDeliveryError" not in status and status["LatestDeliveryTime"]


@pytest.fixture(scope="module")
def tf_kms(cairn_server_factory, tmp_path_factory):
    return terraform_world(cairn_server_factory, tmp_path_factory, "terraform_kms", "")


def test_kms_key_alias_bucket_encryption_and_encrypted_trail_apply_plan_destroy(tf_kms):
    run, srv = tf_kms["run"], tf_kms["srv"]
    run("apply", "-auto-approve", "-input=false", "-no-color")
    key = json.loads(run("output", "-json").stdout)["key_arn"]["value"]
    kms, ct, s3 = srv.client("kms"), srv.client("cloudtrail"), srv.client("s3")
    meta = kms.describe_key(KeyId="alias/acme-main-key")["KeyMetadata"]
    assert meta["Arn"] == key and meta["Description"] == "acme-main-key"
    assert kms.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"]
    assert ct.get_trail(Name="acme-audit-trail")["Trail"]["KmsKeyId"] == key
    logs = "acme-kms-cloudtrail-logs"
    rule = s3.get_bucket_encryption(Bucket=logs)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
    plan = run("plan", "-detailed-exitcode", "-input=false", "-no-color", check=False)
    assert plan.returncode == 0, f"second plan is not empty:\n{plan.stdout}\n{plan.stderr}"
    # The trail's log files are SSE-KMS under the key (the seed's Verification step 4).
    srv.flush("acme-audit-trail")
    objs = [o["Key"] for o in s3.list_objects_v2(Bucket=logs, Prefix="AWSLogs/123456789012/CloudTrail/")["Contents"]]
    assert objs
    for k in objs:
        h = s3.head_object(Bucket=logs, Key=k)
        assert (h["ServerSideEncryption"], h["SSEKMSKeyId"]) == ("aws:kms", key)
    run("destroy", "-auto-approve", "-input=false", "-no-color")
    assert ct.list_trails()["Trails"] == []
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert kms.list_aliases()["Aliases"] == []


@pytest.fixture(scope="module")
def tf_seed(cairn_server_factory, tmp_path_factory):
    return terraform_world(cairn_server_factory, tmp_path_factory, "terraform_seed", "")


def test_the_seeds_whole_module_applies_plans_empty_verifies_and_destroys(tf_seed, aws_bin):
    """The seed's monitoring module with CloudWatch Logs, then every command of its
    Verification section with the real CLI."""
    import time
    from datetime import datetime, timedelta, timezone
    run, srv = tf_seed["run"], tf_seed["srv"]
    start = (datetime.now(timezone.utc) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    run("apply", "-auto-approve", "-input=false", "-no-color")
    out = json.loads(run("output", "-json").stdout)
    trail_arn = out["cloudtrail_trail_arn"]["value"]
    bucket = out["cloudtrail_logs_bucket"]["value"]
    assert trail_arn == "arn:aws:cloudtrail:us-east-1:123456789012:trail/acme-audit-trail"
    assert bucket == "acme-artifacts-cloudtrail-logs-123456789012"
    assert run("output", "-raw", "cloudtrail_logs_bucket").stdout == bucket
    plan = run("plan", "-detailed-exitcode", "-input=false", "-no-color", check=False)
    assert plan.returncode == 0, f"second plan is not empty:\n{plan.stdout}\n{plan.stderr}"
    ct, logs, s3, kms = (srv.client(s) for s in ("cloudtrail", "logs", "s3", "kms"))
    trail = ct.get_trail(Name="acme-audit-trail")["Trail"]
    key = kms.describe_key(KeyId="alias/acme-main-key")["KeyMetadata"]["Arn"]
    group = "/aws/cloudtrail/acme-audit-trail"
    assert trail["KmsKeyId"] == key and trail["CloudWatchLogsLogGroupArn"].endswith(f"log-group:{group}:*")
    g = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]
    assert (g["retentionInDays"], g["kmsKeyId"]) == (90, key)
    # Activity: a package upload (a data event) and a management call.
    s3.put_object(Bucket="acme-artifacts", Key="packages/pkg-1.0.tgz", Body=b"package")
    srv.client("iam").list_users()
    aws = lambda *a: json.loads(srv.aws(aws_bin, *a).stdout or "{}")
    for _ in range(3):
        time.sleep(1.2)
        srv.flush("acme-audit-trail")
    end = (datetime.now(timezone.utc) + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # 1. Trail status, with CloudWatch Logs delivery.
    deadline = time.time() + 10
    while True:
        st = aws("cloudtrail", "get-trail-status", "--name", "acme-audit-trail")
        if "LatestCloudWatchLogsDeliveryTime" in st or time.time() > deadline:
            break
        time.sleep(0.2)
    for k in ("IsLogging", "LatestCloudWatchLogsDeliveryTime", "LatestDeliveryTime", "StartLoggingTime",
              "LatestDigestDeliveryTime"):
        assert st.get(k), (k, st)
    assert "LatestCloudWatchLogsDeliveryError" not in st
    # 2. The log files in S3.
    listing = srv.aws(aws_bin, "s3", "ls", f"s3://{bucket}/AWSLogs/123456789012/CloudTrail/", "--recursive").stdout
    files = [line.split()[-1] for line in listing.splitlines() if line.endswith(".json.gz")]
    assert files
    # 3. Event lookup by name. The seed's example names PutObject, a data event AWS's event
    # history never holds (the command succeeds with none); a management event is found.
    ev = aws("cloudtrail", "lookup-events", "--lookup-attributes", "AttributeKey=EventName,AttributeValue=PutObject",
             "--max-results", "10")
    assert ev["Events"] == []
    ev = aws("cloudtrail", "lookup-events", "--lookup-attributes", "AttributeKey=EventName,AttributeValue=ListUsers",
             "--max-results", "10")
    assert ev["Events"]
    # 4. SSE-KMS with the key.
    attrs = aws("s3api", "get-object-attributes", "--bucket", bucket, "--key", files[0], "--object-attributes",
                "ObjectSize")
    assert attrs.get("ObjectSize")
    head = aws("s3api", "head-object", "--bucket", bucket, "--key", files[0])
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key)
    # 5. validate-logs (awscli v1 spells the seed's --trail-name as --trail-arn), over the
    # KMS-encrypted log files and their digests.
    import re
    r = srv.aws(aws_bin, "cloudtrail", "validate-logs", "--trail-arn", trail_arn, "--start-time", start,
                "--end-time", end)
    digests = re.search(r"(\d+)/(\d+) digest files valid", r.stdout)
    files_ok = re.search(r"(\d+)/(\d+) log files valid", r.stdout)
    assert digests and digests.group(1) == digests.group(2) and int(digests.group(2)) >= 1, r.stdout
    assert files_ok and files_ok.group(1) == files_ok.group(2) and int(files_ok.group(2)) >= 1, r.stdout
    assert "INVALID" not in r.stdout, r.stdout
    # The log group holds the trail's events (the upload is a data event of the artifacts bucket).
    names = set()
    for e in logs.filter_log_events(logGroupName=group)["events"]:
        names.add(json.loads(e["message"])["eventName"])
    assert {"PutObject", "ListUsers"} <= names, names
    # A bucket with objects is not destroyed (as on AWS): the package goes first.
    s3.delete_object(Bucket="acme-artifacts", Key="packages/pkg-1.0.tgz")
    run("destroy", "-auto-approve", "-input=false", "-no-color")
    assert ct.list_trails()["Trails"] == []
    assert logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"] == []


@pytest.fixture(scope="module")
def tf_ddb(cairn_server_factory, tmp_path_factory, moto_ddb):
    config = f"""
[dynamodb]
upstream = "{moto_ddb}"
access_key_id = "upstream-key"
secret_access_key = "upstream-secret"
"""
    return terraform_world(cairn_server_factory, tmp_path_factory, "terraform_dynamodb", config)


def test_dynamodb_table_applies_through_cairn_plans_clean_and_its_item_calls_are_recorded(tf_ddb):
    run, srv = tf_ddb["run"], tf_ddb["srv"]
    run("apply", "-auto-approve", "-input=false", "-no-color")
    arn = json.loads(run("output", "-json").stdout)["table_arn"]["value"]
    assert arn == "arn:aws:dynamodb:us-east-1:123456789012:table/acme-orders"
    ddb = srv.client("dynamodb")
    t = ddb.describe_table(TableName="acme-orders")["Table"]
    assert [k["AttributeName"] for k in t["KeySchema"]] == ["customer", "order_id"]
    assert t["GlobalSecondaryIndexes"][0]["IndexName"] == "by-status"
    assert ddb.describe_time_to_live(TableName="acme-orders")["TimeToLiveDescription"]["AttributeName"] == "expires_at"
    pitr = ddb.describe_continuous_backups(TableName="acme-orders")["ContinuousBackupsDescription"]
    assert pitr["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    tags = {x["Key"]: x["Value"] for x in ddb.list_tags_of_resource(ResourceArn=arn)["Tags"]}
    assert tags == {"Environment": "production", "Purpose": "orders"}
    plan = run("plan", "-detailed-exitcode", "-input=false", "-no-color", check=False)
    assert plan.returncode == 0, f"second plan is not empty:\n{plan.stdout}\n{plan.stderr}"
    # The trail selects the table by the ARN Terraform read: its item calls are recorded.
    ddb.put_item(TableName="acme-orders", Item={"customer": {"S": "c1"}, "order_id": {"S": "o1"},
                                                "status": {"S": "new"}})
    ddb.get_item(TableName="acme-orders", Key={"customer": {"S": "c1"}, "order_id": {"S": "o1"}})
    ddb.query(TableName="acme-orders", IndexName="by-status", KeyConditionExpression="#s = :s",
              ExpressionAttributeNames={"#s": "status"}, ExpressionAttributeValues={":s": {"S": "new"}})
    srv.flush("acme-ddb-trail")
    s3 = srv.client("s3")
    records = []
    for o in s3.list_objects_v2(Bucket="acme-ddb-cloudtrail-logs", Prefix="AWSLogs/")["Contents"]:
        if "/CloudTrail/" in o["Key"]:
            body = s3.get_object(Bucket="acme-ddb-cloudtrail-logs", Key=o["Key"])["Body"].read()
            records += json.loads(gzip.decompress(body))["Records"]
    data = sorted(r["eventName"] for r in records if r.get("eventCategory") == "Data")
    assert data == ["GetItem", "PutItem", "Query"], data
    run("destroy", "-auto-approve", "-input=false", "-no-color")
    assert "acme-orders" not in ddb.list_tables()["TableNames"]
