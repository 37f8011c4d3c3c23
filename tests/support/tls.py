"""A certificate authority made at test time, and the TLS files a registry and its clients read.

The CA issues server certificates (for ``127.0.0.1`` and ``localhost``), client certificates for
mutual TLS and signing certificates for the token server. Keys are ECDSA P-256 (fast to make, and
what Go, OpenSSL and skopeo all accept). ``write_certs_d`` lays the files out the way Docker reads
``certs.d/HOST:PORT/``. Everything here blocks: call it from test setup or a worker thread.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Certificates are valid from a day ago, so a clock a little behind does not refuse them.
_BACKDATE = datetime.timedelta(days=1)
_VALIDITY = datetime.timedelta(days=30)

#: Names every server certificate answers to: the registries here listen on loopback only.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class CertKeyPair:
    """A PEM certificate and its PEM (PKCS#8) private key, as files."""

    certificate: Path
    key: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hoist tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)


def _subject_alt_names(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _usage(*, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


class CertificateAuthority:
    """A root CA whose certificate is ``certificate`` (PEM); it signs every leaf it issues."""

    def __init__(self, directory: Path, common_name: str = "Hoist test CA") -> None:
        self.directory = directory
        self._key = _new_key()
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_usage(ca=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
        )
        self._certificate = builder.sign(self._key, hashes.SHA256())
        self.certificate = directory / "ca.crt"
        directory.mkdir(parents=True, exist_ok=True)
        self.certificate.write_bytes(self.certificate_pem())

    def certificate_pem(self) -> bytes:
        return self._certificate.public_bytes(serialization.Encoding.PEM)

    def issue_server(
        self, name: str = "server", hosts: Sequence[str] = LOOPBACK_HOSTS
    ) -> CertKeyPair:
        """A TLS server certificate for ``hosts`` (IP addresses become IP SANs)."""
        return self._issue(
            name, hosts[0], [ExtendedKeyUsageOID.SERVER_AUTH], _subject_alt_names(hosts)
        )

    def issue_client(self, name: str = "client") -> CertKeyPair:
        """A TLS client certificate, for registries that require one (mutual TLS)."""
        return self._issue(name, f"hoist-{name}", [ExtendedKeyUsageOID.CLIENT_AUTH])

    def issue_signing(
        self, name: str = "token-signer"
    ) -> tuple[CertKeyPair, ec.EllipticCurvePrivateKey]:
        """A certificate for a JWT signing key; the key object is returned too, for signing."""
        key = _new_key()
        pair = self._issue(name, name, [], key=key)
        return pair, key

    def _issue(
        self,
        name: str,
        common_name: str,
        purposes: list[x509.ObjectIdentifier],
        alt_names: x509.SubjectAlternativeName | None = None,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> CertKeyPair:
        key = key or _new_key()
        builder = self._leaf_builder(common_name, key)
        if purposes:
            builder = builder.add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
        if alt_names is not None:
            builder = builder.add_extension(alt_names, critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        pair = CertKeyPair(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        pair.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        _write_private(pair.key, _key_pem(key))
        return pair

    def _leaf_builder(
        self, common_name: str, key: ec.EllipticCurvePrivateKey
    ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self._certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )


def write_certs_d(
    certs_d: Path, host: str, ca: Path | None = None, client: CertKeyPair | None = None
) -> Path:
    """Lay out ``certs_d/HOST/`` as Docker reads it: ``ca.crt``, ``client.cert``, ``client.key``.

    ``host`` is the registry's ``HOST[:PORT]``; returns that host's directory.
    """
    directory = certs_d / host
    directory.mkdir(parents=True, exist_ok=True)
    if ca is not None:
        shutil.copyfile(ca, directory / "ca.crt")
    if client is not None:
        shutil.copyfile(client.certificate, directory / "client.cert")
        _write_private(directory / "client.key", client.key.read_bytes())
    return directory


def client_context(ca: Path | None = None, client: CertKeyPair | None = None) -> ssl.SSLContext:
    """A verifying client context that trusts ``ca`` (else the system store) and may present
    ``client``."""
    context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    if client is not None:
        context.load_cert_chain(client.certificate, client.key)
    return context


def server_context(server: CertKeyPair) -> ssl.SSLContext:
    """A server context presenting ``server`` (for test servers written in Python)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server.certificate, server.key)
    return context
