"""Shared fixtures: the cairn binary, a moto S3 server on loopback, free ports."""
import json
import os
import signal
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def cairn_bin():
    for cand in [os.environ.get("CAIRN_BIN"), "/var/tmp/cairn-target/debug/cairn", str(ROOT / "target/debug/cairn")]:
        if cand and Path(cand).exists():
            return cand
    pytest.fail("cairn binary not built (set CAIRN_BIN)")


@pytest.fixture(scope="session")
def aws_bin():
    exe = shutil.which("aws")
    if not exe:
        pytest.fail("the aws CLI (awscli v1) is not installed")
    return exe


@pytest.fixture(scope="module")
def moto():
    exe = os.environ.get("CAIRN_MOTO_SERVER") or shutil.which("moto_server")
    if not exe:
        pytest.fail("moto_server is not installed")
    # A free port can be taken between the probe and moto's bind: a server that exits at
    # once is started again on another port (three tries); a slow start gets 60 s.
    for attempt in range(3):
        port = free_port()
        proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        started = False
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                started = True
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    break
                time.sleep(0.1)
        if started:
            break
        proc.kill()
        proc.wait()
        if attempt == 2:
            pytest.fail(f"moto_server did not start (exit status {proc.returncode})")
    yield f"http://127.0.0.1:{port}"
    proc.kill()
    proc.wait()


def _start_listening(args, port, what):
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"{what} did not start")
            time.sleep(0.1)


def dynalite_bin():
    exe = os.environ.get("CAIRN_DYNALITE") or shutil.which("dynalite")
    for cand in [exe, "/var/tmp/cairn-npm/node_modules/.bin/dynalite"]:
        if cand and Path(cand).exists():
            return cand
    if os.environ.get("CAIRN_REQUIRE_DYNALITE"):
        pytest.fail("dynalite (npm) is not installed")
    pytest.skip("dynalite (npm) is not installed")


@pytest.fixture(scope="module")
def dynalite():
    """dynalite (npm), a DynamoDB-compatible server, on a free loopback port (in memory)."""
    port = free_port()
    proc = _start_listening([dynalite_bin(), "--host", "127.0.0.1", "--port", str(port), "--createTableMs", "50",
                             "--deleteTableMs", "50", "--updateTableMs", "50"], port, "dynalite")
    yield f"http://127.0.0.1:{port}"
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def moto_ddb():
    """moto_server as a second DynamoDB upstream: it has what dynalite lacks (transactions,
    PartiQL, TTL, continuous backups)."""
    exe = os.environ.get("CAIRN_MOTO_SERVER") or shutil.which("moto_server")
    if not exe:
        pytest.fail("moto_server is not installed")
    port = free_port()
    proc = _start_listening([exe, "-H", "127.0.0.1", "-p", str(port)], port, "moto_server")
    yield f"http://127.0.0.1:{port}"
    proc.kill()
    proc.wait()


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory):
    """A test CA (`ca.pem`) and a server certificate it issued for 127.0.0.1/localhost
    (`cert.pem`, `key.pem`), as a deployment would have; returns their directory."""
    if not shutil.which("openssl"):
        pytest.fail("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True, cwd=d)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=cairn test CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "leaf.csr")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "ext.cnf", "-out", "cert.pem")
    return d


class CairnServer:
    """A `cairn serve` on a free loopback port with its own data directory, initialised with
    `cairn init --json`. Stops with SIGTERM and checks the exit status."""

    def __init__(self, binary, workdir, *, account="123456789012", delivery="1s", digest="4s", config="", dev=False, extra=(),
                 init_env=None, env=None):
        self.serve_env = {**os.environ, **(env or {})}
        self.binary, self.workdir, self.account = binary, Path(workdir), account
        self.data = self.workdir / "data"
        init = subprocess.run([binary, "init", "--data-dir", str(self.data), "--account-id", account, "--json"],
                              capture_output=True, text=True, check=True, env={**os.environ, **(init_env or {})})
        creds = json.loads(init.stdout)
        assert creds["AccountId"] == account
        self.key, self.secret = creds["AccessKeyId"], creds.get("SecretAccessKey")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        cfg = self.workdir / "cairn.toml"
        cfg.write_text(config)
        self.args = [binary, "serve", "--data-dir", str(self.data), "--config", str(cfg), "--listen", f"127.0.0.1:{self.port}",
                     "--delivery-interval", delivery, "--digest-interval", digest, *extra]
        if dev:
            self.args.append("--dev")
        self.start()

    def start(self):
        self.log = open(self.workdir / "serve.log", "a")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT, env=self.serve_env)
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.proc.kill()
                    pytest.fail("cairn serve did not start: " + (self.workdir / "serve.log").read_text())
                time.sleep(0.05)

    def env(self, key=None, secret=None, token=None, region="us-east-1"):
        e = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        e.update({"AWS_ACCESS_KEY_ID": key or self.key, "AWS_SECRET_ACCESS_KEY": secret or self.secret,
                  "AWS_DEFAULT_REGION": region, "AWS_ENDPOINT_URL": self.endpoint,
                  "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"})
        if token:
            e["AWS_SESSION_TOKEN"] = token
        return e

    def client(self, service, key=None, secret=None, token=None, region="us-east-1"):
        import boto3
        return boto3.client(service, endpoint_url=self.endpoint, region_name=region,
                            aws_access_key_id=key or self.key, aws_secret_access_key=secret or self.secret,
                            aws_session_token=token)

    def aws(self, aws_bin, *args, env=None, check=True):
        r = subprocess.run([aws_bin, *args], env=env or self.env(), capture_output=True, text=True)
        if check and r.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r

    def flush(self, trail):
        # No flag: the endpoint comes from AWS_ENDPOINT_URL, as for the aws CLI.
        r = subprocess.run([self.binary, "trail", "flush", trail], env=self.env(),
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        return json.loads(r.stdout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise
            assert rc == 0, f"cairn serve exited {rc}: " + (self.workdir / "serve.log").read_text()[-3000:]
        self.log.close()

    def restart(self):
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def cairn_server_factory(cairn_bin, tmp_path_factory):
    started = []

    def make(**kw):
        s = CairnServer(cairn_bin, tmp_path_factory.mktemp("cairn-server"), **kw)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()
