"""Terraform's AWS provider (5.100, from the machine's filesystem mirror) applies the seed's
`aws_cloudtrail` resource against cairn, and a second plan shows no changes."""
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
