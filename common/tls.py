"""The cloud's own certificate authority and the TLS credentials of every
TCP link (netmgr's API, the agents) made from it.

netmgr creates the CA at first start in its TLS directory (``ca.key`` 0600,
``ca.crt``), unless the operator put a CA there first; it issues its own
server certificate and, on request, the agents' (``cloudnet-netmgr
issue-cert``). Every certificate names its role in its DNS names
(``ROLE_NETMGR``, ``ROLE_AGENT``): a client checks the peer's certificate
for the role it expects (gRPC's target name override), so an agent's
certificate cannot pass for netmgr's, and addresses (IP lists, DNS names)
need not be in any certificate.

Links: API clients check netmgr's certificate against the CA and send a
bearer token (server-auth TLS); netmgr and the agents check each other's
certificates (mutual TLS). Unix sockets stay plaintext (0600).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.private_files import ensure_private_dir, write_private

# The DNS names certificates carry for their role (checked by the peer).
ROLE_NETMGR = "cloudnet-netmgr"
ROLE_AGENT = "cloudnet-agent"
# The file names of an agent's certificate and key (in its TLS directory).
AGENT_CERT_NAME = "agent"
CA_NAME = "cloudnet CA"
CA_DAYS = 3650
CERT_DAYS = 825
CA_CERT = "ca.crt"
CA_KEY = "ca.key"


@dataclasses.dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of one end of a link: the CA that vouches for the peer, and
    this end's own certificate and key (None: a client with no certificate)."""

    # None: the system's trusted roots (a client of a publicly signed netmgr).
    ca: Path | None
    cert: Path | None = None
    key: Path | None = None

    def read(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        return (self.ca.read_bytes() if self.ca else None,
                self.cert.read_bytes() if self.cert else None,
                self.key.read_bytes() if self.key else None)

    @classmethod
    def in_dir(cls, directory: str | os.PathLike[str], name: str) -> TlsFiles:
        d = Path(directory)
        return cls(ca=d / CA_CERT, cert=d / f"{name}.crt", key=d / f"{name}.key")


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertificateAuthority:
    """A CA key and certificate in a directory (made there if missing)."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey,
                 cert_path: Path) -> None:
        self.cert = cert
        self._key = key
        self.cert_path = cert_path

    @classmethod
    def load_or_create(cls, directory: str | os.PathLike[str]) -> CertificateAuthority:
        d = Path(directory)
        ensure_private_dir(d)
        cert_path, key_path = d / CA_CERT, d / CA_KEY
        if cert_path.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path}: the CA key must be an EC key")
            return cls(cert, key, cert_path)
        if cert_path.exists() or key_path.exists():
            raise ValueError(f"{d}: {CA_CERT} and {CA_KEY} go together (one is missing)")
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        write_private(key_path, _key_pem(key))  # the key first: a cert alone is useless
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        os.chmod(cert_path, 0o644)
        return cls(cert, key, cert_path)

    def issue(self, common_name: str, dns_names: Sequence[str],
              ips: Sequence[str] = ()) -> tuple[bytes, bytes]:
        """A certificate for both ends of TLS (server and client), and its
        key, as PEM."""
        key = _new_key()
        now = _now()
        alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(dns_names)]
        alt += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ips)]
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(self._key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def issue_files(self, directory: str | os.PathLike[str], name: str, role: str,
                    ips: Sequence[str] = ()) -> TlsFiles:
        """``<name>.crt`` and ``<name>.key`` (0600) for ``role`` in
        ``directory``, with a copy of the CA's certificate (``ca.crt``)."""
        d = Path(directory)
        ensure_private_dir(d)
        cert, key = self.issue(name, [role, "localhost"], ["127.0.0.1", *ips])
        write_private(d / f"{name}.key", key)
        (d / f"{name}.crt").write_bytes(cert)
        if (d / CA_CERT).resolve() != self.cert_path.resolve():
            (d / CA_CERT).write_bytes(self.cert_path.read_bytes())
        return TlsFiles(ca=d / CA_CERT, cert=d / f"{name}.crt", key=d / f"{name}.key")


def ensure_issued(ca: CertificateAuthority, directory: str | os.PathLike[str], name: str,
                  role: str, ips: Sequence[str] = ()) -> TlsFiles:
    """The files of ``name`` in ``directory``: kept if they exist (an
    operator's own, or made at an earlier start), else issued now."""
    files = TlsFiles.in_dir(directory, name)
    if all(p is not None and p.exists() for p in (files.ca, files.cert, files.key)):
        return files
    return ca.issue_files(directory, name, role, ips)


def server_credentials(files: TlsFiles, *, mutual: bool) -> grpc.ServerCredentials:
    """A listener's credentials; ``mutual``: clients must present a
    certificate from the CA (the router agents' listeners). Without it no
    client certificate is asked for: gRPC's Python API has no "verify one if
    presented" mode (it would take any), so a listener either requires the
    CA's or authenticates its callers by token."""
    ca, cert, key = files.read()
    if cert is None or key is None or (mutual and ca is None):
        raise ValueError("a TLS listener needs its certificate and key (and a CA to check "
                         "clients by)")
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca if mutual else None,
                                       require_client_auth=mutual)


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    ca, cert, key = files.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                        certificate_chain=cert)
