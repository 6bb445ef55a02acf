"""MLLP over TLS with client certificates: a sender with a certificate from the configured CA is
answered; one without is refused at the handshake."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine

from hub.config import Settings
from hub.hl7 import parse
from hub.ingest.listener import MLLPServer
from hub.ingest.mllp import FrameDecoder, frame
from hub.ingest.service import Intake
from tests.builders import adt


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey | None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    c, k = path.with_suffix(".crt"), path.with_suffix(".key")
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return c, k


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("hub test CA", ca_key, None, None)
    server_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    ca_crt, _ = _write(tmp_path / "ca", ca, ca_key)
    server_crt, server_k = _write(tmp_path / "server", _cert("localhost", server_key, ca, ca_key), server_key)
    client_crt, client_k = _write(
        tmp_path / "client", _cert("RSUD_SEHAT", client_key, ca, ca_key), client_key
    )
    return {
        "ca": ca_crt,
        "server_crt": server_crt,
        "server_key": server_k,
        "client_crt": client_crt,
        "client_key": client_k,
    }


def test_tls_with_client_certificates(engine: Engine, pki: dict[str, Path]) -> None:
    settings = Settings(
        mllp_port=0,
        mllp_tls_cert=pki["server_crt"],
        mllp_tls_key=pki["server_key"],
        mllp_tls_client_ca=pki["ca"],
    )
    intake = Intake(engine, settings)

    def client_ctx(with_cert: bool) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(pki["ca"]))
        if with_cert:
            ctx.load_cert_chain(pki["client_crt"], pki["client_key"])
        return ctx

    async def main() -> None:
        intake.start()
        server = MLLPServer(intake, settings)
        await server.start()
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=client_ctx(True), server_hostname="localhost"
            )
            writer.write(frame(adt("TLS1").encode()))
            await writer.drain()
            dec = FrameDecoder()
            acks: list[bytes | object] = []
            while not acks:
                acks = list(dec.feed(await asyncio.wait_for(reader.read(65536), 10)))
            assert isinstance(acks[0], bytes) and parse(acks[0].decode()).get("MSA-1") == "AA"
            writer.close()
            # Without a client certificate the server refuses the connection.
            with pytest.raises((ssl.SSLError, ConnectionError)):
                r2, w2 = await asyncio.open_connection(
                    "127.0.0.1", server.port, ssl=client_ctx(False), server_hostname="localhost"
                )
                w2.write(frame(adt("TLS2").encode()))
                await w2.drain()
                data = await asyncio.wait_for(r2.read(65536), 10)
                if not data:
                    raise ConnectionError("closed")
        finally:
            await server.stop()
            intake.stop()

    asyncio.run(main())
