"""One router's runtime: verify, render, check and apply its config, keep the last good one.

    apply(cfg):  verify every service  -> reject whole on ConfigError
                 render every service  -> diff against what each last applied
                 check the changed ones (nft -c, dnsmasq --test) -> reject whole
                 apply the changed ones, in order: interfaces, nftables, dnsmasq
                 persist cfg as config.pb (the last good config)

A service whose rendered files equal what it last applied is not touched at
all, so pushing the same config twice rewrites no file, signals no daemon and
reloads no ruleset.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from types import ModuleType

from cloudnet.router.v1 import agent_pb2 as pb

from common import netlink
from common.fabric.base import FabricError
from common.netns import ensure_netns, remove_netns
from router.errors import ApplyError, ConfigError
from router.lib import files, proc
from router.services import Context, dnsmasq, haproxy, interfaces, strongswan
from router.services.nftables import delta as edge_delta
from router.services.nftables import service as nftables

log = logging.getLogger(__name__)

# Apply order: links and addresses first (nft and dnsmasq refer to them).
SERVICES: tuple[ModuleType, ...] = (interfaces, nftables, dnsmasq, haproxy, strongswan)
CONFIG_FILE = "config.pb"
# What can go wrong while applying a valid config; anything else is a bug.
APPLY_ERRORS = (ApplyError, netlink.NetlinkOpError, FabricError, proc.CommandError, OSError)


def router_netns_name(prefix: str, router_id: str) -> str:
    """Name of the network namespace that holds router `router_id` on a host."""
    return f"{prefix}r-{router_id[:12]}"


def verify(cfg: pb.RouterConfig) -> None:
    """Every service's verify(); raises the first ConfigError."""
    for service in SERVICES:
        service.verify(cfg)


def load_config(path: str) -> pb.RouterConfig:
    with open(path, "rb") as f:
        return pb.RouterConfig.FromString(f.read())


