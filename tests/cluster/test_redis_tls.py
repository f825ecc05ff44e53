"""The Redis backplane over TLS (`rediss://`): a redis-server listening on a TLS port only,
with a certificate authority and a server certificate made here; roomcast's own RESP3
connection speaks TLS for requests and pub/sub, and two nodes deliver through it."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio
from coredis.connection import TCPLocation
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from roomcast.backplane.redis.wire import RespConnection
from tests.cluster.conftest import REDIS_START, SharedTopology, cluster
from tests.cluster.test_delivery import collect
from tests.support import WAIT, connect, free_port


def _write_pem(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def make_certificates(folder: Path) -> tuple[str, str, str]:
    """A CA, and a server certificate it signs for 127.0.0.1: (ca, cert, key) paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "roomcast test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return (
        _write_pem(folder / "ca.pem", ca.public_bytes(pem)),
        _write_pem(folder / "redis.pem", cert.public_bytes(pem)),
        _write_pem(folder / "redis.key", key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
    )


@contextmanager
def tls_redis(folder: Path) -> Iterator[tuple[int, str]]:
    """A redis-server with a TLS port only: (port, CA file); killed by its PID after."""
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not installed: run bash scripts/setup.sh --test"
    ca, cert, key = make_certificates(folder)
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca,
         "--tls-auth-clients", "no", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        context = ssl.create_default_context(cafile=ca)
        deadline = time.monotonic() + REDIS_START
        while True:  # until it answers PING over TLS
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as raw, \
                        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.sendall(b"PING\r\n")
                    if tls.recv(64).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert process.poll() is None, f"redis-server exited with {process.returncode}"
            assert time.monotonic() < deadline, "redis-server did not answer PING over TLS"
            time.sleep(0.02)
        yield port, ca
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=WAIT)


async def test_requests_and_pubsub_over_tls(tmp_path: Path) -> None:
    with tls_redis(tmp_path) as (port, ca):
        context = ssl.create_default_context(cafile=ca)
        sub = RespConnection(TCPLocation("127.0.0.1", port), ssl_context=context)
        pub = RespConnection(TCPLocation("127.0.0.1", port), ssl_context=context)
        replies: dict[int, Any] = {}

        async def echo(i: int) -> None:
            replies[i] = await pub.create_request(b"ECHO", f"r{i}")

        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                await nursery.start(sub.run)
                await nursery.start(pub.run)
                sub.send_command(b"SSUBSCRIBE", b"ch")
                assert await sub.next_pushes() == [[b"ssubscribe", b"ch", 1]]
                async with trio.open_nursery() as requests:
                    for i in range(200):
                        requests.start_soon(echo, i)
                assert await pub.create_request(b"SPUBLISH", "ch", "hello") == 1
                assert await sub.next_pushes() == [[b"smessage", b"ch", b"hello"]]
                sub.invalidate()
                pub.invalidate()
        assert replies == {i: f"r{i}".encode() for i in range(200)}


async def test_two_nodes_deliver_through_a_tls_redis(tmp_path: Path) -> None:
    with tls_redis(tmp_path) as (port, ca):
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}&ssl_cert_reqs=required"
        async with cluster(SharedTopology(url), "n1", "n2") as (a, b), \
                connect(a, sub="alice") as alice, connect(b, sub="bob") as bob:
            assert (await bob.subscribe("desk"))["rooms"]["desk"]["ok"]
            reply = await alice.call({"type": "publish", "id": "p", "room": "desk",
                                      "data": {"n": 1}})
            assert reply["offset"] == 1
            [frame] = await collect(bob, "desk", 1)
            assert frame["data"] == {"n": 1} and frame["offset"] == 1
