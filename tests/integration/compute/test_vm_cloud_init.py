"""A Debian 12 cloud image (images/cloud-guest) booted through the compute
service under QEMU finds its identity on its network's router with
cloud-init's own CloudStack datasource: the user data runs (a marker file, a
host name), the tenant's key pair lets the test log in over SSH, and a
password reset through the API is fetched by the guest with CloudStack's
password protocol, once.

One VM for the module (a Debian boot under TCG takes a minute or more): the
checks share it."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time

import pytest
from cloudnet.compute.v1 import compute_pb2 as cpb
from cloudnet.netmgr.v1 import keypair_pb2 as kpb
from cloudnet.netmgr.v1 import keypair_pb2_grpc as kprpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from aio.nsguest import NamespaceGuest
from tests.lib.compute_host import ComputeHost
from tests.lib.vmutil import VmTenant, run_cli

pytestmark = pytest.mark.integration

# cloud-init's final-message module writes this on the console when the last stage ends.
FINISHED_RE = re.compile(rb"Cloud-init v\. \S+ finished at .*Up ([0-9.]+) seconds")
HOST_KEY_RE = re.compile(rb"^(ssh-ed25519 [A-Za-z0-9+/=]+)", re.M)
BOOT_TIMEOUT = 420  # create -> cloud-init done, generous for a loaded 2-core machine


@pytest.fixture(scope="module")
def cloud_image(host_services):
    from compute import images

    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("QEMU missing (scripts/bootstrap.sh)")
    if not images.built(images.DEFAULT_CLOUD_GUEST_DIR):
        pytest.skip("cloud-init guest image not built (bash images/cloud-guest/build.sh)")
    return images.DEFAULT_CLOUD_GUEST_DIR


@pytest.fixture(scope="module")
def cloud_host(ovs_cloud, cloud_image, tmp_path_factory):
    from compute import images

    h = ComputeHost(ovs_cloud, "hc", str(tmp_path_factory.mktemp("host-c")), "",
                    images={images.CLOUD_GUEST_NAME: cloud_image})
    try:
        yield h
    finally:
        h.close()


class Booted:
    """The VM, its port, the key to log in with and a namespace guest to do it from."""

    def __init__(self, tenant: VmTenant, vm: cpb.Vm, key: str, known_hosts: str,
                 client: NamespaceGuest, hostname: str, marker: str, boot_seconds: float,
                 console: bytes) -> None:
        self.tenant, self.vm, self.key, self.known_hosts = tenant, vm, key, known_hosts
        self.client, self.hostname, self.marker = client, hostname, marker
        self.boot_seconds, self.console = boot_seconds, console

    @property
    def ip(self) -> str:
        return self.vm.nics[0].ip

    def ssh(self, command: str, stdin: str = "", timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.client.netns, "ssh", "-i", self.key,
             "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
             "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR",
             f"debian@{self.ip}", command],
            input=stdin, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def booted(ovs_cloud, cloud_host, tmp_path_factory, request):
    from compute import images

    tmp = tmp_path_factory.mktemp("cloud-init")
    tenant = VmTenant(ovs_cloud, cloud_host)
    uid = secrets.token_hex(3)
    key = str(tmp / "id_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    os.chmod(key, 0o600)
    with open(key + ".pub") as f:
        kp = tenant.api.call(kprpc.KeyPairServiceStub(tenant.api.channel).ImportKeyPair,
                             kpb.ImportKeyPairRequest(key_pair=kpb.KeyPair(
                                 name="ci", public_key=f.read())))
    hostname = f"ci-{uid}"  # not the VM's name: the user data's host name must win
    marker = f"cloudnet-{secrets.token_hex(8)}"
    user_data = (
        "#cloud-config\n"
        f"hostname: {hostname}\n"
        "write_files:\n"
        "  - path: /var/lib/cloudnet-test/marker\n"
        "    permissions: '0644'\n"
        f"    content: \"{marker}\\n\"\n").encode()
    net = tenant.network("ci", "10.78.0.0/24")
    t0 = time.monotonic()
    vm = cloud_host.stub.CreateVm(cpb.CreateVmRequest(vm=cpb.Vm(
        name="vmci", image=images.CLOUD_GUEST_NAME, vcpus=1, memory_mib=512,
        nics=[cpb.Nic(network_id=net.id)], user_data=user_data, ssh_key_pair_id=kp.id)),
        metadata=tenant.md, timeout=60)
    client = None
    try:
        deadline = t0 + BOOT_TIMEOUT
        while True:
            log = tenant.console(vm)
            done = FINISHED_RE.search(log)
            if done:
                boot_seconds = time.monotonic() - t0
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"cloud-init did not finish in {BOOT_TIMEOUT} s; console:\n"
                                   + log.decode(errors="replace")[-4000:])
            time.sleep(1)
        # The host key cloud-init generated, as its keys-to-console module
        # printed it: the test's SSH client checks the guest against it.
        keys = HOST_KEY_RE.findall(log)
        assert keys, log.decode(errors="replace")[-3000:]
        known_hosts = str(tmp / "known_hosts")
        with open(known_hosts, "w") as f:
            f.write(f"{vm.nics[0].ip} {keys[-1].decode()}\n")
        # The boot time under TCG, in the suite's output (past pytest's capture).
        line = (f"cloud-init guest ({vm.accel}, {vm.vcpus} vCPU, {vm.memory_mib} MiB): "
                f"CreateVm -> cloud-init finished {boot_seconds:.1f} s "
                f"(guest uptime {done.group(1).decode()} s, load {os.getloadavg()[0]:.1f})")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if capture is not None and reporter is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(line)
        p2 = tenant.api.call(tenant.api.ports.CreatePort, pb.CreatePortRequest(
            port=pb.Port(network_id=net.id, hostname="sshc")))
        client = NamespaceGuest(f"{ovs_cloud.prefix}-g-sshc", ovs_cloud.fabric, "gsshc")
        client.attach(net.vlan_id, p2.mac)
        client.dhcp()
        yield Booted(tenant, vm, key, known_hosts, client, hostname, marker, boot_seconds, log)
    finally:
        if client is not None:
            client.destroy()
        cloud_host.stub.DeleteVm(cpb.DeleteVmRequest(id=vm.id), metadata=tenant.md, timeout=60)
        tenant.close()


def test_user_data_runs_and_the_key_pair_logs_in(booted):
    r = booted.ssh("cat /var/lib/cloudnet-test/marker; hostname; "
                   "wget -qO- http://169.254.169.254/latest/meta-data/instance-id; echo; "
                   "cloud-init status --long")
    assert r.returncode == 0, r.stderr
    marker, hostname, ec2_instance_id, *status = r.stdout.splitlines()
    assert marker == booted.marker
    assert hostname == booted.hostname
    # EC2's address answers the guest too (through its gateway).
    assert ec2_instance_id == booted.vm.nics[0].port_id
    status_text = "\n".join(status)
    assert "status: done" in status_text, status_text
    # The datasource that found it all is CloudStack's, on the router.
    assert "DataSourceCloudStack" in status_text, status_text
    r = booted.ssh("cloud-init query instance_id")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == booted.vm.nics[0].port_id
    # Another key does not get in.
    other = booted.key + ".other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], check=True)
    r = subprocess.run(
        ["ip", "netns", "exec", booted.client.netns, "ssh", "-i", other,
         "-o", f"UserKnownHostsFile={booted.known_hosts}", "-o", "BatchMode=yes",
         "-o", "ConnectTimeout=20", f"debian@{booted.ip}", "true"],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 255, r.stderr
    assert "Permission denied" in r.stderr, r.stderr


def test_cli_waits_for_the_lease_of_an_image_that_is_not_ours(booted, cloud_host):
    """`cloudnet vm wait` (and `create --wait`) reads the lease off the
    network's router: a cloud image writes no lease lines of cloudnet's on
    its console."""
    assert b"CLOUDNET-LEASE" not in booted.console
    rc, _, err = run_cli(booted.tenant, cloud_host, "vm", "wait", booted.vm.id,
                         "--wait-timeout", "60")
    assert rc == 0, err
    assert f"booted {booted.vm.name}" in err
    assert f"{booted.vm.nics[0].mac} {booted.ip}" in err


# cloud-init's CloudStack datasource, run in the guest as at boot: it finds the
# router (data-server, then the DHCP server), crawls the metadata and asks the
# password server (wget with `DomU_Request: send_my_password`, then
# `saved_password` to acknowledge).
FETCH = """
import json
from cloudinit import stages
from cloudinit.sources.DataSourceCloudStack import DataSourceCloudStack
init = stages.Init()
init.read_cfg()
ds = DataSourceCloudStack(init.cfg, init.distro, init.paths)
assert ds.get_data()
print(json.dumps({"router": ds.vr_addr, "instance_id": ds.get_instance_id(),
                  "password": ds.get_config_obj().get("password")}))
"""


def test_a_reset_password_is_fetched_once_with_cloudstacks_protocol(booted):
    import json

    t = booted.tenant
    port = t.api.call(t.api.ports.GetPort, pb.GetPortRequest(id=booted.vm.nics[0].port_id))
    password = t.api.call(t.api.ports.ResetPortPassword,
                          pb.ResetPortPasswordRequest(id=port.id)).password
    assert password
    first = booted.ssh("sudo python3 -", stdin=FETCH)
    assert first.returncode == 0, first.stderr[-2000:]
    got = json.loads(first.stdout.strip().splitlines()[-1])
    net = t.api.call(t.api.networks.GetNetwork, pb.GetNetworkRequest(id=port.network_id))
    assert got == {"router": net.gateway, "instance_id": port.id, "password": password}
    # Acknowledged: a second fetch gets nothing.
    second = booted.ssh("sudo python3 -", stdin=FETCH)
    assert second.returncode == 0, second.stderr[-2000:]
    assert json.loads(second.stdout.strip().splitlines()[-1])["password"] is None
