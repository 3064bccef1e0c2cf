"""Regenerates sigv4_vectors.json: requests signed by botocore's own SigV4 signers (header
auth and presigned URLs), which the Rust verifier must accept. Run with any Python that has
botocore: python3 gen_sigv4_vectors.py > sigv4_vectors.json"""
import hashlib
import json

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

CREDS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
CASES = [
    ("cloudtrail", "us-east-1", SigV4Auth, "POST", "http://127.0.0.1:4566/",
     {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.DescribeTrails"}, b"{}"),
    ("iam", "us-east-1", SigV4Auth, "POST", "http://127.0.0.1:4566/",
     {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, b"Action=ListUsers&Version=2010-05-08"),
    ("s3", "us-east-1", S3SigV4Auth, "GET", "http://127.0.0.1:4566/trail-bucket?marker=AWSLogs%2F1%2Fa&prefix=AWSLogs%2F&encoding-type=url", {}, b""),
    ("s3", "eu-west-1", S3SigV4Auth, "PUT", "http://127.0.0.1:4566/bucket/a%20key/with%2Bplus%26amp.txt", {"Content-Type": "text/plain", "X-Amz-Meta-Owner": "  two   spaces "}, b"hello world"),
    ("s3", "us-east-1", S3SigV4Auth, "GET", "http://bucket.localhost:4566/dir//a/../b~c", {}, b""),
]
out = []
if True:
    for service, region, auth, method, url, headers, body in CASES:
        req = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
        if auth is S3SigV4Auth:
            req.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
        auth(CREDS, service, region).add_auth(req)
        p = req.prepare()
        out.append({"kind": "header", "service": service, "region": region, "method": method, "url": p.url,
                    "headers": [[k, v.decode() if isinstance(v, bytes) else v] for k, v in p.headers.items()],
                    "body": body.decode()})
    for service, region, auth, url in [("s3", "us-east-1", S3SigV4QueryAuth, "http://127.0.0.1:4566/trail-bucket/AWSLogs/1/x.json.gz"),
                                       ("cloudtrail", "us-west-2", SigV4QueryAuth, "http://127.0.0.1:4566/?Action=DescribeTrails")]:
        req = AWSRequest(method="GET", url=url, headers={})
        auth(CREDS, service, region, expires=3600).add_auth(req)
        p = req.prepare()
        out.append({"kind": "presigned", "service": service, "region": region, "method": "GET", "url": p.url,
                    "headers": [[k, v.decode() if isinstance(v, bytes) else v] for k, v in p.headers.items()], "body": ""})
print(json.dumps({"secret": CREDS.secret_key, "requests": out}, indent=1))
