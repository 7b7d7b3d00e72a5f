"""The VM router backend: each router of backend "vm" is an appliance VM.

netmgr places the router on a registered compute host (HostService) and asks
that host's compute agent (RouterVmService, admin token) for a VM from the
router image with NICs for control, public and each guest network, by MAC
(the router's MACs from the model; the control MAC and address from
``netmgr.store.router_vms``). The identity travels as SMBIOS OEM strings; the
token through a root-only file (``compute.router_vm``). Each VM router is its
own agent target: the reconciler asks `stub()` for it and pushes the whole
config once the agent answers. How its control address is reached (directly,
or relayed out of a control namespace) is the ``ControlNetwork`` the
composition root hands in (``vm_backend.control_network``).

A tend loop watches every VM router (one pass a second, a worker per router):

    deploying ─► booting ─► active ──(domain gone / not running)──► replacing
                   │           └─(agent silent > grace)──────────►    │
                   └─(not healthy within boot_timeout)────────────►  booting ...

A replacement is a new VM with the same NICs (MACs), control address and
config: the reconciler re-pushes everything, including every guest's static
DHCP host (MAC → IP), so a guest that renews keeps its address. A change of
the NIC set (a VPC tier added or removed) is hot-plugged into the running VM
(``vm_backend.nic_plan``), not a replacement.

Credentials: the agent's bearer token is HMAC-SHA256(router key, router ID /
credential generation). The router key is a 0600 file next to the admin
token; the store keeps only the generation and a SHA-256 of the token (to
check a token, e.g. a support question "is this the router's token?", never
to make one), so a copy of the database gives no access to any router. Each
(re)deploy bumps the generation: a replaced VM's token is dead.

A redundant router (``netmgr.store.redundancy``) has two VMs, instance 0
and instance 1, each tended like a router of its own (its own row, control
address and MAC, token, agent target) on two different compute hosts: a
replacement never goes to the host of the other instance (with no such
host it waits, FAILED, while the other instance serves). Both get the
router's config for their instance (``configbuild.redundancy``: instance
1's MACs derived, a sync NIC on the router's sync VLAN); the reconciler
pushes both (``redundant_push``). Made single again, instance 1's VM goes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import grpc
from cloudnet.compute.v1 import compute_pb2 as cpb
from cloudnet.compute.v1 import router_vm_pb2 as vpb
from cloudnet.compute.v1 import router_vm_pb2_grpc as vrpc
from cloudnet.router.v1 import agent_pb2 as apb
from cloudnet.router.v1 import agent_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common import grpc_errors as errors
from common.channels import make_channel
from common.tls import ROLE_AGENT, TlsFiles
from netmgr.model.core import Router, RouterBackend
from netmgr.model.redundancy import Redundancy
from netmgr.reconcile.configbuild.redundancy import instance_config
from netmgr.reconcile.configbuild.router import build_router_config
from netmgr.reconcile.store_view import RouterStore
from netmgr.reconcile.vm_backend.control_network import ControlNetwork
from netmgr.reconcile.vm_backend.credentials import (
    BearerAuth,
    RouterVmConfig,
    derive_token,
    load_key,
    token_hash,
)
from netmgr.reconcile.vm_backend.nic_plan import NicPlugger, config_nics
from netmgr.store.router_vms import RouterVm, RouterVmStore
from netmgr.store.tables.base import utcnow

log = logging.getLogger(__name__)

# A router whose VM could not be deployed is retried this often (seconds).
FAILED_RETRY = 10.0


# The end of a VM's detail while its host is down and the VM still answers.
STILL_ANSWERS = "; the VM still answers on the control network"


@dataclasses.dataclass
class _Live:
    """What this netmgr process knows of a router's current VM (of one
    instance of a redundant router)."""

    instance: int = 0
    token: str = ""
    target: str = ""
    channel: grpc.Channel | None = None
    # The channel with the router's token on every call (every service of the
    # VM's agent: RouterAgent, RouterEdge, RouterDiagnostics).
    auth_channel: grpc.Channel | None = None
    stub: agent_pb2_grpc.RouterAgentStub | None = None
    boot_id: str = ""
    silent_since: float = 0.0
    serving: bool = False
    busy: bool = False
    # The desired generation whose NIC set was last compared with the VM's.
    nics_generation: int = 0
    host: str = ""
    # The VM's NICs as its host last reported them (None: ask it).
    nics: list[vpb.RouterVmNic] | None = None
    nic_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class ComputeHost(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def address(self) -> str:
        """The gRPC target of the host's compute agent."""
        ...

    @property
    def role(self) -> str:
        """"compute" or "router" (a router agent's host: no VMs there)."""
        ...

    @property
    def state(self) -> str:
        """"up", "down" (silent past its grace) or "unknown" (never heartbeated)."""
        ...


