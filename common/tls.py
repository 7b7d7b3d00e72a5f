"""The TLS credentials of every TCP link (netmgr's API, the agents), from
the files of the cloud's own CA.

netmgr creates the CA at first start in its TLS directory (``ca.key`` 0600,
``ca.crt``: ``netmgr/certificates.py``, with ``cryptography``, which the
router appliance does not carry), unless the operator put a CA there first;
it issues its own server certificate and, on request, the agents'
(``cloudnet-netmgr --issue-cert``). Every certificate names its role in its DNS names
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
import os
from pathlib import Path

import grpc

# The DNS names certificates carry for their role (checked by the peer).
ROLE_NETMGR = "cloudnet-netmgr"
ROLE_AGENT = "cloudnet-agent"
# The file names of an agent's certificate and key (in its TLS directory).
AGENT_CERT_NAME = "agent"
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


def server_credentials(files: TlsFiles, *, mutual: bool) -> grpc.ServerCredentials:
    """A listener's credentials; ``mutual``: clients must present a
    certificate from the CA (the router and compute agents' listeners: the
    handshake fails without one, or with another CA's). Without it no client
    certificate is asked for (netmgr's API: its callers send tokens)."""
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
