"""KMS (issue 11) with boto3 and the real aws CLI: every operation and its errors; key policies
as AWS evaluates them (the seed's statement grants CloudTrail for its own trail only); SSE-KMS
objects; a trail whose log files are SSE-KMS under its key, checked by head-object and the
real `validate-logs`; fail-closed delivery when the key is disabled, across a SIGKILL; and no
plaintext anywhere under the data directory. Each operation also gets its attack: a caller
without the permission, or a request changed after it was signed."""
import base64
import gzip
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from rawreq import send, signed

ACCOUNT = "123456789012"
LOGS = "kms-logs"
TRAIL = "acme-audit-trail"
TRAIL_ARN = f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/{TRAIL}"
CONFIG = f"""
[[bucket]]
name = "{LOGS}"
"""
SENTINEL = b"KMS-SENTINEL-5f1e2d3c4b5a-plaintext"


def seed_policy(trail_arn=TRAIL_ARN):
    """The seed's key policy: the account, and CloudTrail for one trail (its statement
    verbatim, with the upper-case AWS:SourceArn)."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "Enable IAM User Permissions", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
         "Action": "kms:*", "Resource": "*"},
        {"Sid": "Allow CloudTrail to encrypt logs", "Effect": "Allow", "Principal": {"Service": "cloudtrail.amazonaws.com"},
         "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
         "Condition": {"StringEquals": {"AWS:SourceArn": trail_arn}}}]})


@pytest.fixture(scope="module")
def srv(cairn_server_factory):
    return cairn_server_factory(config=CONFIG, delivery="1s", digest="3s")


def code(e):
    return e.value.response["Error"]["Code"]


def status(e):
    return e.value.response["ResponseMetadata"]["HTTPStatusCode"]


def user(srv, name, statements, service="kms"):
    iam = srv.client("iam")
    iam.create_user(UserName=name)
    if statements:
        iam.put_user_policy(UserName=name, PolicyName="p",
                            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))
    k = iam.create_access_key(UserName=name)["AccessKey"]
    return srv.client(service, key=k["AccessKeyId"], secret=k["SecretAccessKey"]), k


def records(srv, trail=TRAIL, bucket=LOGS):
    srv.flush(trail)
    s3 = srv.client("s3")
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"AWSLogs/{ACCOUNT}/CloudTrail/"):
        for o in page.get("Contents", []):
            out.extend(json.loads(gzip.decompress(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()))["Records"])
    return out


def test_every_key_operation_with_boto3(srv):
    kms = srv.client("kms")
    meta = kms.create_key(Description="main", Tags=[{"TagKey": "team", "TagValue": "audit"}])["KeyMetadata"]
    kid, arn = meta["KeyId"], meta["Arn"]
    assert arn == f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{kid}"
    assert (meta["KeyState"], meta["Enabled"], meta["KeySpec"], meta["KeyUsage"], meta["KeyManager"]) == \
        ("Enabled", True, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "CUSTOMER")
    assert kms.describe_key(KeyId=arn)["KeyMetadata"]["Description"] == "main"
    assert kid in [k["KeyId"] for k in kms.list_keys()["Keys"]]
    # Aliases work wherever a key id does.
    kms.create_alias(AliasName="alias/main", TargetKeyId=kid)
    with pytest.raises(ClientError) as e:
        kms.create_alias(AliasName="alias/main", TargetKeyId=kid)
    assert code(e) == "AlreadyExistsException"
    assert kms.describe_key(KeyId="alias/main")["KeyMetadata"]["KeyId"] == kid
    assert kms.describe_key(KeyId=f"arn:aws:kms:us-east-1:{ACCOUNT}:alias/main")["KeyMetadata"]["KeyId"] == kid
    al = [a for a in kms.list_aliases(KeyId=kid)["Aliases"]]
    assert [a["AliasName"] for a in al] == ["alias/main"] and al[0]["TargetKeyId"] == kid
    # Encrypt/Decrypt with a context; data keys; re-encryption; random bytes.
    ctx = {"purpose": "test"}
    ct = kms.encrypt(KeyId="alias/main", Plaintext=b"hello", EncryptionContext=ctx)
    assert ct["KeyId"] == arn
    d = kms.decrypt(CiphertextBlob=ct["CiphertextBlob"], EncryptionContext=ctx)
    assert (d["Plaintext"], d["KeyId"]) == (b"hello", arn)
    dk = kms.generate_data_key(KeyId=kid, KeySpec="AES_256", EncryptionContext=ctx)
    assert len(dk["Plaintext"]) == 32
    assert kms.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"] == dk["Plaintext"]
    assert len(kms.generate_data_key(KeyId=kid, NumberOfBytes=64)["Plaintext"]) == 64
    nopt = kms.generate_data_key_without_plaintext(KeyId=kid, KeySpec="AES_128")
    assert "Plaintext" not in nopt and len(kms.decrypt(CiphertextBlob=nopt["CiphertextBlob"])["Plaintext"]) == 16
    other = kms.create_key()["KeyMetadata"]["Arn"]
    re = kms.re_encrypt(CiphertextBlob=ct["CiphertextBlob"], SourceEncryptionContext=ctx, DestinationKeyId=other)
    assert (re["SourceKeyId"], re["KeyId"]) == (arn, other)
    assert kms.decrypt(CiphertextBlob=re["CiphertextBlob"])["Plaintext"] == b"hello"
    assert len(kms.generate_random(NumberOfBytes=33)["Plaintext"]) == 33
    kms.update_alias(AliasName="alias/main", TargetKeyId=other)
    assert kms.describe_key(KeyId="alias/main")["KeyMetadata"]["Arn"] == other
    kms.delete_alias(AliasName="alias/main")
    with pytest.raises(ClientError) as e:
        kms.describe_key(KeyId="alias/main")
    assert code(e) == "NotFoundException"
    # Rotation: old material keeps decrypting.
    kms.enable_key_rotation(KeyId=kid, RotationPeriodInDays=90)
    st = kms.get_key_rotation_status(KeyId=kid)
    assert st["KeyRotationEnabled"] and st["RotationPeriodInDays"] == 90
    kms.rotate_key_on_demand(KeyId=kid)
    assert kms.decrypt(CiphertextBlob=ct["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"] == b"hello"
    assert [r["RotationType"] for r in kms.list_key_rotations(KeyId=kid)["Rotations"]] == ["ON_DEMAND"]
    kms.disable_key_rotation(KeyId=kid)
    assert not kms.get_key_rotation_status(KeyId=kid)["KeyRotationEnabled"]
    # Policies.
    assert kms.list_key_policies(KeyId=kid)["PolicyNames"] == ["default"]
    pol = json.loads(kms.get_key_policy(KeyId=kid, PolicyName="default")["Policy"])
    assert pol["Statement"][0]["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    kms.put_key_policy(KeyId=kid, PolicyName="default", Policy=seed_policy())
    assert "cloudtrail.amazonaws.com" in kms.get_key_policy(KeyId=kid, PolicyName="default")["Policy"]
    # Tags.
    kms.tag_resource(KeyId=kid, Tags=[{"TagKey": "env", "TagValue": "ci"}])
    kms.untag_resource(KeyId=kid, TagKeys=["team"])
    assert kms.list_resource_tags(KeyId=kid)["Tags"] == [{"TagKey": "env", "TagValue": "ci"}]
    kms.update_key_description(KeyId=kid, Description="renamed")
    assert kms.describe_key(KeyId=kid)["KeyMetadata"]["Description"] == "renamed"
    # Disable/enable; scheduled deletion refuses use; cancelling leaves the key disabled.
    kms.disable_key(KeyId=kid)
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=kid, Plaintext=b"x")
    assert (code(e), status(e)) == ("DisabledException", 400)
    kms.enable_key(KeyId=kid)
    for bad in (6, 31):
        with pytest.raises(ClientError) as e:
            kms.schedule_key_deletion(KeyId=kid, PendingWindowInDays=bad)
        assert code(e) == "ValidationException"
    s = kms.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
    assert (s["KeyState"], s["PendingWindowInDays"]) == ("PendingDeletion", 7)
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=ct["CiphertextBlob"], EncryptionContext=ctx)
    assert code(e) == "KMSInvalidStateException"
    kms.cancel_key_deletion(KeyId=kid)
    assert kms.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "Disabled"
    kms.enable_key(KeyId=kid)


def test_ciphertext_errors_and_bad_input(srv):
    kms = srv.client("kms")
    a = kms.create_key()["KeyMetadata"]["KeyId"]
    b = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=a, Plaintext=b"data", EncryptionContext={"k": "v"})["CiphertextBlob"]
    for kw in ({"EncryptionContext": {"k": "w"}}, {}, {"EncryptionContext": {"k": "v", "extra": "1"}}):
        with pytest.raises(ClientError) as e:
            kms.decrypt(CiphertextBlob=blob, **kw)
        assert (code(e), status(e)) == ("InvalidCiphertextException", 400)
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"k": "v"}, KeyId=b)
    assert code(e) == "IncorrectKeyException"
    for i in (len(blob) // 2, len(blob) - 1):
        t = bytearray(blob)
        t[i] ^= 1
        with pytest.raises(ClientError) as e:
            kms.decrypt(CiphertextBlob=bytes(t), EncryptionContext={"k": "v"})
        assert code(e) == "InvalidCiphertextException"
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=b"not a kms blob at all")
    assert code(e) == "InvalidCiphertextException"
    with pytest.raises(ClientError) as e:
        kms.describe_key(KeyId="00000000-0000-0000-0000-000000000000")
    assert (code(e), status(e)) == ("NotFoundException", 400)
    with pytest.raises(ClientError) as e:
        kms.describe_key(KeyId=f"arn:aws:kms:us-west-2:{ACCOUNT}:key/{a}")
    assert code(e) == "NotFoundException"
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=a, Plaintext=b"x" * 4097)
    assert code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.generate_data_key(KeyId=a)
    assert code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.create_key(Policy="{not json")
    assert code(e) == "MalformedPolicyDocumentException"
    # A policy that would lock the caller out is refused unless the check is bypassed.
    lockout = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {
        "AWS": f"arn:aws:iam::{ACCOUNT}:user/nobody"}, "Action": "kms:*", "Resource": "*"}]})
    with pytest.raises(ClientError) as e:
        kms.put_key_policy(KeyId=a, PolicyName="default", Policy=lockout)
    assert code(e) == "MalformedPolicyDocumentException"
    with pytest.raises(ClientError) as e:
        kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="RSA_2048")
    assert code(e) == "UnsupportedOperationException"
    with pytest.raises(ClientError) as e:
        kms.create_alias(AliasName="alias/aws/s3", TargetKeyId=a)
    assert code(e) == "NotAuthorizedException"
    nothing = kms.list_keys()
    assert all(set(k) == {"KeyId", "KeyArn"} for k in nothing["Keys"])


def test_key_policies_iam_policies_and_grants_decide_who_may_use_a_key(srv):
    kms = srv.client("kms")
    default_key = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=default_key, Plaintext=b"s")["CiphertextBlob"]
    # Without an IAM policy, the default key policy (the account) grants a user nothing.
    nobody, _ = user(srv, "kms-nobody", [])
    with pytest.raises(ClientError) as e:
        nobody.decrypt(CiphertextBlob=blob)
    assert (code(e), status(e)) == ("AccessDeniedException", 400)
    with pytest.raises(ClientError) as e:
        nobody.create_key()
    assert code(e) == "AccessDeniedException"
    denied = srv.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": "kms-nobody"}])["Events"]
    got = {(e["EventName"], json.loads(e["CloudTrailEvent"]).get("errorCode")) for e in denied}
    assert {("Decrypt", "AccessDeniedException"), ("CreateKey", "AccessDeniedException")} <= got, got
    # With one, the account statement delegates to it.
    reader, _ = user(srv, "kms-reader", [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}])
    assert reader.decrypt(CiphertextBlob=blob)["Plaintext"] == b"s"
    with pytest.raises(ClientError) as e:
        reader.encrypt(KeyId=default_key, Plaintext=b"s")
    assert code(e) == "AccessDeniedException"
    # A key whose policy does not name the account: IAM policies alone do nothing, even the
    # root's implicit rights end (only its listed principal may use it).
    everything, _ = user(srv, "kms-admin", [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}])
    only = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {
        "AWS": f"arn:aws:iam::{ACCOUNT}:user/kms-admin"}, "Action": "kms:*", "Resource": "*"}]})
    private = everything.create_key(Policy=only)["KeyMetadata"]["KeyId"]
    pblob = everything.encrypt(KeyId=private, Plaintext=b"p")["CiphertextBlob"]
    for c in (reader, kms):
        with pytest.raises(ClientError) as e:
            c.decrypt(CiphertextBlob=pblob)
        assert code(e) == "AccessDeniedException"
    # A grant lets one principal decrypt within its context constraint.
    g = everything.create_grant(KeyId=private, GranteePrincipal=f"arn:aws:iam::{ACCOUNT}:user/kms-nobody",
                                Operations=["Decrypt"], Constraints={"EncryptionContextSubset": {"app": "x"}})
    cblob = everything.encrypt(KeyId=private, Plaintext=b"g", EncryptionContext={"app": "x"})["CiphertextBlob"]
    assert nobody.decrypt(CiphertextBlob=cblob, EncryptionContext={"app": "x"})["Plaintext"] == b"g"
    with pytest.raises(ClientError) as e:
        nobody.decrypt(CiphertextBlob=pblob)
    assert code(e) == "AccessDeniedException"
    assert [x["GrantId"] for x in everything.list_grants(KeyId=private)["Grants"]] == [g["GrantId"]]
    # Only its retiring principal, grantee-with-RetireGrant or the account may retire a grant.
    with pytest.raises(ClientError) as e:
        nobody.retire_grant(KeyId=private, GrantId=g["GrantId"])
    assert code(e) == "AccessDeniedException"
    everything.revoke_grant(KeyId=private, GrantId=g["GrantId"])
    with pytest.raises(ClientError) as e:
        nobody.decrypt(CiphertextBlob=cblob, EncryptionContext={"app": "x"})
    assert code(e) == "AccessDeniedException"
    g2 = everything.create_grant(KeyId=private, GranteePrincipal=f"arn:aws:iam::{ACCOUNT}:user/kms-nobody",
                                 Operations=["Decrypt", "RetireGrant"])
    nobody.retire_grant(GrantToken=g2["GrantToken"])
    assert everything.list_grants(KeyId=private)["Grants"] == []
    # An explicit deny in the caller's policy wins over the key policy.
    srv.client("iam").put_user_policy(UserName="kms-admin", PolicyName="deny", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*"}]}))
    with pytest.raises(ClientError) as e:
        everything.decrypt(CiphertextBlob=pblob)
    assert code(e) == "AccessDeniedException"
    # Condition keys: kms:EncryptionContext:* in a key policy.
    cond = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*",
         "Condition": {"StringNotEquals": {"kms:EncryptionContext:tenant": "blue"}}}]})
    ck = kms.create_key(Policy=cond)["KeyMetadata"]["KeyId"]
    blue = kms.encrypt(KeyId=ck, Plaintext=b"b", EncryptionContext={"tenant": "blue"})["CiphertextBlob"]
    red = kms.encrypt(KeyId=ck, Plaintext=b"r", EncryptionContext={"tenant": "red"})["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blue, EncryptionContext={"tenant": "blue"})["Plaintext"] == b"b"
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=red, EncryptionContext={"tenant": "red"})
    assert code(e) == "AccessDeniedException"


def test_review_a_grant_passes_on_no_more_than_it_gives(srv):
    """An attacker's review found: a grantee holding CreateGrant could grant itself Decrypt."""
    kms = srv.client("kms")
    only = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {
        "AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*", "Resource": "*"}]})
    k = kms.create_key(Policy=only)["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=k, Plaintext=b"secret")["CiphertextBlob"]
    bob, _ = user(srv, "grant-bob", [])
    bob_arn = f"arn:aws:iam::{ACCOUNT}:user/grant-bob"
    kms.create_grant(KeyId=k, GranteePrincipal=bob_arn, Operations=["Encrypt", "CreateGrant"])
    with pytest.raises(ClientError) as e:
        bob.create_grant(KeyId=k, GranteePrincipal=bob_arn, Operations=["Decrypt"])
    assert code(e) == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        bob.decrypt(CiphertextBlob=blob)
    assert code(e) == "AccessDeniedException"
    # Passing on a subset is allowed.
    bob.create_grant(KeyId=k, GranteePrincipal=f"arn:aws:iam::{ACCOUNT}:user/kms-reader-x", Operations=["Encrypt"])
    # A key policy may limit what grants say (kms:GrantOperations).
    limited = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Principal": "*", "Action": "kms:CreateGrant", "Resource": "*",
         "Condition": {"ForAnyValue:StringEquals": {"kms:GrantOperations": ["Decrypt"]}}}]})
    k2 = kms.create_key(Policy=limited)["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as e:
        kms.create_grant(KeyId=k2, GranteePrincipal=bob_arn, Operations=["Decrypt"])
    assert code(e) == "AccessDeniedException"
    kms.create_grant(KeyId=k2, GranteePrincipal=bob_arn, Operations=["Encrypt"])


def test_review_upload_part_copy_reads_an_sse_kms_source_through_kms(srv):
    """An attacker's review found: UploadPartCopy read an SSE-KMS source without kms:Decrypt."""
    kms, s3 = srv.client("kms"), srv.client("s3")
    key = kms.create_key()["KeyMetadata"]["Arn"]
    s3.create_bucket(Bucket="upc-victim")
    s3.put_object(Bucket="upc-victim", Key="secret", Body=SENTINEL, ServerSideEncryption="aws:kms", SSEKMSKeyId=key)
    thief, _ = user(srv, "upc-thief", [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}], service="s3")
    thief.create_bucket(Bucket="upc-loot")
    up = thief.create_multipart_upload(Bucket="upc-loot", Key="x")
    for kw in ({}, {"CopySourceRange": "bytes=0-9"}):
        with pytest.raises(ClientError) as e:
            thief.upload_part_copy(Bucket="upc-loot", Key="x", UploadId=up["UploadId"], PartNumber=1,
                                   CopySource={"Bucket": "upc-victim", "Key": "secret"}, **kw)
        assert code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        thief.copy_object(Bucket="upc-loot", Key="y", CopySource={"Bucket": "upc-victim", "Key": "secret"})
    assert code(e) == "AccessDenied"


