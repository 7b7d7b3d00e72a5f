"""Per-port DHCP options: the names, numbers and value types cloudnet takes,
checked by netmgr's model (naming the request's field) and again by the
router agent before anything reaches dnsmasq.

An option is named (``ntp-server``) or numbered (42); a number the table
does not know needs a ``type``. Values are strings typed by the option:

* ``ip`` / ``ips``: dotted IPv4 addresses (one / 1-16);
* ``routes``: option 121's classless routes, ``<cidr>,<gateway>`` each;
* ``domains``: DNS names (option 119's search list);
* ``string``: 1-255 of ``[A-Za-z0-9._/:@-]`` (nothing dnsmasq or a
  client's shell script would read as more than text);
* ``uint8``, ``uint16``, ``uint32``: one decimal number in range.

``next-server`` is not an option but the BOOTP server field (PXE's TFTP
server address); it goes with ``bootfile-name``. Options cloudnet itself
sets from the network, or that are the DHCP machinery's own (netmask, host
name, lease times, message types, relay agent...), are refused.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

NEXT_SERVER = 0  # the pseudo-option number of the BOOTP next-server field
MAX_OPTIONS = 16
MAX_VALUES = 16
MAX_ENCODED = 255  # one DHCP option carries at most 255 bytes

# name -> (number, type)
KNOWN: dict[str, tuple[int, str]] = {
    "next-server": (NEXT_SERVER, "ip"),
    "router": (3, "ips"),
    "dns-server": (6, "ips"),
    "log-server": (7, "ips"),
    "domain-name": (15, "string"),
    "root-path": (17, "string"),
    "mtu": (26, "uint16"),
    "ntp-server": (42, "ips"),
    "netbios-ns": (44, "ips"),
    "tftp-server": (66, "string"),
    "bootfile-name": (67, "string"),
    "domain-search": (119, "domains"),
    "classless-static-route": (121, "routes"),
}
NAME_OF = {number: name for name, (number, _) in KNOWN.items()}
TYPES = ("ip", "ips", "string", "uint8", "uint16", "uint32", "routes", "domains")
# The DHCP machinery's own, or what cloudnet sets for every port.
RESERVED = frozenset({0, 1, 12, 28, 43, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
                      81, 82, 255})
# Options dnsmasq reads by its own option table whatever the value says,
# refusing what does not fit ("bad IP address", "bad domain"): the types
# that fit them. Addresses (118, the subnet selection, is one address); SIP
# servers (120), addresses or domain names (each label at most 63).
FITTING_TYPES: dict[int, tuple[str, ...]] = {
    **{n: ("ip", "ips") for n in (9, 16, 21, 32, 33, 41, 45, 48, 49, 65, 68, 69, 70, 71, 74,
                                  118, 150)},
    120: ("ip", "ips", "domains"),
}
_STRING = re.compile(r"[A-Za-z0-9._/:@-]{1,255}")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_UINT = {"uint8": 0xFF, "uint16": 0xFFFF, "uint32": 0xFFFFFFFF}


@dataclasses.dataclass(frozen=True, slots=True)
class DhcpOption:
    number: int
    type: str
    values: tuple[str, ...]

    @property
    def name(self) -> str:
        return NAME_OF.get(self.number, str(self.number))


# A problem: (the part of the option it is about: "name", "number", "type",
# "values", "values[<i>]"; the reason).
Problem = tuple[str, str]


def resolve(name: str, number: int, type_: str) -> tuple[int, str] | Problem:
    """(number, type) of an option given by name or number, or a problem."""
    if name:
        known = KNOWN.get(name.lower())
        if known is None:
            return ("name", "not a known option name (" + ", ".join(sorted(KNOWN))
                    + "); give a number and a type instead")
        if number and number != known[0]:
            return ("number", f"option {name.lower()} is number {known[0]}")
        if type_ and type_ != known[1]:
            return ("type", f"option {name.lower()} takes {known[1]}")
        return known
    if not 1 <= number <= 254:
        return ("number", "a name or a number 1-254 is required")
    if number in RESERVED:
        return ("number", f"option {number} is set by the DHCP server itself")
    if number in NAME_OF:
        known_type = KNOWN[NAME_OF[number]][1]
        if type_ and type_ != known_type:
            return ("type", f"option {number} ({NAME_OF[number]}) takes {known_type}")
        return number, known_type
    if type_ not in TYPES:
        return ("type", "an option cloudnet does not know needs a type: " + ", ".join(TYPES))
    if type_ not in FITTING_TYPES.get(number, TYPES):
        return ("type", f"option {number} takes " + " or ".join(FITTING_TYPES[number]))
    return number, type_


def _value_problem(type_: str, value: str) -> str | None:
    if type_ in ("ip", "ips"):
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            return "not an IPv4 address"
        return None
    if type_ == "routes":
        dest, sep, gateway = value.partition(",")
        try:
            ipaddress.IPv4Network(dest)
            ipaddress.IPv4Address(gateway)
        except ValueError:
            return "a route is <network>/<prefix>,<gateway> (e.g. 10.0.0.0/8,192.168.1.1)"
        return None if sep else "a route is <network>/<prefix>,<gateway>"
    if type_ == "domains":
        labels = value.rstrip(".").split(".")
        if len(value) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
            return "not a DNS name"
        return None
    if type_ == "string":
        return None if _STRING.fullmatch(value) else "1-255 of A-Z a-z 0-9 . _ / : @ -"
    limit = _UINT[type_]
    if not value.isdigit() or len(value) > 10 or int(value) > limit:
        return f"a whole number 0-{limit}"
    return None


def _encoded_size(type_: str, values: tuple[str, ...]) -> int:
    per = {"ip": 4, "ips": 4, "uint8": 1, "uint16": 2, "uint32": 4}
    if type_ in per:
        return per[type_] * len(values)
    if type_ == "routes":
        return sum(1 + (int(v.split(",")[0].split("/")[1]) + 7) // 8 + 4 for v in values)
    return sum(len(v) + 2 for v in values)


def check(name: str, number: int, type_: str, values: list[str] | tuple[str, ...]
          ) -> tuple[DhcpOption | None, list[Problem]]:
    """One option: normalised, or its problems."""
    resolved = resolve(name, number, type_)
    num, kind = resolved
    if isinstance(num, str):
        return None, [(num, kind)]
    single = kind in ("ip", "string", "uint8", "uint16", "uint32")
    if not values:
        return None, [("values", "at least one value")]
    if len(values) > (1 if single else MAX_VALUES):
        return None, [("values", "one value" if single else f"at most {MAX_VALUES} values")]
    problems = [(f"values[{i}]", p) for i, v in enumerate(values)
                if (p := _value_problem(kind, v)) is not None]
    if problems:
        return None, problems
    normal = tuple(v.lower().rstrip(".") if kind == "domains" else
                   str(ipaddress.IPv4Network(v.split(",")[0])) + "," + v.split(",")[1]
                   if kind == "routes" else str(int(v)) if kind in _UINT else v
                   for v in values)
    if _encoded_size(kind, normal) > MAX_ENCODED:
        return None, [("values", f"more than {MAX_ENCODED} bytes in one option")]
    return DhcpOption(num, str(kind), normal), []


def check_all(options: list[DhcpOption]) -> Problem | None:
    """The options of one port together (each already checked)."""
    if len(options) > MAX_OPTIONS:
        return ("", f"at most {MAX_OPTIONS} options")
    numbers = [o.number for o in options]
    for n in numbers:
        if numbers.count(n) > 1:
            return ("", f"option {NAME_OF.get(n, n)} given twice")
    if NEXT_SERVER in numbers and 67 not in numbers:
        return ("", "next-server goes with bootfile-name (PXE)")
    return None
