"""Error formatting: grpc status + google.rpc.BadRequest details -> one line."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from netmgr.cli import main as cli
from netmgr.cli.client import bad_request_violations, format_rpc_error


class FakeCallError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """What a failed unary call raises, with optional rich status details."""

    def __init__(self, code: grpc.StatusCode, details: str, rich: Any = None) -> None:
        self._code, self._details = code, details
        self._trailing: list[tuple[str, Any]] = []
        if rich is not None:
            self._trailing.append((rpc_status.GRPC_DETAILS_METADATA_KEY, rich.SerializeToString()))

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailing

    def initial_metadata(self) -> Any:
        return []

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> Any:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


def bad_request(message: str, *violations: tuple[str, str]) -> FakeCallError:
    br = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in violations
        ]
    )
    detail = any_pb2.Any()
    detail.Pack(br)
    rich = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message, details=[detail])
    return FakeCallError(grpc.StatusCode.INVALID_ARGUMENT, message, rich)


def test_invalid_argument_lists_each_violation() -> None:
    err = bad_request(
        "network.cidr: prefix length must be 16 to 29",
        ("network.cidr", "prefix length must be 16 to 29"),
        ("network.mtu", "must be 68 to 9000"),
    )
    assert bad_request_violations(err) == [
        ("network.cidr", "prefix length must be 16 to 29"),
        ("network.mtu", "must be 68 to 9000"),
    ]
    assert format_rpc_error(err) == (
        "INVALID_ARGUMENT: network.cidr: prefix length must be 16 to 29; "
        "network.mtu: must be 68 to 9000"
    )


def test_invalid_argument_without_details_uses_the_message() -> None:
    err = FakeCallError(grpc.StatusCode.INVALID_ARGUMENT, "port.ip: not in network.cidr")
    assert bad_request_violations(err) == []
    assert format_rpc_error(err) == "INVALID_ARGUMENT: port.ip: not in network.cidr"


def test_inconsistent_rich_status_is_ignored() -> None:
    err = bad_request("x: y", ("x", "y"))
    err._details = "something else"  # from_call raises ValueError on a mismatch
    assert format_rpc_error(err) == "INVALID_ARGUMENT: something else"


def test_other_codes_and_multiline_messages() -> None:
    err = FakeCallError(grpc.StatusCode.NOT_FOUND, "id: network n-9 not found")
    assert format_rpc_error(err) == "NOT_FOUND: id: network n-9 not found"
    err = FakeCallError(grpc.StatusCode.FAILED_PRECONDITION, "id: network has ports\n  (2)")
    assert format_rpc_error(err) == "FAILED_PRECONDITION: id: network has ports (2)"
    err = FakeCallError(grpc.StatusCode.UNAUTHENTICATED, "")
    assert format_rpc_error(err) == "UNAUTHENTICATED"


def test_unavailable_and_deadline_name_the_server() -> None:
    err = FakeCallError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    msg = format_rpc_error(err, "10.0.0.1:7070")
    assert msg.startswith("UNAVAILABLE: cannot reach the cloudnet server at 10.0.0.1:7070")
    err = FakeCallError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    assert format_rpc_error(err, "h:1") == (
        "DEADLINE_EXCEEDED: no answer from the cloudnet server at h:1 in time"
    )


def test_unreachable_server(unused_addr: str, capsys: pytest.CaptureFixture[str]) -> None:
    addr = unused_addr
    rc = cli.main(["--server", addr, "--token", "x", "--timeout", "5", "network", "list"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(
        f"cloudnet: error: UNAVAILABLE: cannot reach the cloudnet server at {addr}"
    )
    assert "Traceback" not in err
