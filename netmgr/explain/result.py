"""The answer explain builds as it walks a flow: the steps it took (each
object consulted and what it did) and the decision."""

from __future__ import annotations

from cloudnet.netmgr.v1 import debug_pb2 as pb

from netmgr.explain.edge import Packet

Decision = tuple[bool, str, str, str]  # allowed, kind, id, reason
DROP = (False, "firewall-default", "drop")  # with a reason: a Decision


def describe(pkt: Packet) -> str:
    return "ICMP echo" if pkt.proto == "icmp" else f"{pkt.proto}/{pkt.port}"


class Result:
    def __init__(self) -> None:
        self.steps: list[pb.ExplainStep] = []
        self.router_id = ""

    def step(self, kind: str, ident: str, result: str) -> None:
        self.steps.append(pb.ExplainStep(object_kind=kind, object_id=ident, result=result))

    def done(self, allowed: bool, kind: str, ident: str, reason: str) -> pb.ExplainResponse:
        return pb.ExplainResponse(allowed=allowed, decided_by_kind=kind, decided_by_id=ident,
                                  reason=reason, steps=self.steps, router_id=self.router_id)

    def decide(self, decision: Decision) -> pb.ExplainResponse:
        return self.done(*decision)
