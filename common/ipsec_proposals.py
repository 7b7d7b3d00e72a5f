"""The IKE and ESP proposal grammar cloudnet accepts (a subset of strongSwan's).

A proposal is ``alg-alg-...`` in strongSwan's syntax, e.g.
``aes256gcm16-prfsha384-ecp384`` (IKE, AEAD), ``aes256-sha256-modp2048``
(IKE or ESP), ``aes256gcm16-curve25519`` (ESP with PFS). Only algorithms in
the tables below are accepted: no DES/3DES, MD5, or DH groups under 2048
bits. netmgr validates the API's proposals with the same function the router
agent verifies its config with, so what the API accepts the router loads.
"""

from __future__ import annotations

from common.grpc_errors import quote

ENCRYPTION = ("aes128", "aes192", "aes256")
AEAD = ("aes128gcm16", "aes192gcm16", "aes256gcm16", "aes128gcm12", "aes256gcm12",
        "aes128gcm8", "aes256gcm8", "chacha20poly1305")
INTEGRITY = ("sha1", "sha256", "sha384", "sha512")
PRF = ("prfsha1", "prfsha256", "prfsha384", "prfsha512")
DH = ("modp2048", "modp3072", "modp4096", "modp6144", "modp8192",
      "ecp256", "ecp384", "ecp521", "curve25519", "x25519", "curve448", "x448")
ESN = ("esn", "noesn")
MAX_PROPOSALS = 8

# A pre-shared key: a printable set with no quote, backslash, space or '#'
# (what would end or comment out a value in a config file), though keys only
# ever travel through vici.
PSK_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                      "!%*+,-./:=?@^_~")
PSK_MIN, PSK_MAX = 16, 128
PSK_RULE = f"{PSK_MIN}-{PSK_MAX} characters of letters, digits and !%*+,-./:=?@^_~"
LIFETIME_MIN, LIFETIME_MAX = 300, 86400

DEFAULT_IKE = ("aes256gcm16-prfsha384-ecp384", "aes256-sha256-modp2048")
DEFAULT_ESP = ("aes256gcm16-ecp384", "aes256-sha256-modp2048")


def psk_ok(psk: str) -> bool:
    return PSK_MIN <= len(psk) <= PSK_MAX and set(psk) <= PSK_CHARS


def check(proposal: str, ike: bool) -> str:
    """'' if ``proposal`` is valid for IKE (``ike``) or ESP, else why not."""
    parts = proposal.split("-")
    if not proposal or any(not p for p in parts):
        return f"{quote(proposal)} is not of the form alg-alg-..."
    unknown = [p for p in parts if p not in ENCRYPTION + AEAD + INTEGRITY + PRF + DH + ESN]
    if unknown:
        return (f"{quote(proposal)}: unsupported algorithm {quote(unknown[0])} (encryption: "
                f"{', '.join(ENCRYPTION + AEAD)}; integrity: {', '.join(INTEGRITY)}; "
                f"DH: {', '.join(DH)})")
    if len(set(parts)) != len(parts):
        return f"{quote(proposal)}: an algorithm is repeated"
    enc = [p for p in parts if p in ENCRYPTION]
    aead = [p for p in parts if p in AEAD]
    integ = [p for p in parts if p in INTEGRITY]
    prf = [p for p in parts if p in PRF]
    dh = [p for p in parts if p in DH]
    esn = [p for p in parts if p in ESN]
    if not enc and not aead:
        return f"{quote(proposal)}: no encryption algorithm"
    if enc and aead:
        return f"{quote(proposal)}: mixes AEAD ({aead[0]}) and non-AEAD ({enc[0]}) encryption"
    if enc and not integ:
        return f"{quote(proposal)}: {enc[0]} needs an integrity algorithm (sha256, ...)"
    if aead and integ:
        return f"{quote(proposal)}: AEAD {aead[0]} takes no integrity algorithm"
    if ike:
        if esn:
            return f"{quote(proposal)}: esn/noesn is for ESP proposals"
        if not dh:
            return f"{quote(proposal)}: an IKE proposal needs a DH group ({', '.join(DH[:3])}, ...)"
        if aead and not prf:
            return f"{quote(proposal)}: AEAD {aead[0]} needs a PRF in IKE (prfsha256, ...)"
    elif prf:
        return f"{quote(proposal)}: a PRF ({prf[0]}) is for IKE proposals"
    return ""
