"""coturn, Debian's TURN server, run by a test: on loopback or in a test's
network namespace, with static credentials or a shared secret (coturn's
use-auth-secret, the TURN REST API); stopped and its files removed on exit."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path

TURNSERVER = "/usr/bin/turnserver"
REALM = "rpistream.test"
START_TIMEOUT = 10.0  # seconds for coturn to open its listeners


def available() -> bool:
    return shutil.which(TURNSERVER) is not None


@contextlib.contextmanager
def coturn(directory: Path, address: str, *, port: int = 3478, user: tuple[str, str] | None = None,
           secret: str | None = None, prefix: tuple[str, ...] = (), tls_port: int | None = None):
    """coturn listening on `address`:`port` (UDP and TCP), relaying from the
    same address; `user` (name, password) for static credentials, `secret`
    for time-limited ones; with `tls_port`, TLS there too, with a
    certificate for `address` made here. `prefix` runs it elsewhere
    (netns.inside()). Yields the process; its log is directory/turnserver.log."""
    assert (user is None) != (secret is None), "static credentials or a secret"
    log = directory / "turnserver.log"
    auth = (["--use-auth-secret", f"--static-auth-secret={secret}"] if secret
            else [f"--user={user[0]}:{user[1]}"])
    tls = ["--no-tls"]
    if tls_port is not None:
        cert, key = self_signed_certificate(directory, address)
        tls = [f"--tls-listening-port={tls_port}", f"--cert={cert}", f"--pkey={key}"]
    argv = [*prefix, TURNSERVER, "-n", "--no-cli", *tls, "--no-dtls",
            f"--listening-ip={address}", f"--relay-ip={address}", f"--listening-port={port}",
            # A few relay ports: a test makes a handful of allocations.
            "--min-port=49152", "--max-port=49407",
            f"--realm={REALM}", "--fingerprint", "--lt-cred-mech", *auth,
            # Its database and pid file in the test's directory, not /var/lib/turn.
            f"--userdb={directory / 'turndb'}", f"--pidfile={directory / 'turnserver.pid'}",
            # Relaying to 127.0.0.1 is refused by default; tests on loopback need it.
            "--allow-loopback-peers",
            f"--log-file={log}", "--simple-log", "--no-stdout-log"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "Total General servers" not in (log.read_text() if log.exists() else ""):
            assert process.poll() is None, f"coturn ended: {log.read_text() if log.exists() else ''}"
            assert time.monotonic() < deadline, f"coturn not up:\n{log.read_text()}"
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def self_signed_certificate(directory: Path, address: str) -> tuple[Path, Path]:
    """A certificate for the IP address `address` and its key, made with openssl."""
    cert, key = directory / "turn-cert.pem", directory / "turn-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                    "-subj", f"/CN={address}", "-addext", f"subjectAltName=IP:{address}",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key