def test_a_request_changed_after_signing_is_refused_and_changes_nothing(srv):
    kms = srv.client("kms")
    before = len(kms.list_keys()["Keys"])
    body = json.dumps({"Description": "signed"}).encode()
    h = signed(srv, "kms", "POST", "/", body, headers={"X-Amz-Target": "TrentService.CreateKey",
                                                          "Content-Type": "application/x-amz-json-1.1"})
    tampered = json.dumps({"Description": "signed", "Policy": seed_policy()}).encode()
    st, _, out = send(srv, "POST", "/", h, tampered)
    assert st == 400 and json.loads(out)["__type"].endswith("InvalidSignatureException"), out
    # The target changed after signing, the body kept: refused too.
    h2 = dict(h)
    h2["X-Amz-Target"] = "TrentService.ScheduleKeyDeletion"
    st, _, out = send(srv, "POST", "/", h2, body)
    assert st == 400 and b"Signature" in out
    assert len(kms.list_keys()["Keys"]) == before
    # A body over the JSON APIs' limit (2 MiB) is refused from its headers.
    big = b"{" + b" " * (3 * 1024 * 1024) + b"}"
    hb = signed(srv, "kms", "POST", "/", big, headers={"X-Amz-Target": "TrentService.CreateKey",
                                                        "Content-Type": "application/x-amz-json-1.1"})
    import socket
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
    assert len(kms.list_keys()["Keys"]) == before
    # Each refusal is recorded (LookupEvents reads the same journal the trail delivers).
    ct = srv.client("cloudtrail")
    created = ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "CreateKey"}],
                               MaxResults=50)["Events"]
    codes = [json.loads(e["CloudTrailEvent"]).get("errorCode") for e in created]
    assert "InvalidSignatureException" in codes, codes
    assert "RequestEntityTooLargeException" in codes, codes
    # Unsigned: refused.
    st, _, out = send(srv, "POST", "/", {"Host": f"127.0.0.1:{srv.port}", "X-Amz-Target": "TrentService.ListKeys",
                                          "Content-Type": "application/x-amz-json-1.1"}, b"{}")
    assert st in (400, 403), out


