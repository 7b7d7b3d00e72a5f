"""Output formatting of the ``cloudnet`` CLI: aligned tables and JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from netmgr.cli.client import enum_label

EMPTY = "-"

_CONTROL = {i: f"\\x{i:02x}" for i in range(32)} | {0x7F: "\\x7f", 9: "\\t", 10: "\\n", 13: "\\r"}


def clean_cell(text: str) -> str:
    """Escape control characters so one value can never break a table row."""
    return text.translate(_CONTROL)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns aligned to their widest cell, two spaces apart, header first.

    Cells are ``str()``-ed and control characters escaped; empty cells show as
    ``-``. Lines carry no trailing whitespace. Returns the text without a final
    newline.
    """
    table = [[clean_cell(str(h)) for h in headers]]
    for row in rows:
        cells = [clean_cell(str(c)) if c not in (None, "") else EMPTY for c in row]
        if len(cells) != len(headers):
            raise ValueError(f"row has {len(cells)} cells, expected {len(headers)}")
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    lines = []
    for r in table:
        line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r))
        lines.append(line.rstrip())
    return "\n".join(lines)


# ------------------------------------------------------------ values


def format_timestamp(ts: Timestamp | None) -> str:
    """A google.protobuf.Timestamp as ISO 8601 UTC (``2024-05-01T12:00:00Z``)."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return ""
    dt = ts.ToDatetime(tzinfo=UTC)
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z")


def _format_scalar(fd: FieldDescriptor, value: Any) -> str:
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return enum_label(fd.enum_type, value)
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return "yes" if value else "no"
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return format_message_inline(value)
    return str(value)


def format_message_inline(msg: Any) -> str:
    """A nested message on one line."""
    name = msg.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        return format_timestamp(msg)
    if name == "google.protobuf.FieldMask":
        return ",".join(msg.paths)
    if name.endswith(".ServiceHealth"):
        who = f"{msg.name} ({msg.version})" if msg.version else msg.name
        text = f"{who}: {'healthy' if msg.healthy else 'unhealthy'}"
        return f"{text} ({msg.detail})" if msg.detail else text
    parts = []
    for fd, _value in msg.ListFields():
        parts.append(f"{fd.name}={format_field(msg, fd.name)}")
    return " ".join(parts)


def _is_repeated(fd: FieldDescriptor) -> bool:
    flag = getattr(fd, "is_repeated", None)  # protobuf >= 5.28; ``label`` is gone in 7
    if flag is not None:
        return bool(flag)
    return bool(getattr(fd, "label", None) == FieldDescriptor.LABEL_REPEATED)


def format_field(msg: Any, name: str) -> str:
    """A field of a message as human-friendly text (``""`` when unset)."""
    fd = msg.DESCRIPTOR.fields_by_name[name]
    value = getattr(msg, name)
    if _is_repeated(fd):
        sep = "; " if fd.type == FieldDescriptor.TYPE_MESSAGE else ", "
        return sep.join(_format_scalar(fd, v) for v in value)
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return format_message_inline(value) if msg.HasField(name) else ""
    return _format_scalar(fd, value)


def format_detail(msg: Any, extra: Sequence[tuple[str, str]] = ()) -> str:
    """One object as a FIELD/VALUE table, fields in declaration order; each
    element of a repeated object field (a load balancer's members) is a row
    of its own, ``members[0]``, ``members[1]``..."""
    rows: list[tuple[str, str]] = []
    for fd in msg.DESCRIPTOR.fields:
        items = getattr(msg, fd.name)
        if _is_repeated(fd) and fd.type == FieldDescriptor.TYPE_MESSAGE and items:
            rows.extend((f"{fd.name}[{i}]", _format_scalar(fd, item))
                        for i, item in enumerate(items))
        else:
            rows.append((fd.name, format_field(msg, fd.name)))
    rows.extend(extra)
    return format_table(("FIELD", "VALUE"), rows)


# ----------------------------------------------------- list columns

Column = tuple[str, Callable[[Any], str]]


def column(name: str) -> Callable[[Message], str]:
    """A list column showing one field as :func:`format_field` does."""
    return lambda m: format_field(m, name)


def format_port_range(msg: Any, first: str, last: str) -> str:
    """Two port fields as ``80`` or ``7000-7010`` (``last`` 0 or equal: one port)."""
    lo, hi = getattr(msg, first), getattr(msg, last)
    return str(lo) if not hi or hi == lo else f"{lo}-{hi}"


def _generation(r: Any) -> str:
    return f"{r.applied_generation}/{r.desired_generation}"


COLUMNS: dict[str, list[Column]] = {
    "Tenant": [
        ("ID", column("id")),
        ("NAME", column("name")),
        ("CREATED", column("create_time")),
    ],
    "Token": [
        ("ID", column("id")),
        ("TENANT", column("tenant_id")),
        ("NAME", column("name")),
        ("CREATED", column("create_time")),
        ("EXPIRES", lambda t: format_field(t, "expire_time") or "never"),
        ("SCOPE", lambda t: "read-only" if t.read_only else "all"),
    ],
    "Network": [
        ("ID", column("id")),
        ("NAME", column("name")),
        ("CIDR", column("cidr")),
        ("GATEWAY", column("gateway")),
        ("VLAN", column("vlan_id")),
        ("SNAT IP", column("source_nat_ip")),
        ("DOMAIN", column("domain")),
        ("ROUTER", column("router_id")),
    ],
    "Port": [
        ("ID", column("id")),
        ("NAME", column("name")),
        ("NETWORK", column("network_id")),
        ("IP", column("ip")),
        ("MAC", column("mac")),
        ("HOSTNAME", column("hostname")),
        ("STATE", column("state")),
    ],
    "Router": [
        ("ID", column("id")),
        ("NETWORK", column("network_id")),
        ("STATE", column("state")),
        ("BACKEND", column("backend")),
        ("HOST", column("host")),
        ("PUBLIC IP", column("public_ip")),
        ("GENERATION", _generation),
        ("UPDATED", column("update_time")),
    ],
}


def format_list(kind: str, items: Sequence[Any], with_tenant: bool = False) -> str:
    """A list of objects of one message type (``Network``...) as a table;
    ``with_tenant`` adds a TENANT column after the ID (the admin's lists
    across tenants), for objects that name their tenant."""
    cols = list(COLUMNS[kind])
    if (with_tenant and items and "tenant_id" in items[0].DESCRIPTOR.fields_by_name
            and all(h != "TENANT" for h, _ in cols)):
        cols.insert(1, ("TENANT", column("tenant_id")))
    return format_table([h for h, _ in cols], ([get(m) for _, get in cols] for m in items))


# --------------------------------------------------------------- JSON


def to_dict(msg: Any) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(
        msg,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return result


def to_json(value: Any) -> str:
    """A message, a list of messages, or plain data as indented JSON."""
    if isinstance(value, list | tuple):
        data: Any = [to_dict(v) if hasattr(v, "DESCRIPTOR") else v for v in value]
    elif hasattr(value, "DESCRIPTOR"):
        data = to_dict(value)
    else:
        data = value
    return json.dumps(data, indent=2, sort_keys=False)
