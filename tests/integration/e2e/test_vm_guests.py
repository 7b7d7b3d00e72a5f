"""A guest VM (compute service, tiny image under TCG) served by a router VM
(netmgr's VM backend): VM to VM over the OVS fabric, the whole cloud's path."""

from __future__ import annotations

import time

import grpc
import pytest
from cloudnet.compute.v1 import compute_pb2 as cpb
from cloudnet.compute.v1 import compute_pb2_grpc as crpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from aio.allinone import INET_HOST_IP
from tests.lib.vmutil import http_get

pytestmark = [pytest.mark.integration, pytest.mark.vm_only]


def test_vm_guest_gets_lease_dns_and_snat_from_a_router_vm(cloud, make_tenant):
    t = make_tenant()
    net = t.network(name="vms", cidr="10.31.0.0/24")
    t.api.wait_router_active(net.router_id)
    md = (("authorization", f"Bearer {t.secret}"),)
    with grpc.insecure_channel(cloud.compute_listen) as ch:
        compute = crpc.ComputeServiceStub(ch)
        images = compute.ListImages(cpb.ListImagesRequest(), metadata=md, timeout=10).images
        if "tiny" not in [i.name for i in images]:
            pytest.skip("guest image not built (bash images/guest/build.sh)")
        vm = compute.CreateVm(cpb.CreateVmRequest(vm=cpb.Vm(
            name="g1", image="tiny", vcpus=1, memory_mib=128,
            nics=[cpb.Nic(network_id=net.id)])), metadata=md, timeout=60)
        try:
            nic = vm.nics[0]
            deadline_log = b""
            deadline = time.monotonic() + 180
            while b"CLOUDNET-READY" not in deadline_log and time.monotonic() < deadline:
                time.sleep(1)
                deadline_log = compute.GetConsoleLog(cpb.GetConsoleLogRequest(id=vm.id),
                                                     metadata=md, timeout=10).data
            assert f"CLOUDNET-LEASE bound iface=eth0 mac={nic.mac} ip={nic.ip}".encode() \
                in deadline_log, deadline_log.decode(errors="replace")[-2000:]
            # A namespace guest on the same network asks the VM guest (its CGI)
            # to resolve names through the router VM and ping through its SNAT.
            p2 = t.port(net.id, hostname="ns2")
            g2 = t.guest(net, p2)
            assert g2.dhcp().ip == p2.ip
            out = http_get(g2.netns, f"http://{nic.ip}/cgi-bin/check?ns2")
            assert f"resolved={p2.ip}" in out, out
            assert "ping=ok" in out, out
            out = http_get(g2.netns, f"http://{nic.ip}/cgi-bin/check?www.example.test")
            assert f"resolved={INET_HOST_IP}" in out, out
            assert "ping=ok" in out, out
            r = t.api.call(t.api.routers.GetRouter, pb.GetRouterRequest(id=net.router_id))
            assert r.backend == "vm"
            assert r.vm_state == pb.ROUTER_VM_STATE_ACTIVE
        finally:
            compute.DeleteVm(cpb.DeleteVmRequest(id=vm.id), metadata=md, timeout=60)