def test_sse_kms_objects(srv):
    kms, s3 = srv.client("kms"), srv.client("s3")
    key = kms.create_key()["KeyMetadata"]["Arn"]
    s3.create_bucket(Bucket="kms-data")
    put = s3.put_object(Bucket="kms-data", Key="secret", Body=SENTINEL, ServerSideEncryption="aws:kms", SSEKMSKeyId=key)
    assert (put["ServerSideEncryption"], put["SSEKMSKeyId"]) == ("aws:kms", key)
    head = s3.head_object(Bucket="kms-data", Key="secret")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"], head["ContentLength"]) == ("aws:kms", key, len(SENTINEL))
    assert s3.get_object(Bucket="kms-data", Key="secret")["Body"].read() == SENTINEL
    assert s3.get_object(Bucket="kms-data", Key="secret", Range="bytes=4-9")["Body"].read() == SENTINEL[4:10]
    # A reader with s3:GetObject but without kms:Decrypt is refused; HEAD needs no KMS.
    s3only, _ = user(srv, "s3-only", [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}], service="s3")
    assert s3only.head_object(Bucket="kms-data", Key="secret")["ServerSideEncryption"] == "aws:kms"
    with pytest.raises(ClientError) as e:
        s3only.get_object(Bucket="kms-data", Key="secret")
    assert (code(e), status(e)) == ("AccessDenied", 403)
    # ...and cannot write under the key without kms:GenerateDataKey.
    with pytest.raises(ClientError) as e:
        s3only.put_object(Bucket="kms-data", Key="w", Body=b"x", ServerSideEncryption="aws:kms", SSEKMSKeyId=key)
    assert code(e) == "AccessDenied"
    with pytest.raises(ClientError):
        s3.head_object(Bucket="kms-data", Key="w")
    with_kms, _ = user(srv, "s3-kms", [{"Effect": "Allow", "Action": ["s3:*", "kms:Decrypt"], "Resource": "*"}], service="s3")
    assert with_kms.get_object(Bucket="kms-data", Key="secret")["Body"].read() == SENTINEL
    # Completing an SSE-KMS multipart upload needs kms:Decrypt too (S3 reads the data key).
    writer, _ = user(srv, "s3-kms-writer", [{"Effect": "Allow", "Action": ["s3:*", "kms:GenerateDataKey"], "Resource": "*"}],
                     service="s3")
    mp = writer.create_multipart_upload(Bucket="kms-data", Key="mpw", ServerSideEncryption="aws:kms", SSEKMSKeyId=key)
    et = writer.upload_part(Bucket="kms-data", Key="mpw", UploadId=mp["UploadId"], PartNumber=1, Body=b"p")["ETag"]
    with pytest.raises(ClientError) as e:
        writer.complete_multipart_upload(Bucket="kms-data", Key="mpw", UploadId=mp["UploadId"],
                                         MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": et}]})
    assert code(e) == "AccessDenied"
    # Bucket default encryption with a KMS key; copies and multipart uploads.
    s3.create_bucket(Bucket="kms-default")
    s3.put_bucket_encryption(Bucket="kms-default", ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}, "BucketKeyEnabled": True}]})
    s3.put_object(Bucket="kms-default", Key="d", Body=SENTINEL)
    h = s3.head_object(Bucket="kms-default", Key="d")
    assert (h["ServerSideEncryption"], h["SSEKMSKeyId"], h.get("BucketKeyEnabled")) == ("aws:kms", key, True)
    s3.copy_object(Bucket="kms-data", Key="copy", CopySource={"Bucket": "kms-default", "Key": "d"})
    assert s3.head_object(Bucket="kms-data", Key="copy")["ServerSideEncryption"] == "AES256"
    s3.copy_object(Bucket="kms-data", Key="copy2", CopySource={"Bucket": "kms-data", "Key": "copy"},
                   ServerSideEncryption="aws:kms", SSEKMSKeyId=key)
    assert s3.head_object(Bucket="kms-data", Key="copy2")["SSEKMSKeyId"] == key
    up = s3.create_multipart_upload(Bucket="kms-data", Key="mp", ServerSideEncryption="aws:kms", SSEKMSKeyId=key)
    assert up["ServerSideEncryption"] == "aws:kms"
    part = SENTINEL * (5 * 1024 * 1024 // len(SENTINEL) + 1)
    e1 = s3.upload_part(Bucket="kms-data", Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=part)["ETag"]
    e2 = s3.upload_part(Bucket="kms-data", Key="mp", UploadId=up["UploadId"], PartNumber=2, Body=b"tail")["ETag"]
    s3.complete_multipart_upload(Bucket="kms-data", Key="mp", UploadId=up["UploadId"], MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    assert s3.head_object(Bucket="kms-data", Key="mp")["SSEKMSKeyId"] == key
    assert s3.get_object(Bucket="kms-data", Key="mp")["Body"].read() == part + b"tail"
    # Bad SSE headers.
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="kms-data", Key="bad", Body=b"x", ServerSideEncryption="aws:kms",
                      SSEKMSKeyId="arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000")
    assert code(e) == "KMS.NotFoundException"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="kms-data", Key="bad", Body=b"x", ServerSideEncryption="AES256", SSEKMSKeyId=key)
    assert code(e) == "InvalidArgument"
    # A disabled key makes reads fail as S3 passes KMS's error on, and writes too.
    kms.disable_key(KeyId=key)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="kms-data", Key="secret")
    assert (code(e), status(e)) == ("KMS.DisabledException", 400)
    # ...but only to callers allowed to use the key: the others learn nothing of its state.
    with pytest.raises(ClientError) as e:
        s3only.get_object(Bucket="kms-data", Key="secret")
    assert (code(e), status(e)) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="kms-default", Key="d2", Body=b"x")
    assert code(e) == "KMS.DisabledException"
    kms.enable_key(KeyId=key)
    assert s3.get_object(Bucket="kms-data", Key="secret")["Body"].read() == SENTINEL


