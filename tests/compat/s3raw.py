"""Hand-built SigV4 requests for S3 cases no SDK will send (malformed chunking, odd keys)."""
import datetime
import hashlib
import hmac
import http.client
import ssl
import urllib.parse


def _h(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret, day, region="us-east-1", service="s3"):
    return _h(_h(_h(_h(("AWS4" + secret).encode(), day), region), service), "aws4_request")


def canonical_query(query):
    pairs = [p.split("=", 1) + [""] if "=" not in p else p.split("=", 1) for p in query.split("&") if p]
    pairs = [(urllib.parse.quote(urllib.parse.unquote(k), safe="-_.~"),
              urllib.parse.quote(urllib.parse.unquote(v), safe="-_.~")) for k, v, *_ in pairs]
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def send(srv, method, path, *, query="", headers=None, body=b"", payload=None, secret=None, tls_ca=None,
         chunked=False):
    """Signs (header SigV4, S3) and sends one request; `path` is sent and signed as given
    (already percent-encoded). Returns (status, headers dict, body bytes). `chunked` sends
    the body with `Transfer-Encoding: chunked` (1 MiB chunks) and no length."""
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/us-east-1/s3/aws4_request"
    payload = payload or hashlib.sha256(body).hexdigest()
    hs = {"host": f"127.0.0.1:{srv.port}", "x-amz-date": amz_date, "x-amz-content-sha256": payload}
    hs.update({k.lower(): v for k, v in (headers or {}).items()})
    signed = sorted(hs)
    creq = "\n".join([method, path, canonical_query(query), *[f"{h}:{str(hs[h]).strip()}" for h in signed], "",
                      ";".join(signed), payload])
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    key = signing_key(secret or srv.secret, day)
    sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    hs["authorization"] = f"AWS4-HMAC-SHA256 Credential={srv.key}/{scope}, SignedHeaders={';'.join(signed)}, Signature={sig}"
    if tls_ca:
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ssl.create_default_context(cafile=tls_ca), timeout=30)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.putrequest(method, path + (f"?{query}" if query else ""), skip_host=True, skip_accept_encoding=True)
    for k, v in hs.items():
        conn.putheader(k, v)
    if chunked:
        conn.putheader("transfer-encoding", "chunked")
        conn.endheaders()
        try:
            for i in range(0, len(body), 1 << 20):
                piece = body[i:i + (1 << 20)]
                conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (and closed) before the whole body was sent
    else:
        conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
    r = conn.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    conn.close()
    return out, (key, amz_date, scope, sig)


def chunked_body(chunks, trailer=None):
    """An unsigned aws-chunked body, optionally with one trailing header."""
    out = b""
    for data in chunks:
        out += f"{len(data):x}".encode() + b"\r\n" + data + b"\r\n"
    if trailer:
        out = out[:-2] + f"{trailer[0]}:{trailer[1]}\r\n\r\n".encode()
    return out
