"""Every RPC of a service, read from its descriptor, called generically: the
hostile-input tests send one bad value in one field of every request.

``string_paths(desc)`` lists the request's string fields as the servers name
them in errors (``vm.nics[0].network_id``); ``with_value`` builds a request
holding a value at one such path; ``invoke`` calls the method (a stream is
read to its end).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

import grpc
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

_SEGMENT = re.compile(r"([a-z_0-9]+)(?:\[(\d+)\])?")


def services(*modules: ModuleType) -> list[ServiceDescriptor]:
    return [s for m in modules for s in m.DESCRIPTOR.services_by_name.values()]


def methods(*modules: ModuleType) -> list[MethodDescriptor]:
    return [m for s in services(*modules) for m in s.methods]


def method_id(method: MethodDescriptor) -> str:
    return f"{method.containing_service.name}.{method.name}"


def string_paths(desc: Descriptor, prefix: str = "", seen: frozenset[str] = frozenset()
                 ) -> list[str]:
    """Every string field of a message (nested messages too, one element of a
    repeated one), as error paths."""
    out = []
    for f in desc.fields:
        path = prefix + f.name
        if f.type == FieldDescriptor.TYPE_STRING:
            out.append(path + ("[0]" if f.is_repeated else ""))
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            msg = f.message_type
            assert msg is not None  # a message field always names its type
            if msg.full_name.startswith("google.") or msg.full_name in seen:
                continue
            sub = path + ("[0]" if f.is_repeated else "")
            out += string_paths(msg, sub + ".", seen | {msg.full_name})
    return out


def float_paths(desc: Descriptor, prefix: str = "") -> list[str]:
    out = []
    for f in desc.fields:
        if f.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            out.append(prefix + f.name)
        elif f.type == FieldDescriptor.TYPE_MESSAGE and not f.is_repeated:
            msg = f.message_type
            assert msg is not None  # a message field always names its type
            if not msg.full_name.startswith("google."):
                out += float_paths(msg, prefix + f.name + ".")
    return out


def is_id_path(path: str) -> bool:
    last = re.sub(r"\[\d+\]$", "", path.rsplit(".", 1)[-1])
    return last in ("id", "ids") or last.endswith(("_id", "_ids"))


def with_value(method: MethodDescriptor, path: str, value: Any) -> Message:
    """A request of ``method`` with ``value`` at ``path`` (everything else unset)."""
    request = GetMessageClass(method.input_type)()
    msg: Any = request
    segments = path.split(".")
    for i, segment in enumerate(segments):
        m = _SEGMENT.fullmatch(segment)
        assert m, segment
        name, index = m.group(1), m.group(2)
        last = i == len(segments) - 1
        if last:
            if index is not None:
                getattr(msg, name).append(value)
            else:
                setattr(msg, name, value)
        elif index is not None:
            msg = getattr(msg, name).add()
        else:
            msg = getattr(msg, name)
            msg.SetInParent()
    return request


def invoke(channel: grpc.Channel, method: MethodDescriptor, request: Message,
           metadata: Sequence[tuple[str, str]] = (), timeout: float = 30) -> Any:
    name = f"/{method.containing_service.full_name}/{method.name}"
    reply = GetMessageClass(method.output_type)
    if method.server_streaming:
        stream = channel.unary_stream(name, request_serializer=type(request).SerializeToString,
                                      response_deserializer=reply.FromString)
        return list(_read(stream(request, metadata=metadata, timeout=timeout)))
    unary = channel.unary_unary(name, request_serializer=type(request).SerializeToString,
                                response_deserializer=reply.FromString)
    return unary(request, metadata=metadata, timeout=timeout)


def _read(stream: Any) -> Iterator[Any]:
    yield from stream