def test_bucket_keys_reuse_one_data_key_and_every_read_is_still_authorized(srv, cairn_server_factory):
    box = cairn_server_factory(config=f'[[bucket]]\nname = "{LOGS}"\n', delivery="1s", digest="3s")
    kms, s3, ct = box.client("kms"), box.client("s3"), box.client("cloudtrail")
    ct.create_trail(Name="bk-trail", S3BucketName=LOGS)
    ct.start_logging(Name="bk-trail")
    key = kms.create_key()["KeyMetadata"]["Arn"]
    s3.create_bucket(Bucket="bk-data")
    for i in range(3):
        r = s3.put_object(Bucket="bk-data", Key=f"o{i}", Body=SENTINEL, ServerSideEncryption="aws:kms", SSEKMSKeyId=key,
                          BucketKeyEnabled=True)
        assert r["BucketKeyEnabled"] is True
    for i in range(3):
        assert s3.get_object(Bucket="bk-data", Key=f"o{i}")["Body"].read() == SENTINEL
    s3only, _ = user(box, "bk-reader", [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}], service="s3")
    with pytest.raises(ClientError) as e:
        s3only.get_object(Bucket="bk-data", Key="o1")
    assert code(e) == "AccessDenied"
    recs = records(box, trail="bk-trail")
    calls = [r for r in recs if r["eventSource"] == "kms.amazonaws.com" and r["userIdentity"].get("invokedBy") == "s3.amazonaws.com"]
    gdk = [r for r in calls if r["eventName"] == "GenerateDataKey"]
    dec = [r for r in calls if r["eventName"] == "Decrypt" and "errorCode" not in r]
    assert len(gdk) == 1 and gdk[0]["requestParameters"]["encryptionContext"] == {"aws:s3:arn": "arn:aws:s3:::bk-data"}, gdk
    assert len(dec) == 1, dec
    assert any(r["eventName"] == "Decrypt" and r.get("errorCode") for r in calls), "the refused read's Decrypt is recorded"
    box.stop()


