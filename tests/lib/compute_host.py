"""A compute agent in the test process on its own OVS bridge, trunked to an
all-in-one cloud's fabric, and how to stop one leaving no VM behind."""

from __future__ import annotations


class ComputeHost:
    """A compute agent (in this process) on its own OVS bridge, trunked to the cloud's."""

    def __init__(self, cloud, name: str, state_dir: str, image_dir: str,
                 images: dict[str, str] | None = None) -> None:
        """`images` (name -> directory) replaces the tiny guest (`image_dir`)."""
        import grpc
        from cloudnet.compute.v1 import compute_pb2_grpc

        from common.fabric.ovs import OvsFabric, connect_trunk
        from compute.agent.netmgr_client import Netmgr
        from compute.agent.server import create_server
        from compute.agent.service import Compute
        from compute.host import HostConfig

        self.cloud = cloud
        self.name = name
        self.fabric = OvsFabric(f"{cloud.prefix}-{name}")
        self.fabric.setup()
        self.trunk = (f"{cloud.prefix}-{name}t", f"{cloud.prefix}-{name}u")
        connect_trunk(self.fabric, cloud.fabric, *self.trunk)
        cfg = HostConfig(name=f"{cloud.prefix}-{name}", state_dir=state_dir,
                         netmgr=cloud.listen, admin_token=cloud.admin_token,
                         fabric_kind="ovs", fabric=self.fabric,
                         images=images or {"tiny": image_dir},
                         address="", accel="qemu")
        self.compute = Compute(cfg, Netmgr(cloud.listen, cloud.admin_token))
        self.server, port = create_server(self.compute, "127.0.0.1:0")
        self.server.start()
        self.address = f"127.0.0.1:{port}"
        self.channel = grpc.insecure_channel(self.address)
        self.stub = compute_pb2_grpc.ComputeServiceStub(self.channel)

    def close(self) -> None:
        from common.fabric.ovs import disconnect_trunk

        try:
            leftover = stop_compute(self.compute, self.server, self.channel)
        finally:
            disconnect_trunk(self.fabric, self.cloud.fabric, *self.trunk)
            self.fabric.teardown()
        assert not leftover, f"domains left behind: {leftover}"


def stop_compute(compute, server, channel) -> list[str]:
    """Remove the VMs a failed test left, stop the compute agent; the VMs that were left."""
    leftover = list(compute.driver.domains())
    try:
        for vm_id in leftover:
            rec = compute._record(vm_id)
            compute._remove(vm_id, rec.tenant_id if rec else "",
                            [n["port_id"] for n in rec.nics] if rec else [], [])
    finally:
        server.stop(grace=1).wait()
        channel.close()
        compute.netmgr.close()
    return leftover
