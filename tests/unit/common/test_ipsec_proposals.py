"""The IPsec proposal grammar netmgr validates with and the router's strongSwan
accepts: algorithms, PRF and DH group rules, the weak ones refused."""

from __future__ import annotations

import pytest

from common import ipsec_proposals


@pytest.mark.parametrize(("proposal", "ike", "ok"), [
    ("aes256gcm16-prfsha384-ecp384", True, True),
    ("aes256-sha256-modp2048", True, True),
    ("aes128gcm16-prfsha256-curve25519", True, True),
    ("chacha20poly1305-prfsha256-x25519", True, True),
    ("aes256gcm16-ecp384", False, True),
    ("aes256-sha256", False, True),
    ("aes256-sha256-modp2048-esn", False, True),
    ("aes256gcm16-ecp384", True, False),       # AEAD in IKE needs a PRF
    ("aes256-sha256", True, False),            # IKE needs a DH group
    ("aes256-modp2048", True, False),          # CBC needs integrity
    ("aes256gcm16-sha256-ecp384", False, False),
    ("3des-sha1-modp2048", True, False),
    ("aes256-md5-modp2048", True, False),
    ("aes256-sha256-modp1024", True, False),
    ("aes256-sha256-modp2048-modp2048", True, False),
    ("aes256--sha256", False, False),
    ("", False, False),
])
def test_proposal_grammar(proposal: str, ike: bool, ok: bool) -> None:
    assert (ipsec_proposals.check(proposal, ike) == "") is ok
