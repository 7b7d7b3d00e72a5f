"""Debug API helpers for the diagnostics tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Protocol, TypeVar

import grpc
from cloudnet.netmgr.v1 import debug_pb2_grpc
from cloudnet.router.v1 import diag_pb2 as dpb

T_co = TypeVar("T_co", covariant=True)


class ServerStream(Iterator[T_co], Protocol[T_co]):
    """A server stream as gRPC returns it: iterated, and cancelled by the reader."""

    def cancel(self) -> bool: ...


class Debug:
    """DebugService stub with a tenant's token."""

    def __init__(self, tenant) -> None:
        self.api = tenant.api
        self.stub = debug_pb2_grpc.DebugServiceStub(tenant.api.channel)

    def show(self, router_id: str, kind: dpb.ShowKind.ValueType, **kw) -> dpb.ShowResponse:
        return self.api.call(self.stub.Show, dpb.ShowRequest(router_id=router_id, kind=kind, **kw))

    def probe(self, router_id: str, timeout: float = 60, **kw) -> dpb.ProbeResult:
        return self.api.call(self.stub.Probe, dpb.ProbeRequest(router_id=router_id, **kw),
                             timeout=timeout)

    def capture(self, req: dpb.CaptureRequest,
                timeout: float = 60) -> ServerStream[dpb.CaptureChunk]:
        return self.stub.Capture(req, metadata=self.api.metadata, timeout=timeout)

    def trace(self, req: dpb.TraceRequest, timeout: float = 60) -> ServerStream[dpb.TraceEvent]:
        return self.stub.Trace(req, metadata=self.api.metadata, timeout=timeout)


class Background:
    """Consume a stream on a thread; `started` is set at the first message."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.items: list = []
        self.error: grpc.RpcError | None = None
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for item in self.stream:
                self.items.append(item)
                self.started.set()
        except grpc.RpcError as e:
            self.error = e
        finally:
            self.started.set()

    def join(self, timeout: float = 60) -> list:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "stream did not end"
        return self.items


def pcap_bytes(chunks: list[dpb.CaptureChunk]) -> bytes:
    return b"".join(c.data for c in chunks)


def summary(chunks: list[dpb.CaptureChunk]) -> dpb.CaptureSummary:
    assert chunks
    assert chunks[-1].HasField("summary")
    return chunks[-1].summary