def test_aws_managed_key_for_s3_is_made_on_first_use_and_used_only_through_s3(srv, aws_bin):
    kms, s3 = srv.client("kms"), srv.client("s3")
    s3.create_bucket(Bucket="managed")
    r = s3.put_object(Bucket="managed", Key="m", Body=SENTINEL, ServerSideEncryption="aws:kms")
    meta = kms.describe_key(KeyId="alias/aws/s3")["KeyMetadata"]
    assert r["SSEKMSKeyId"] == meta["Arn"] and meta["KeyManager"] == "AWS"
    assert s3.get_object(Bucket="managed", Key="m")["Body"].read() == SENTINEL
    # The real CLI, no key named.
    body = srv.workdir / "cli-body"
    body.write_bytes(b"cli")
    srv.aws(aws_bin, "s3api", "put-object", "--bucket", "managed", "--key", "cli", "--body", str(body),
            "--server-side-encryption", "aws:kms")
    assert s3.head_object(Bucket="managed", Key="cli")["SSEKMSKeyId"] == meta["Arn"]
    # Any principal of the account that may use S3 may use it through S3, with no KMS policy...
    s3user, _ = user(srv, "managed-user", [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}], service="s3")
    s3user.put_object(Bucket="managed", Key="u", Body=b"u", ServerSideEncryption="aws:kms")
    assert s3user.get_object(Bucket="managed", Key="m")["Body"].read() == SENTINEL
    # ...but nobody may use or change it directly, not even the root.
    for call in (lambda: kms.encrypt(KeyId="alias/aws/s3", Plaintext=b"x"),
                 lambda: kms.disable_key(KeyId=meta["KeyId"]),
                 lambda: kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7),
                 lambda: kms.put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=seed_policy())):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "AccessDeniedException"
    # A bucket default of aws:kms without a key uses it too.
    s3.create_bucket(Bucket="managed-default")
    s3.put_bucket_encryption(Bucket="managed-default", ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]})
    s3.put_object(Bucket="managed-default", Key="d", Body=b"d")
    assert s3.head_object(Bucket="managed-default", Key="d")["SSEKMSKeyId"] == meta["Arn"]
    assert [k for k in kms.list_keys()["Keys"] if k["KeyId"] == meta["KeyId"]], "one managed key"


