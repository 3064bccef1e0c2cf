"""Shared fixtures: the cairn binary, a moto S3 server on loopback, free ports."""
import os
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
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.time() > deadline:
                proc.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.kill()
    proc.wait()