class ComputeHosts(Protocol):
    """The registered compute hosts (``netmgr.api.hosts.HostStore``)."""

    def list(self) -> Sequence[ComputeHost]: ...


class RedundantRouterView(Protocol):
    """The redundant routers (``netmgr.store.redundancy.RedundancyStore``)."""

    def all(self) -> list[Redundancy]: ...


def vm_key(router_id: str, instance: int) -> str:
    """The name of one router VM's credentials and control relay: the
    router's ID, with ".1" for a redundant router's second VM."""
    return router_id if instance == 0 else f"{router_id}.{instance}"


class PushScheduler(Protocol):
    """What the backend tells the reconciler (``netmgr.reconcile.reconciler.Reconciler``)."""

    def notify(self, router_id: str) -> None:
        """Push the router now (its VM's agent just became healthy)."""
        ...

    def notify_later(self, router_id: str) -> None:
        """Push the router unless a push is already due or running."""
        ...

    def record_status(self, router_id: str, status: apb.RouterStatus) -> None: ...


class RouterVmBackend:
    def __init__(self, store: RouterStore, reconciler: PushScheduler, cfg: RouterVmConfig,
                 admin_token: str, *, vms: RouterVmStore, hosts: ComputeHosts,
                 control: ControlNetwork, compute_tls: TlsFiles | None = None,
                 redundancy: RedundantRouterView | None = None) -> None:
        """`vms`: the router VMs' rows (on `cfg.control_cidr`); `hosts`: where
        they may run; `control`: how their agents' control addresses are reached;
        `compute_tls`: netmgr's certificate for the compute agents (None: plaintext);
        `redundancy`: which routers have a second VM."""
        self.redundancy = redundancy
        self.compute_tls = compute_tls
        self.store = store
        self.reconciler = reconciler
        self.cfg = cfg
        self.vms = vms
        self.hosts = hosts
        self.key = load_key(cfg.key_file)
        self.admin_md = (("authorization", f"Bearer {admin_token}"),)
        self.control = control
        self.prefixlen = self.vms.cidr.prefixlen
        # (router ID, instance) -> its VM as this process knows it.
        self._live: dict[tuple[str, int], _Live] = {}
        self._compute: dict[str, tuple[str, grpc.Channel, vrpc.RouterVmServiceStub]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="router-vm")
        self._thread: threading.Thread | None = None
        self._ticks = 0
        # Hot-plug: the reconciler plugs a config's NICs before pushing it.
        self.nics = NicPlugger(self)
        # Whether this replica tends the router's VM (it holds the lease of
        # the router's shard: netmgr.store.leases); one netmgr tends them all.
        self.owns: Callable[[str], bool] = lambda router_id: True

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="router-vm", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for live in self._live.values():
                if live.channel is not None:
                    live.channel.close()
            for _, ch, _ in self._compute.values():
                ch.close()
        self.control.close()

    # ---------------------------------------------------------- for others

    def stub(self, router_id: str, instance: int = 0) -> agent_pb2_grpc.RouterAgentStub | None:
        """The agent of the router's VM (of that instance), once it answers (None before)."""
        with self._lock:
            live = self._live.get((router_id, instance))
            return live.stub if live is not None and live.serving else None

    def live(self, router_id: str, instance: int = 0) -> _Live | None:
        with self._lock:
            return self._live.get((router_id, instance))

    def tends(self, router_id: str) -> bool:
        """The router is one of this backend's (a VM router it has seen)."""
        with self._lock:
            return (router_id, 0) in self._live

    def channel(self, router_id: str, instance: int = 0) -> grpc.Channel | None:
        """An authenticated channel to the router VM's agent, once it answers."""
        with self._lock:
            live = self._live.get((router_id, instance))
            return live.auth_channel if live is not None and live.serving else None

    def console(self, router_id: str, offset: int) -> tuple[bytes, int, str]:
        vm = self.vms.get(router_id)
        if vm is None or not vm.host:
            raise errors.FailedPrecondition(f"router {router_id} has no VM yet")
        try:
            log_ = self._host_stub(vm.host).GetRouterVmConsole(vpb.GetRouterVmConsoleRequest(
                router_id=router_id, offset=offset), metadata=self.admin_md, timeout=10)
        except grpc.RpcError as e:
            raise errors.FailedPrecondition(
                f"compute host {vm.host}: {e.code().name}: {e.details()}") from e
        except LookupError as e:
            raise errors.FailedPrecondition(str(e)) from e
        return log_.data, log_.next_offset, vm.host

    # ------------------------------------------------------------- compute

    def _host_stub(self, host: str) -> vrpc.RouterVmServiceStub:
        address = next((h.address for h in self.hosts.list() if h.name == host), None)
        if address is None:
            raise LookupError(f"compute host {host!r} is not registered")
        with self._lock:
            cached = self._compute.get(host)
            if cached is not None and cached[0] == address:
                return cached[2]
            if cached is not None:
                cached[1].close()
            ch = make_channel(address, tls=self.compute_tls, role=ROLE_AGENT)
            stub = vrpc.RouterVmServiceStub(ch)
            self._compute[host] = (address, ch, stub)
            return stub

    def _place(self, vm: RouterVm, avoid: str = "") -> str:
        """The VM's host: its current one while registered and not DOWN, else
        the least loaded live compute host; never `avoid` (the host of the
        other instance of a redundant router)."""
        hosts = [h.name for h in self.hosts.list() if h.role != "router" and h.state != "down"
                 and h.name != avoid]
        if vm.host in hosts:
            return vm.host
        if not hosts:
            raise LookupError(
                f"no live compute host other than {avoid} (the other instance's) is registered"
                if avoid else "no live compute host is registered")
        load = self.vms.count_by_host()
        return min(hosts, key=lambda h: (load.get(h, 0), h))

    # ---------------------------------------------------------------- loop

    def _loop(self) -> None:
        while not self._stop.wait(self.cfg.interval):
            try:
                self.tick()
            except Exception:
                log.exception("router VM backend: tick failed")

    def tick(self) -> None:
        every = {r.id: r for r in self.store.list_routers_all()
                 if r.backend == RouterBackend.VM}
        routers = {rid: r for rid, r in every.items() if self.owns(rid)}
        reds = {r.router_id: r for r in (self.redundancy.all() if self.redundancy else [])
                if r.router_id in routers}
        for router_id, router in routers.items():
            for instance in (0, 1) if router_id in reds else (0,):
                with self._lock:
                    live = self._live.setdefault((router_id, instance), _Live(instance))
                    if live.busy:
                        continue
                    live.busy = True
                self._pool.submit(self._tend_guarded, router, live, reds.get(router_id))
        with self._lock:
            gone = [k for k, live in self._live.items() if not live.busy and (
                k[0] not in routers or (k[1] == 1 and k[0] not in reds))]
        for rid, instance in gone:
            # Deleted: its VM goes. Another replica's now: only forgotten here.
            # Made single again: its second VM goes.
            self._forget(rid, instance, delete_vm=rid not in every or rid in routers)
        self._ticks += 1
        if self._ticks % 10 == 1:
            self._sweep(set(routers), set(reds))

    def _forget(self, router_id: str, instance: int = 0, delete_vm: bool = True) -> None:
        """The router is gone (its network deleted), or its second VM (made
        single again): the VM goes now, not at the sweep."""
        with self._lock:
            live = self._live.pop((router_id, instance), None)
        if live is not None and live.channel is not None:
            live.channel.close()
        self.control.forget(vm_key(router_id, instance))
        host = live.host if live is not None else ""
        if instance == 1 and delete_vm:
            peer = self.vms.drop_peer(router_id)
            host = host or (peer.host if peer is not None else "")
        if host and delete_vm:
            self._pool.submit(self._delete_vm, host, router_id)

    def _sweep(self, wanted: set[str], redundant: set[str]) -> None:
        """Delete router VMs on any host whose router is gone (or not on that
        host: neither instance's)."""
        vms = self.vms.all()
        peers = self.vms.all(1)
        for host in self.hosts.list():
            try:
                stub = self._host_stub(host.name)
                held = stub.ListRouterVms(vpb.ListRouterVmsRequest(), metadata=self.admin_md,
                                          timeout=10).vms
            except (grpc.RpcError, LookupError):
                continue
            for v in held:
                if not self.owns(v.router_id):
                    continue  # another replica's to judge
                row, peer = vms.get(v.router_id), peers.get(v.router_id)
                if v.router_id in wanted and (
                        (row is not None and row.host == host.name)
                        or (v.router_id in redundant and peer is not None
                            and peer.host == host.name)):
                    continue
                log.info("router vm %s on %s: no router wants it, deleting", v.router_id,
                         host.name)
                try:
                    stub.DeleteRouterVm(vpb.DeleteRouterVmRequest(router_id=v.router_id),
                                        metadata=self.admin_md, timeout=60)
                except grpc.RpcError as e:
                    log.warning("router vm %s: delete failed: %s", v.router_id, e.code().name)

    def _tend_guarded(self, router: Router, live: _Live, red: Redundancy | None) -> None:
        try:
            self._tend(router, live, red)
        except Exception:
            log.exception("router %s: tending its VM failed", router.id)
        finally:
            with self._lock:
                live.busy = False

    def _down(self, host: str) -> bool:
        return any(h.name == host and h.state == "down" for h in self.hosts.list())

    def _tend(self, router: Router, live: _Live, red: Redundancy | None) -> None:
        i = live.instance
        vm = self.vms.ensure(router.id, i)
        live.host = vm.host
        if not live.token and vm.cred_generation:
            # A netmgr restart: adopt the running VM with its current token.
            self._connect(router.id, live, vm, derive_token(
                self.key, vm_key(router.id, i), vm.cred_generation))
        if vm.host and self._down(vm.host):
            if vm.state == "active" and self._alive(live):
                # Its host's agent fell silent, not the VM: the VM's own agent
                # answers on the control network. A copy on another host
                # would put a second VM with the same MACs and addresses on
                # the fabric beside it (a third VRRP speaker in a redundant
                # pair): it stays, and is made again only if it falls silent.
                if vm.detail != (why := f"its host {vm.host} is down{STILL_ANSWERS}"):
                    log.warning("router %s: VM %d left where it runs: %s", router.id, i, why)
                    self.vms.update(router.id, i, detail=why)
                live.silent_since = 0.0
                return
            # Its host fell silent past the grace, and the VM with it: made
            # again on a live one (same MACs and DHCP hosts: the model's);
            # the stale VM goes when the host is back (the sweep).
            self._deploy(router, live, vm, red, replacing=True,
                         why=f"its host {vm.host} is down")
            return
        if vm.detail.endswith(STILL_ANSWERS):
            self.vms.update(router.id, i, detail="")  # its host is back
        dom = self._domain(vm)
        if dom is not None and dom.state == cpb.VM_STATE_RUNNING and self._nics_changed(
                router, live, vm, dom, red):
            return
        if dom is None or dom.state != cpb.VM_STATE_RUNNING:
            if vm.state in ("booting", "active"):
                why = ("its domain is gone" if dom is None else
                       f"its domain is {cpb.VmState.Name(dom.state)}")
                self._deploy(router, live, vm, red, replacing=True, why=why)
            elif vm.state != "failed" or self._since(vm.defined_at) > FAILED_RETRY:
                self._deploy(router, live, vm, red, replacing=vm.state == "replacing",
                             why=vm.detail)
            return
        now = time.monotonic()
        # Liveness is gRPC health (no lock in the agent); ListRouterStatus waits
        # for a running apply, which takes seconds under TCG on a busy host.
        if self._alive(live):
            live.silent_since = 0.0
            if vm.state != "active" or not live.serving:
                # The first authenticated call proves the VM holds this token.
                status = self._status(live)
                if status is not None:
                    self._became_healthy(router, live, vm, status)
                elif vm.state != "booting":
                    self.vms.update(router.id, i, state="booting")
            else:
                status = self._status(live)
                if status is not None:
                    self._watch(router, live, status, red)
            return
        if vm.state == "active":
            # One missed answer on a loaded host is no reason to stop pushing:
            # only the grace period decides.
            live.silent_since = live.silent_since or now
            if now - live.silent_since > self.cfg.grace_seconds:
                self._deploy(router, live, vm, red, replacing=True,
                             why=f"its agent did not answer for {self.cfg.grace_seconds:.0f} s")
            return
        if self._since(vm.defined_at) > self.cfg.boot_timeout:
            log.warning("router %s: VM not healthy after %.0f s; its console ends:\n%s",
                        router.id, self.cfg.boot_timeout, self._console_tail(router.id))
            self._deploy(router, live, vm, red, replacing=True,
                         why=f"its agent was not healthy {self.cfg.boot_timeout:.0f} s "
                             "after the VM was defined")
        elif vm.state != "booting":
            self.vms.update(router.id, i, state="booting")

    def _console_tail(self, router_id: str, size: int = 2000) -> str:
        try:
            data, _, _ = self.console(router_id, 0)
        except errors.DomainError as e:
            return f"(no console: {e})"
        return data[-size:].decode(errors="replace")

    @staticmethod
    def _since(t: dt.datetime | None) -> float:
        return (dt.datetime.now(dt.UTC) - t).total_seconds() if t is not None else 1e9

    def _domain(self, vm: RouterVm) -> vpb.RouterVm | None:
        if not vm.host:
            return None
        try:
            domain: vpb.RouterVm = self._host_stub(vm.host).GetRouterVm(vpb.GetRouterVmRequest(
                router_id=vm.router_id), metadata=self.admin_md, timeout=10)
            return domain
        except LookupError:
            return None
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    def _alive(self, live: _Live) -> bool:
        if live.channel is None:
            return False
        try:
            reply = health_pb2_grpc.HealthStub(live.channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def _status(self, live: _Live) -> apb.RouterStatus | None:
        """The agent's status of its router (an authenticated call), None if silent."""
        if live.stub is None:
            return None
        try:
            reply = live.stub.ListRouterStatus(apb.ListRouterStatusRequest(), timeout=5)
        except grpc.RpcError:
            return None
        live.boot_id = live.boot_id or reply.boot_id
        if reply.boot_id != live.boot_id:
            log.info("agent of %s restarted (boot %s, was %s)",
                     reply.routers[0].router_id if reply.routers else "?", reply.boot_id,
                     live.boot_id)
            live.boot_id = reply.boot_id
            live.serving = False  # restarted agent: treat like a new boot
        return reply.routers[0] if reply.routers else apb.RouterStatus()

    def _became_healthy(self, router: Router, live: _Live, vm: RouterVm,
                        status: apb.RouterStatus) -> None:
        now = utcnow()
        fields: dict[str, Any] = {"state": "active"}
        if vm.state != "active":
            fields["healthy_at"] = now
            if vm.defined_at is not None:
                fields["boot_seconds"] = round(
                    (now.replace(tzinfo=dt.UTC) - vm.defined_at).total_seconds(), 2)
        self.vms.update(router.id, live.instance, **fields)
        with self._lock:
            live.serving = True
        log.info("router %s: VM %d's agent healthy on %s (%s)", router.id, live.instance,
                 vm.control_ip, fields.get("boot_seconds", "adopted"))
        self.reconciler.notify(router.id)

    def _nics_changed(self, router: Router, live: _Live, vm: RouterVm,
                      dom: vpb.RouterVm, red: Redundancy | None) -> bool:
        """A network added to or removed from the router (VPC tiers) changes its
        NICs: hot-plugged into the running VM (``nic_plan``); True
        when the host cannot, and the VM was replaced by one with the new set."""
        if router.desired_generation == live.nics_generation:
            return False
        live.nics_generation = router.desired_generation
        why = self.nics.tend(router, live, dom, list(self._spec(router, vm, red,
                                                                live.instance).nics))
        if not why:
            return False
        self._deploy(router, live, vm, red, replacing=True, why=why)
        return True

    def _watch(self, router: Router, live: _Live, status: apb.RouterStatus,
               red: Redundancy | None) -> None:
        """What the reconciler's resync does for host agents, for this VM's
        agent (a redundant router's instances are reported by the resync)."""
        if status.router_id and status.applied_generation and red is None:
            self.reconciler.record_status(router.id, status)
        rejected = status.rejected_generation == router.desired_generation
        if (status.applied_generation < router.desired_generation and not rejected) \
                or status.awaiting_secrets:
            self.reconciler.notify_later(router.id)

    def _connect(self, router_id: str, live: _Live, vm: RouterVm, token: str) -> None:
        target = self.control.target(vm_key(router_id, live.instance), vm.control_ip,
                                     self.cfg.agent_port)
        with self._lock:
            if live.channel is not None:
                live.channel.close()
            channel = grpc.insecure_channel(target, options=[
                # Short reconnect backoff: while the VM boots every attempt
                # fails, and the default (growing to minutes) would hide the
                # moment the agent starts listening.
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 1000),
                ("grpc.max_send_message_length", 64 * 1024 * 1024)])
            live.channel = channel
            live.auth_channel = grpc.intercept_channel(channel, BearerAuth(token))
            live.stub = agent_pb2_grpc.RouterAgentStub(live.auth_channel)
            live.token, live.target, live.boot_id = token, target, ""
            live.serving = False

    def _deploy(self, router: Router, live: _Live, vm: RouterVm, red: Redundancy | None, *,
                replacing: bool, why: str) -> None:
        i = live.instance
        try:
            # A redundant router's two VMs never share a host (a compute host
            # holds one VM per router ID): instance 1 is placed once instance
            # 0 is, each avoiding the other's host.
            other = self.vms.get(router.id, 1 - i) if red is not None else None
            if i == 1 and (other is None or not other.host):
                return  # the next pass, once instance 0 has its host
            host = self._place(vm, avoid=other.host if other is not None else "")
            spec = self._spec(router, vm, red, i)
        except (LookupError, errors.NotFound) as e:
            self.vms.update(router.id, i, state="failed", detail=str(e))
            return
        generation = vm.cred_generation + 1
        token = derive_token(self.key, vm_key(router.id, i), generation)
        spec.secret_oem_strings.append(f"cloudnet.token={token}")
        if replacing:
            log.warning("router %s: replacing its VM %d: %s", router.id, i, why)
            if red is None:  # a redundant router serves from its other VM meanwhile
                self.store.mark_router_unreachable(router.id, f"router VM replaced: {why}")
        with self._lock:
            live.serving = False
        live.nics = None
        self.vms.update(router.id, i, state="replacing" if replacing else "deploying",
                        detail=f"replacing: {why}" if replacing else "", host=host,
                        cred_generation=generation, token_sha256=token_hash(token),
                        replacements=vm.replacements + (1 if replacing else 0),
                        defined_at=utcnow(), healthy_at=None, boot_seconds=0.0)
        try:
            if vm.host and vm.host != host and not self._down(vm.host):
                self._delete_vm(vm.host, router.id)
            self._host_stub(host).CreateRouterVm(vpb.CreateRouterVmRequest(spec=spec),
                                                 metadata=self.admin_md, timeout=120)
        except (grpc.RpcError, LookupError) as e:
            msg = f"{e.code().name}: {e.details()}" if isinstance(e, grpc.RpcError) else str(e)
            log.warning("router %s: cannot deploy its VM on %s: %s", router.id, host, msg)
            self.vms.update(router.id, i, state="failed", detail=f"host {host}: {msg}")
            return
        self._connect(router.id, live, vm, token)
        live.host = host
        self.vms.update(router.id, i, state="booting", defined_at=utcnow())

    def _delete_vm(self, host: str, router_id: str) -> None:
        try:
            self._host_stub(host).DeleteRouterVm(vpb.DeleteRouterVmRequest(
                router_id=router_id), metadata=self.admin_md, timeout=60)
        except (grpc.RpcError, LookupError) as e:
            log.warning("router %s: deleting its VM on %s failed: %s", router_id, host, e)

    def _spec(self, router: Router, vm: RouterVm, red: Redundancy | None = None,
              instance: int = 0) -> vpb.RouterVmSpec:
        """NICs: control, then the config's interfaces (public, guests; a
        redundant router's sync link; instance 1's MACs its own), by MAC."""
        config = build_router_config(self.store.router_snapshot(router.id))
        if red is not None:
            config = instance_config(config, red, instance)
        nics = config_nics(config, vm.control_mac, self.cfg.control_vlan)
        return vpb.RouterVmSpec(
            router_id=router.id, image=self.cfg.image, vcpus=self.cfg.vcpus,
            memory_mib=self.cfg.memory_mib, nics=nics,
            oem_strings=[f"cloudnet.router_id={router.id}",
                         f"cloudnet.control_mac={vm.control_mac}",
                         f"cloudnet.control_address={vm.control_ip}/{self.prefixlen}",
                         f"cloudnet.agent_port={self.cfg.agent_port}"])