class RouterRuntime:
    """The running state of one router; apply() and delete() are serialised by `lock`."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.lock = threading.Lock()
        self.config: pb.RouterConfig | None = None  # the last good config
        self._applied: dict[str, dict[str, str]] = {}  # service -> rendered files it runs
        self.rejected_generation = 0
        self.last_error = ""
        self._error_object: pb.ObjectStatus | None = None
        self.apply_seconds = 0.0
        # How often each service's apply() ran: the proof that a no-op is one.
        self.service_applies: dict[str, int] = {s.NAME: 0 for s in SERVICES}

    def apply(self, cfg: pb.RouterConfig) -> pb.RouterStatus:
        with self.lock:
            self._apply(cfg)
            return self.status()

    def _apply(self, cfg: pb.RouterConfig) -> None:
        started = time.monotonic()
        try:
            verify(cfg)
        except ConfigError as e:
            self._reject(cfg, e)
            return
        os.makedirs(self.ctx.state_dir, mode=0o755, exist_ok=True)
        ensure_netns(self.ctx.netns)
        rendered = {s.NAME: s.render(cfg) for s in SERVICES}
        changed = [s for s in SERVICES if self._applied.get(s.NAME) != rendered[s.NAME]]
        # Seconds per changed service (check + apply): in the log, because
        # under TCG (router VMs) one slow daemon check dominates an apply.
        took = {s.NAME: 0.0 for s in changed}
        rendered_at = time.monotonic()
        try:
            for service in changed:
                t0 = time.monotonic()
                service.check(self.ctx, rendered[service.NAME])
                took[service.NAME] += time.monotonic() - t0
        except ConfigError as e:
            self._reject(cfg, e)
            return
        for service in changed:
            t0 = time.monotonic()
            try:
                service.apply(self.ctx, cfg, rendered[service.NAME], self.config)
            except APPLY_ERRORS as e:
                # Not a rejection: the config is valid and a retry may work.
                # The service's state is unknown now, so the next apply redoes it.
                self._applied.pop(service.NAME, None)
                self.last_error = f"generation {cfg.generation}: {service.NAME}: {e}"
                log.error("router %s: %s", cfg.router_id, self.last_error)
                return
            finally:
                self.service_applies[service.NAME] += 1
                took[service.NAME] += time.monotonic() - t0
            self._applied[service.NAME] = rendered[service.NAME]
        if self.config != cfg:
            files.write_if_changed_bytes(self.ctx.path(CONFIG_FILE), cfg.SerializeToString(),
                                         mode=0o600)
        self.config = cfg
        self.rejected_generation, self.last_error, self._error_object = 0, "", None
        edge_delta.full_applied(self)
        self.apply_seconds = time.monotonic() - started
        if changed:
            log.info("router %s: generation %d applied (%s) in %.3f s (render %.3f s)",
                     cfg.router_id, cfg.generation,
                     ", ".join(f"{n} {t:.3f} s" for n, t in took.items()),
                     self.apply_seconds, rendered_at - started)

    def repair(self) -> list[str]:
        """Re-apply, from the last good config, every service whose health
        check fails (a dnsmasq that died, a table someone deleted).

        Pushing the same config again would not do it: an unchanged config
        is a no-op by design. Returns the names of the services repaired.
        """
        with self.lock:
            if self.config is None:
                return []
            sick = [s.NAME for s in SERVICES if not s.health(self.ctx, self.config).healthy]
            if not sick:
                # Active VPN connections without an IKE SA (the peer refused
                # or was away): initiate again.
                strongswan.tend(self.ctx, self.config)
                return []
            log.warning("router %s: repairing %s", self.ctx.router_id, ", ".join(sick))
            for name in sick:
                self._applied.pop(name, None)
            self._apply(self.config)
            return sick

    def _reject(self, cfg: pb.RouterConfig, e: ConfigError) -> None:
        self.rejected_generation = cfg.generation
        self.last_error = f"generation {cfg.generation} rejected: {e}"
        self._error_object = (
            pb.ObjectStatus(kind=e.kind, id=e.object_id, ok=False, error=str(e))
            if e.kind and e.object_id else None
        )
        log.warning("router %s: %s", cfg.router_id, self.last_error)

    def status(self) -> pb.RouterStatus:
        cfg = self.config or pb.RouterConfig(router_id=self.ctx.router_id)
        objects = [
            pb.ObjectStatus(kind="network", id=n.network_id, ok=True) for n in cfg.guest_networks
        ] + [
            pb.ObjectStatus(kind="port", id=h.port_id, ok=True)
            for n in cfg.guest_networks for h in n.hosts
        ]
        if self._error_object is not None:
            bad = self._error_object
            objects = [o for o in objects if (o.kind, o.id) != (bad.kind, bad.id)] + [bad]
        services = [s.health(self.ctx, cfg) for s in SERVICES
                    if getattr(s, "serves", lambda _cfg: True)(cfg)] if self.config else []
        return pb.RouterStatus(
            router_id=self.ctx.router_id,
            applied_generation=cfg.generation,
            rejected_generation=self.rejected_generation,
            last_error=self.last_error,
            services=services,
            objects=objects,
            apply_seconds=self.apply_seconds,
            lb_members=haproxy.member_status(self.ctx, cfg) if self.config else [],
            vpn_connections=strongswan.connection_status(self.ctx, cfg) if self.config else [],
        )

    def delete(self, keep_leases: bool) -> None:
        """Stop the daemons, unplug the interfaces, remove the namespace and files."""
        with self.lock:
            strongswan.remove(self.ctx, self.config)
            haproxy.remove(self.ctx, self.config)
            dnsmasq.remove(self.ctx, self.config, keep_leases=keep_leases)
            interfaces.remove(self.ctx, self.config)
            nftables.remove(self.ctx, self.config)
            edge_delta.forget(self)
            remove_netns(self.ctx.netns)
            self._remove_files(keep_leases)
            self.config, self._applied = None, {}
            self.rejected_generation, self.last_error, self._error_object = 0, "", None

    def _remove_files(self, keep_leases: bool) -> None:
        top = self.ctx.state_dir
        if not os.path.isdir(top):
            return
        leases = os.path.join(top, "dnsmasq", dnsmasq.LEASES)
        if keep_leases and os.path.exists(leases):
            for name in os.listdir(top):
                if name != "dnsmasq":
                    path = os.path.join(top, name)
                    if os.path.isdir(path):
                        shutil.rmtree(path)
                    else:
                        files.remove(path)
            return
        shutil.rmtree(top)