def test_trail_with_the_seeds_key_delivers_sse_kms_logs_that_validate(srv, aws_bin):
    kms, ct, s3 = srv.client("kms"), srv.client("cloudtrail"), srv.client("s3")
    key = kms.create_key(Policy=seed_policy(), Description="acme-main-key")["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName="alias/acme-main-key", TargetKeyId=key)
    # The seed's statement is for acme-audit-trail only: another trail may not use the key.
    with pytest.raises(ClientError) as e:
        ct.create_trail(Name="other-trail", S3BucketName=LOGS, KmsKeyId=key)
    assert code(e) == "InsufficientEncryptionPolicyException"
    with pytest.raises(ClientError) as e:
        ct.create_trail(Name=TRAIL, S3BucketName=LOGS, KmsKeyId="alias/nope")
    assert code(e) == "KmsKeyNotFoundException"
    t = ct.create_trail(Name=TRAIL, S3BucketName=LOGS, KmsKeyId="alias/acme-main-key", EnableLogFileValidation=True,
                        IsMultiRegionTrail=True, IncludeGlobalServiceEvents=True)
    assert t["KmsKeyId"] == key
    ct.start_logging(Name=TRAIL)
    s3.create_bucket(Bucket="kms-activity")
    s3.put_object(Bucket="kms-activity", Key="k", Body=b"x")
    recs = records(srv)
    assert any(r["eventName"] == "CreateBucket" for r in recs)
    time.sleep(1.2)  # a digest covers at least a second after its chain's first delivery
    assert srv.flush(TRAIL)["DigestFiles"] >= 1
    # Each delivery's own GenerateDataKey is delivered by the next one.
    recs = records(srv)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=LOGS)["Contents"]]
    logs = [k for k in keys if "/CloudTrail/" in k]
    digests = [k for k in keys if "/CloudTrail-Digest/" in k]
    assert logs and digests
    for k in logs:
        h = s3.head_object(Bucket=LOGS, Key=k)
        assert (h["ServerSideEncryption"], h["SSEKMSKeyId"]) == ("aws:kms", key)
    for k in digests:
        assert s3.head_object(Bucket=LOGS, Key=k)["ServerSideEncryption"] == "AES256"
    # The seed's Verification step 4, as the real CLI runs it and as it works.
    r = srv.aws(aws_bin, "s3api", "head-object", "--bucket", LOGS, "--key", logs[0])
    out = json.loads(r.stdout)
    assert (out["ServerSideEncryption"], out["SSEKMSKeyId"]) == ("aws:kms", key)
    lit = srv.aws(aws_bin, "s3api", "get-object-attributes", "--bucket", LOGS, "--key", logs[0],
                  "--object-attributes", "ServerSideEncryption", check=False)
    assert lit.returncode != 0 and "InvalidArgument" in lit.stderr
    # CloudTrail's own data key calls are in the trail.
    gdk = [r for r in recs if r["eventSource"] == "kms.amazonaws.com" and r["eventName"] == "GenerateDataKey"
           and r["userIdentity"]["type"] == "AWSService"]
    assert gdk, "CloudTrail's GenerateDataKey calls are recorded"
    g = gdk[0]
    assert g["userIdentity"]["invokedBy"] == "cloudtrail.amazonaws.com"
    assert g["requestParameters"]["encryptionContext"]["aws:cloudtrail:arn"] == TRAIL_ARN
    assert g["requestParameters"]["encryptionContext"]["aws:s3:arn"].startswith(f"arn:aws:s3:::{LOGS}/AWSLogs/")
    assert g["resources"][0]["ARN"] == key
    # S3's KMS calls for a caller are recorded, invoked by S3; no plaintext or data key logged.
    kms_s3 = [r for r in recs if r["eventSource"] == "kms.amazonaws.com" and r["userIdentity"].get("invokedBy") == "s3.amazonaws.com"]
    for r in recs:
        if r["eventSource"] == "kms.amazonaws.com":
            assert "plaintext" not in json.dumps(r.get("requestParameters")).lower()
            assert r.get("responseElements") is None or "plaintext" not in json.dumps(r["responseElements"]).lower()
    del kms_s3
    # The real validator decrypts through S3 and passes.
    env = srv.env()
    r = subprocess.run([aws_bin, "cloudtrail", "validate-logs", "--trail-arn", TRAIL_ARN, "--start-time",
                        "2020-01-01T00:00:00Z"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "digest files valid" in r.stdout and "INVALID" not in r.stdout, r.stdout + r.stderr


def test_delivery_fails_closed_while_the_key_is_unusable_and_resumes_after_a_crash(srv, cairn_server_factory):
    """C14: key disabled mid-stream. Delivery stops with LatestDeliveryError, every
    acknowledged event stays durable (through a SIGKILL), nothing is written in plaintext or
    under another key, and delivery resumes by itself once the key is enabled."""
    box = cairn_server_factory(config=f'[[bucket]]\nname = "{LOGS}"\n', delivery="1s", digest="3s")
    kms, ct, s3 = box.client("kms"), box.client("cloudtrail"), box.client("s3")
    key = kms.create_key(Policy=seed_policy())["KeyMetadata"]["Arn"]
    ct.create_trail(Name=TRAIL, S3BucketName=LOGS, KmsKeyId=key, EnableLogFileValidation=True)
    ct.put_event_selectors(TrailName=TRAIL, EventSelectors=[{"ReadWriteType": "All", "IncludeManagementEvents": True,
                                                             "DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3:::ledger/"]}]}])
    ct.start_logging(Name=TRAIL)
    # A second trail without a key: the first one's unusable key must not hold it back.
    ct.create_trail(Name="plain-trail", S3BucketName=LOGS, S3KeyPrefix="plain", EnableLogFileValidation=True)
    ct.start_logging(Name="plain-trail")
    box.flush(TRAIL)
    kms.disable_key(KeyId=key)
    s3.create_bucket(Bucket="ledger")
    acked = []
    for i in range(40):
        s3.put_object(Bucket="ledger", Key=f"obj-{i}", Body=b"x")
        acked.append(f"obj-{i}")
    time.sleep(2.5)
    st = ct.get_trail_status(Name=TRAIL)
    assert "DisabledException" in st["LatestDeliveryError"], st
    before = {o["Key"] for o in s3.list_objects_v2(Bucket=LOGS).get("Contents", [])}
    time.sleep(1.2)
    flushed = box.flush("plain-trail")
    assert flushed["LogFiles"] >= 1 and flushed["DigestFiles"] >= 1, flushed
    plain = box.client("cloudtrail").get_trail_status(Name="plain-trail")
    assert "LatestDeliveryError" not in plain, plain
    plain_recs = []
    for o in s3.list_objects_v2(Bucket=LOGS, Prefix=f"plain/AWSLogs/{ACCOUNT}/CloudTrail/")["Contents"]:
        plain_recs += json.loads(gzip.decompress(s3.get_object(Bucket=LOGS, Key=o["Key"])["Body"].read()))["Records"]
    assert any(r["eventName"] == "DisableKey" for r in plain_recs)
    before = {o["Key"] for o in s3.list_objects_v2(Bucket=LOGS).get("Contents", []) if not o["Key"].startswith("plain/")}
    # Crash while the events wait.
    box.proc.send_signal(signal.SIGKILL)
    box.proc.wait()
    box.log.close()
    box.start()
    time.sleep(2)
    kms = box.client("kms")
    assert "DisabledException" in box.client("cloudtrail").get_trail_status(Name=TRAIL)["LatestDeliveryError"]
    after_crash = {o["Key"] for o in box.client("s3").list_objects_v2(Bucket=LOGS).get("Contents", []) if not o["Key"].startswith("plain/")}
    assert {k for k in after_crash - before if "/CloudTrail/" in k} == set(), "nothing delivered while the key is disabled"
    kms.enable_key(KeyId=key)
    recs = records(box)
    assert box.client("cloudtrail").get_trail_status(Name=TRAIL).get("LatestDeliveryError") in (None, "")
    put_keys = [r["requestParameters"]["key"] for r in recs if r["eventName"] == "PutObject"
                and r.get("requestParameters", {}).get("bucketName") == "ledger"]
    # The ledger: every acknowledged write is delivered, once.
    assert sorted(put_keys) == sorted(acked)
    assert any(r["eventName"] == "CreateBucket" and r["requestParameters"]["bucketName"] == "ledger" for r in recs)
    s3c = box.client("s3")
    for o in s3c.list_objects_v2(Bucket=LOGS, Prefix="AWSLogs/")["Contents"]:
        h = s3c.head_object(Bucket=LOGS, Key=o["Key"])
        if "/CloudTrail/" in o["Key"]:
            assert (h["ServerSideEncryption"], h["SSEKMSKeyId"]) == ("aws:kms", key), o["Key"]
    box.stop()


