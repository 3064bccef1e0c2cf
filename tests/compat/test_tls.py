"""`cairn serve` over TLS (rustls, certificate and key from PEM files): the aws CLI and
boto3 work against it, records carry tlsDetails, and aws:SecureTransport is true."""
import gzip
import json
import subprocess

import pytest

BUCKET = "tls-logs"


@pytest.fixture(scope="module")
def tls_srv(cairn_server_factory, tls_certs):
    d = tls_certs
    config = f"""
[tls]
cert = "{d / 'cert.pem'}"
key = "{d / 'key.pem'}"
[[bucket]]
name = "{BUCKET}"
[[trail]]
name = "tls-trail"
bucket = "{BUCKET}"
logging = true
"""
    srv = cairn_server_factory(config=config)
    srv.endpoint = srv.endpoint.replace("http://", "https://")
    srv.ca = str(d / "ca.pem")
    return srv


def test_cli_and_boto3_over_tls_with_tls_details_in_records(tls_srv, aws_bin):
    env = {**tls_srv.env(), "AWS_CA_BUNDLE": tls_srv.ca}
    out = subprocess.run([aws_bin, "cloudtrail", "get-trail-status", "--name", "tls-trail"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["IsLogging"] is True
    import boto3
    ct = boto3.client("cloudtrail", endpoint_url=tls_srv.endpoint, region_name="us-east-1", verify=tls_srv.ca,
                      aws_access_key_id=tls_srv.key, aws_secret_access_key=tls_srv.secret)
    ct.add_tags(ResourceId="arn:aws:cloudtrail:us-east-1:123456789012:trail/tls-trail", TagsList=[{"Key": "k", "Value": "v"}])
    flush = subprocess.run([tls_srv.binary, "trail", "flush", "tls-trail", "--endpoint", tls_srv.endpoint], env=env,
                           capture_output=True, text=True)
    assert flush.returncode == 0, flush.stderr
    status = subprocess.run([tls_srv.binary, "status", "--json", "--data-dir", str(tls_srv.data), "--endpoint", tls_srv.endpoint],
                            env=env, capture_output=True, text=True)
    assert status.returncode == 0 and json.loads(status.stdout)[0]["Name"] == "tls-trail", status.stderr
    evs = ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "AddTags"}])["Events"]
    rec = json.loads(evs[0]["CloudTrailEvent"])
    tls = rec["tlsDetails"]
    assert tls["tlsVersion"] in ("TLSv1.2", "TLSv1.3") and tls["cipherSuite"] and tls["clientProvidedHostHeader"].startswith("127.0.0.1")


def test_plain_http_is_not_served_on_a_tls_listener(tls_srv):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", tls_srv.port, timeout=5)
    with pytest.raises(Exception):
        c.request("GET", "/_cairn/health")
        c.getresponse().read()
