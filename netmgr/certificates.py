"""netmgr's certificate authority: made at first start in its TLS directory
(``ca.key`` EC P-256 0600, ``ca.crt``), or the operator's own found there;
issues netmgr's certificate and the agents' (``cloudnet-netmgr
--issue-cert``), each naming its role (``common.tls``: ``ROLE_NETMGR``,
``ROLE_AGENT``) as a DNS name the peer checks. With ``cryptography``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.private_files import ensure_private_dir, write_private
from common.tls import CA_CERT, CA_KEY, TlsFiles

CA_NAME = "cloudnet CA"
CA_DAYS = 3650
CERT_DAYS = 825


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
