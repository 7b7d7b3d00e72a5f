"""What a guest learns about itself from its router: SSH key pairs, user data,
labels (the checks of each value a user sends for them).

Pure. An OpenSSH public key is parsed as the wire blob it encodes (RFC 4253
section 6.6, RFC 5656, RFC 8709), not matched by pattern: its type, its length
and its fingerprint come from the blob itself.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import re
import struct
from collections.abc import Mapping

from common import dhcp_options
from common.dhcp_options import DhcpOption
from common.grpc_errors import InvalidArgument, Violation
from netmgr.model.field_rules import show

MAX_USER_DATA = 32 * 1024
MAX_LABELS = 32
LABEL_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
# Values reach JSON documents and files the guest reads: printable, no quotes,
# no backslash, no path separators that could be read as more than text.
LABEL_VALUE_RE = re.compile(r"[A-Za-z0-9 ._:@+=,-]{0,255}")
KEY_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
MAX_KEY_LINE = 16 * 1024
MIN_RSA_BITS, MAX_RSA_BITS = 2048, 16384
ECDSA_POINT_BYTES = {"nistp256": 65, "nistp384": 97, "nistp521": 133}
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521")


@dataclasses.dataclass(frozen=True, slots=True)
class KeyPair:
    id: str
    tenant_id: str
    name: str
    # "<type> <base64>", the comment left out (it is the user's free text).
    public_key: str
    fingerprint: str
    key_type: str
    created_at: dt.datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class KeyPairSpec:
    name: str
    public_key: str


@dataclasses.dataclass(frozen=True, slots=True)
class ParsedKey:
    key_type: str
    blob: bytes

    @property
    def line(self) -> str:
        return f"{self.key_type} {base64.b64encode(self.blob).decode()}"

    @property
    def fingerprint(self) -> str:
        digest = base64.b64encode(hashlib.sha256(self.blob).digest()).decode()
        return "SHA256:" + digest.rstrip("=")


class _Blob:
    """Reads the SSH wire format's length-prefixed strings."""

    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    def string(self) -> bytes:
        if self._at + 4 > len(self._data):
            raise ValueError("the key data is truncated")
        (n,) = struct.unpack(">I", self._data[self._at:self._at + 4])
        self._at += 4
        if self._at + n > len(self._data):
            raise ValueError("the key data is truncated")
        out = self._data[self._at:self._at + n]
        self._at += n
        return out

    def done(self) -> None:
        if self._at != len(self._data):
            raise ValueError("the key data has trailing bytes")


def parse_public_key(line: str) -> ParsedKey:
    """The key of an OpenSSH public key line; ValueError saying what is wrong."""
    if len(line) > MAX_KEY_LINE:
        raise ValueError(f"longer than {MAX_KEY_LINE} characters")
    # A .pub file ends with a newline; one inside the key is refused.
    line = line.strip(" \t\r\n")
    if not line.isprintable():
        raise ValueError("contains control characters")
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise ValueError("not an OpenSSH public key ('<type> <base64> [comment]')")
    key_type, data = parts[0], parts[1]
    if key_type not in KEY_TYPES:
        raise ValueError(f"key type {show(key_type)} is not one of {', '.join(KEY_TYPES)}")
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key data is not base64") from None
    r = _Blob(blob)
    if r.string() != key_type.encode():
        raise ValueError(f"the key data is not a {key_type} key")
    if key_type == "ssh-ed25519":
        if len(r.string()) != 32:
            raise ValueError("an ed25519 key is 32 bytes")
    elif key_type == "ssh-rsa":
        e = int.from_bytes(r.string(), "big")
        bits = int.from_bytes(r.string(), "big").bit_length()
        if e < 3 or e % 2 == 0:
            raise ValueError("the RSA exponent is not valid")
        if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
            raise ValueError(
                f"an RSA key of {bits} bits (from {MIN_RSA_BITS} to {MAX_RSA_BITS} allowed)")
    else:
        curve = key_type.removeprefix("ecdsa-sha2-")
        if r.string() != curve.encode():
            raise ValueError(f"the key data's curve is not {curve}")
        point = r.string()
        if len(point) != ECDSA_POINT_BYTES[curve] or point[0] != 4:
            raise ValueError(f"not an uncompressed {curve} point")
    r.done()
    return ParsedKey(key_type, blob)


def check_key_pair_spec(spec: KeyPairSpec, prefix: str = "key_pair") -> ParsedKey:
    v: list[Violation] = []
    if not KEY_NAME_RE.fullmatch(spec.name):
        v.append(Violation(f"{prefix}.name",
                           f"{show(spec.name)} is not 1-63 of [A-Za-z0-9._-] starting with a "
                           "letter or digit"))
    parsed: ParsedKey | None = None
    try:
        parsed = parse_public_key(spec.public_key)
    except ValueError as e:
        v.append(Violation(f"{prefix}.public_key", str(e)))
    if v or parsed is None:
        raise InvalidArgument(v)
    return parsed


METADATA_TOKENS = ("optional", "required")
# A DHCP option as a request gives it: (name, number, type, values).
RawDhcpOption = tuple[str, int, str, tuple[str, ...]]


def dhcp_options_checked(raw: tuple[RawDhcpOption | DhcpOption, ...], field: str,
                         v: list[Violation]) -> tuple[DhcpOption, ...]:
    """The options normalised; their problems added to ``v``, each naming
    its option (``port.dhcp_options[1].values[0]``)."""
    out: list[DhcpOption] = []
    for i, item in enumerate(raw):
        if isinstance(item, DhcpOption):
            name, number, type_, values = "", item.number, item.type, item.values
        else:
            name, number, type_, values = item
        option, problems = dhcp_options.check(name, number, type_, list(values))
        for part, reason in problems:
            bad_value = ""
            if part.startswith("values["):
                bad_value = show(values[int(part[7:-1])]) + ": "
            v.append(Violation(f"{field}[{i}].{part}", bad_value + reason))
        if option is not None:
            out.append(option)
    if len(out) == len(raw):
        problem = dhcp_options.check_all(out)
        if problem is not None:
            v.append(Violation(field, problem[1]))
    return tuple(out)


def metadata_tokens_problem(value: str) -> str | None:
    if value and value not in METADATA_TOKENS:
        return f"{show(value)}: must be one of {', '.join(METADATA_TOKENS)}"
    return None


def user_data_problem(data: bytes) -> str | None:
    if len(data) > MAX_USER_DATA:
        return f"{len(data)} bytes, at most {MAX_USER_DATA} allowed"
    return None


def labels_problems(labels: Mapping[str, str], field: str) -> list[Violation]:
    v: list[Violation] = []
    if len(labels) > MAX_LABELS:
        v.append(Violation(field, f"{len(labels)} labels, at most {MAX_LABELS} allowed"))
    for key in sorted(labels):
        if not LABEL_KEY_RE.fullmatch(key):
            v.append(Violation(f"{field}[{show(key)}]",
                               "a key is 1-63 of [A-Za-z0-9._-] starting with a letter or digit"))
        elif not LABEL_VALUE_RE.fullmatch(labels[key]):
            v.append(Violation(f"{field}[{key}]",
                               f"{show(labels[key])}: a value is at most 255 of "
                               "[A-Za-z0-9 ._:@+=,-]"))
    return v


def labels_tuple(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))