def test_a_trail_without_a_key_follows_its_buckets_default_sse_kms(cairn_server_factory):
    box = cairn_server_factory(config='[[bucket]]\nname = "dflt-logs"\n', delivery="1s", digest="3s")
    kms, ct, s3 = box.client("kms"), box.client("cloudtrail"), box.client("s3")
    arn = f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/dflt-trail"
    key = kms.create_key(Policy=seed_policy(arn))["KeyMetadata"]["Arn"]
    s3.put_bucket_encryption(Bucket="dflt-logs", ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}}]})
    ct.create_trail(Name="dflt-trail", S3BucketName="dflt-logs")
    ct.start_logging(Name="dflt-trail")
    assert box.flush("dflt-trail")["LogFiles"] >= 1
    objs = s3.list_objects_v2(Bucket="dflt-logs", Prefix="AWSLogs/")["Contents"]
    for o in objs:
        h = s3.head_object(Bucket="dflt-logs", Key=o["Key"])
        assert (h["ServerSideEncryption"], h.get("SSEKMSKeyId")) == ("aws:kms", key), o["Key"]
    # A key whose policy does not let this trail use it: nothing is delivered, in plaintext
    # or otherwise, and the status says why.
    other = kms.create_key()["KeyMetadata"]["Arn"]
    s3.put_bucket_encryption(Bucket="dflt-logs", ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": other}}]})
    before = {o["Key"] for o in s3.list_objects_v2(Bucket="dflt-logs", Prefix="AWSLogs/")["Contents"]}
    s3.create_bucket(Bucket="dflt-more")
    time.sleep(2.5)
    st = ct.get_trail_status(Name="dflt-trail")
    assert "AccessDenied" in st.get("LatestDeliveryError", ""), st
    after = {o["Key"] for o in s3.list_objects_v2(Bucket="dflt-logs", Prefix="AWSLogs/")["Contents"]}
    assert {k for k in after - before if "/CloudTrail/" in k} == set()
    box.stop()


def test_no_plaintext_anywhere_under_the_data_directory(cairn_server_factory):
    """After SSE-KMS writes of a sentinel (a PUT, a copy, a multipart upload's parts and
    object) and encrypted log deliveries that record them, the sentinel appears in no file
    under the data directory."""
    box = cairn_server_factory(config=f'[[bucket]]\nname = "{LOGS}"\n', delivery="1s", digest="3s")
    kms, s3, ct = box.client("kms"), box.client("s3"), box.client("cloudtrail")
    key = kms.create_key(Policy=seed_policy())["KeyMetadata"]["Arn"]
    ct.create_trail(Name=TRAIL, S3BucketName=LOGS, KmsKeyId=key)
    ct.start_logging(Name=TRAIL)
    s3.create_bucket(Bucket="sentinels")
    kw = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key}
    s3.put_object(Bucket="sentinels", Key="put", Body=SENTINEL * 10, **kw)
    s3.copy_object(Bucket="sentinels", Key="copy", CopySource={"Bucket": "sentinels", "Key": "put"}, **kw)
    up = s3.create_multipart_upload(Bucket="sentinels", Key="mp", **kw)
    et = s3.upload_part(Bucket="sentinels", Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=SENTINEL)["ETag"]
    parts_dir = [SENTINEL in p.read_bytes() for p in (box.data / "multipart").rglob("*") if p.is_file()]
    s3.complete_multipart_upload(Bucket="sentinels", Key="mp", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": et}]})
    # The sentinel also reaches the trail, in the userAgent of a data event: the log file that
    # carries it is SSE-KMS.
    import boto3
    from botocore.config import Config
    ct.put_event_selectors(TrailName=TRAIL, EventSelectors=[{"ReadWriteType": "All", "IncludeManagementEvents": True,
                                                             "DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3:::sentinels/"]}]}])
    tagged = boto3.client("s3", endpoint_url=box.endpoint, region_name="us-east-1", aws_access_key_id=box.key,
                          aws_secret_access_key=box.secret, config=Config(user_agent_extra=SENTINEL.decode()))
    tagged.put_object(Bucket="sentinels", Key="ua", Body=b"x", **kw)
    recs = records(box)
    assert any(SENTINEL.decode() in (r.get("userAgent") or "") for r in recs), "the sentinel is in a delivered log"
    assert s3.get_object(Bucket="sentinels", Key="mp")["Body"].read() == SENTINEL
    assert parts_dir and not any(parts_dir), "multipart parts are sealed at rest"
    found = [str(p) for p in box.data.rglob("*") if p.is_file() and SENTINEL in p.read_bytes()]
    box.stop()
    # The journal and the LookupEvents history hold the records themselves (the userAgent),
    # unencrypted, as the trail's own working state; every other file — object bodies, parts,
    # log files — must be free of the sentinel.
    found = [f for f in found if "/journal/" not in f and not f.endswith("history.redb")]
    assert found == [], found
