"""Requests signed by botocore's own signers (or not at all) and sent byte for byte, for cases
no SDK call makes: replays, swapped bodies, odd headers."""
import datetime
import http.client

from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def send(srv, method, path, headers, body=b""):
    """Sends one request as given; returns (status, headers, body)."""
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for k, v in headers.items():
        c.putheader(k, v)
    if body or method in ("POST", "PUT"):
        c.putheader("Content-Length", str(len(body)))
    c.endheaders(body)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, dict(r.getheaders()), data


def signed(srv, service, method, path, body=b"", headers=None, key=None, secret=None, when=None, s3=False, region="us-east-1",
           token=None):
    """The headers botocore's SigV4 signer adds to this request (as of `when`, if given)."""
    url = f"http://127.0.0.1:{srv.port}{path}"
    req = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    creds = Credentials(key or srv.key, secret or srv.secret, token)
    auth = (S3SigV4Auth if s3 else SigV4Auth)(creds, service, region)
    if when:
        # Sign as of another time (botocore reads the clock through datetime.datetime.now/utcnow).
        import botocore.auth as ba

        class Fixed(datetime.datetime):
            @classmethod
            def utcnow(cls):
                return when.replace(tzinfo=None)

            @classmethod
            def now(cls, tz=None):
                return when if tz else when.replace(tzinfo=None)

        orig = ba.datetime.datetime
        ba.datetime.datetime = Fixed
        try:
            auth.add_auth(req)
        finally:
            ba.datetime.datetime = orig
    else:
        auth.add_auth(req)
    h = dict(req.headers.items())
    h["Host"] = f"127.0.0.1:{srv.port}"
    return h
