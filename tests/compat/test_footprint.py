"""A bounded footprint (issue 15): one memory budget split into documented shares that
/_cairn/metrics reports, a bad budget refused at start, LookupEvents over the compact
history, and `cairn bench soak` end to end (samples, plot, ledger)."""
import base64
import json
import re
import subprocess
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError


def metrics(srv):
    return urllib.request.urlopen(f"{srv.endpoint}/_cairn/metrics", timeout=10).read().decode()


def gauge(text, name, share=None):
    pat = rf'^{name}{{share="{share}"}} (\d+)' if share else rf"^{name} (\d+)"
    m = re.search(pat, text, re.M)
    assert m, f"{name} {share or ''} missing from the metrics"
    return int(m.group(1))


def test_the_memory_budget_is_split_and_reported(cairn_server_factory):
    srv = cairn_server_factory(config='metrics_public = true\nmemory_limit = "256MiB"\n')
    ct = srv.client("cloudtrail")
    for _ in range(20):
        ct.describe_trails()
    text = metrics(srv)
    assert gauge(text, "cairn_memory_limit_bytes") == 256 << 20
    shares = dict(re.findall(r'^cairn_memory_share_bytes\{share="(\w+)"\} (\d+)', text, re.M))
    for name in ["request_bodies", "delivery", "journal_queue", "history_cache", "history_batch",
                 "store_cache", "logs_cache", "iam_cache", "trail_cache", "meta_cache", "kms_cache",
                 "connections"]:
        assert name in shares, name
    assert sum(int(v) for v in shares.values()) <= 256 << 20
    assert int(shares["request_bodies"]) == (256 << 20) // 100 * 20
    # Page caches as the databases were opened with them.
    assert int(shares["history_cache"]) == (256 << 20) // 100 * 10
    assert int(shares["store_cache"]) == (256 << 20) // 100 * 8
    assert int(shares["meta_cache"]) == (256 << 20) // 100 * 1
    for used in ["journal_queue", "delivery", "history_batch", "request_bodies"]:
        assert gauge(text, "cairn_memory_used_bytes", used) <= int(shares[used])
    rss = gauge(text, "cairn_process_resident_memory_bytes")
    assert 10 << 20 < rss < (256 + 200) << 20
    assert gauge(text, "cairn_process_open_fds") > 3

    # A setting of cairn.toml wins over its share, and the report says so.
    other = cairn_server_factory(
        config='metrics_public = true\nmemory_limit = "1GiB"\nmax_buffered_body_bytes = 50000000\n')
    text = metrics(other)
    assert gauge(text, "cairn_memory_limit_bytes") == 1 << 30
    assert gauge(text, "cairn_memory_share_bytes", "request_bodies") == 50000000


@pytest.mark.parametrize("limit", ["64MiB", "10%", "lots"])
def test_a_budget_too_small_or_malformed_is_refused_at_start(cairn_bin, tmp_path, limit):
    cfg = tmp_path / "cairn.toml"
    cfg.write_text(f'memory_limit = "{limit}"\n')
    p = subprocess.run([cairn_bin, "serve", "--data-dir", str(tmp_path / "data"), "--config", str(cfg),
                        "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "memory_limit" in p.stderr


def test_lookup_events_pages_through_the_compact_history(cairn_server_factory):
    srv = cairn_server_factory()
    iam = srv.client("iam")
    for i in range(60):
        iam.create_user(UserName=f"fp-{i}")
    ct = srv.client("cloudtrail")
    seen, token, pages = [], None, 0
    while True:
        kw = {"LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": "CreateUser"}],
              "MaxResults": 7}
        if token:
            kw["NextToken"] = token
        r = ct.lookup_events(**kw)
        pages += 1
        seen += [json.loads(e["CloudTrailEvent"])["requestParameters"]["userName"] for e in r["Events"]]
        token = r.get("NextToken")
        if not token:
            break
    assert sorted(seen) == sorted(f"fp-{i}" for i in range(60)), "each CreateUser once"
    assert pages >= 9

    # A tampered NextToken (a position no page gives: the old millisecond form) is refused,
    # not read as the end of the results.
    first = ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "CreateUser"}],
                             MaxResults=7)
    raw = first["NextToken"]
    tok = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    tok["t"] = 2**63
    forged = base64.urlsafe_b64encode(json.dumps(tok).encode()).decode().rstrip("=")
    with pytest.raises(ClientError) as e:
        ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "CreateUser"}],
                         MaxResults=7, NextToken=forged)
    assert e.value.response["Error"]["Code"] == "InvalidNextTokenException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # A token as the build before the ascending index wrote it (no version): within one
    # second it ran the other way, so continuing it could skip events; it is refused.
    old = dict(json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))))
    assert old.pop("v") == 2
    old_tok = base64.urlsafe_b64encode(json.dumps(old).encode()).decode().rstrip("=")
    with pytest.raises(ClientError) as e:
        ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "CreateUser"}],
                         MaxResults=7, NextToken=old_tok)
    assert e.value.response["Error"]["Code"] == "InvalidNextTokenException"
    one = ct.lookup_events(LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": "root"}],
                           MaxResults=50)["Events"]
    assert one and all(e["Username"] == "root" for e in one)
    none = ct.lookup_events(LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": "nobody"}])
    assert none["Events"] == []


def test_bench_soak_samples_plots_and_checks_its_ledger(cairn_bin, tmp_path):
    out = tmp_path / "soak"
    t0 = time.time()
    p = subprocess.run([cairn_bin, "bench", "soak", "--minutes", "0.4", "--rate", "300",
                        "--sample-seconds", "3", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "ledger: PASS" in p.stdout
    rows = (out / "soak.csv").read_text().strip().splitlines()
    assert rows[0].startswith("minutes,req_per_s,p99_ms,rss_mib,open_fds,data_dir_mib")
    assert len(rows) >= 6
    svg = (out / "soak.svg").read_text()
    for caption in ["requests per second", "p99 latency", "server RSS", "open files", "data directory"]:
        assert caption in svg
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == []
    ops = summary["operations"]
    assert ops["PutObject"]["ok"] > 0 and ops["PutObject"]["delivered_ok"] == ops["PutObject"]["ok"]
    assert summary["audit_events"]["acknowledged"] > 0 and summary["audit_events"]["lost"] == 0
    assert summary["peak_rss_mib"] < 512 + 200
    assert time.time() - t0 < 600
