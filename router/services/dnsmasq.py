"""DHCP and DNS of a router's guest networks: one dnsmasq per router.

Ports are files, not config lines: each port has a file in `dhcp-hosts/`
(mac,ip,hostname) and one in `hosts/` (ip fqdn hostname), read by dnsmasq
through inotify (`--dhcp-hostsdir`, `--hostsdir`). Adding a port costs one
file and no signal. dnsmasq forgets a deleted or changed dhcp-hosts record
only on SIGHUP (man dnsmasq, --dhcp-hostsdir: the changed file's new record
is added beside the old one, which keeps answering), so removals and changes
(a renamed port too) send one; the SIGHUP also gives existing leases the
new name. `--hostsdir` drops removed names by itself. SIGHUP keeps the
leases; the lease of a removed port (or one whose address changed) is then
released (DHCPRELEASE, see dhcprelease.py) so its address and name are free
again. Other ports' leases are never touched.

dnsmasq is restarted only when its config file or command line change
(interfaces, ranges, options, upstreams). A still-running dnsmasq from before
an agent restart is adopted when its pid file, /proc cmdline and the recorded
fingerprint of its config all match.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import pwd
import re
import shutil
import signal
import stat
import tempfile
import time

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import metadata_pb2 as mpb

from common import dhcp_options
from router import objects
from router.errors import ApplyError, CheckError, ConfigError
from router.lib import dhcprelease, files, proc, templating, validate
from router.services.base import (
    NO_CAPABILITIES,
    Capabilities,
    CheckedText,
    Context,
    Rendered,
    RouterPaths,
)

log = logging.getLogger(__name__)

# The router answers for router.<domain> (its guest address) in every network.
ROUTER_HOSTNAME = "router"
# data-server.<domain>: the router (CloudStack's name for its metadata server).
DATA_SERVER = "data-server"
CONF = "dnsmasq.conf"
DHCP_HOSTS = "dhcp-hosts"
HOSTS = "hosts"
LEASES = "leases"  # in the dnsmasq directory (RouterPaths.dhcp_leases)
DEFAULT_LEASE_SECONDS = 86400
MIN_LEASE_SECONDS = 120  # dnsmasq silently raises shorter leases to 2 minutes


# A network's IPv6 mode -> dnsmasq's dhcp-range mode: RAs with the A flag
# only; A and O (DHCPv6 for DNS); M with DHCPv6 handing out only reservations.
IPV6_RANGE_MODES = {"slaac": "ra-only", "dhcpv6_stateless": "ra-stateless",
                    "dhcpv6_stateful": "static"}


def verify(cfg: pb.RouterConfig) -> None:
    ifaces = {i.name: i for i in cfg.interfaces}
    for server in cfg.dns.upstream_servers:
        validate.parse_ipv4("dns upstream server", server)
    for domain in cfg.dns.local_domains:
        if not validate.is_domain(domain):
            raise ConfigError(f"dns: local domain {domain!r} is not a valid DNS name")
    network_ids: set[str] = set()
    used_ifaces: set[str] = set()
    port_ids: set[str] = set()
    macs: dict[str, str] = {}
    fqdns: dict[str, str] = {}
    for net in cfg.guest_networks:
        validate.check_id("network", net.network_id)
        what, kid = f"network {net.network_id}", ("network", net.network_id)
        if net.network_id in network_ids:
            raise ConfigError(f"{what}: duplicate network", *kid)
        network_ids.add(net.network_id)
        iface = ifaces.get(net.interface)
        if iface is None or iface.role != pb.INTERFACE_ROLE_GUEST:
            raise ConfigError(f"{what}: {net.interface!r} is not a guest interface", *kid)
        if net.interface in used_ifaces:
            raise ConfigError(f"{what}: interface {net.interface} serves another network", *kid)
        used_ifaces.add(net.interface)
        cidr = validate.parse_ipv4_network(what, net.cidr, *kid)
        gateway = validate.parse_ipv4(what, net.gateway, *kid)
        if ipaddress.IPv4Interface(f"{gateway}/{cidr.prefixlen}") not in {
            ipaddress.IPv4Interface(a) for a in iface.addresses
        }:
            raise ConfigError(
                f"{what}: gateway {gateway}/{cidr.prefixlen} is not an address of {iface.name}",
                *kid,
            )
        if net.domain and not validate.is_domain(net.domain):
            raise ConfigError(f"{what}: domain {net.domain!r} is not a valid DNS name", *kid)
        for name in net.domain_search:
            if not validate.is_domain(name):
                raise ConfigError(f"{what}: search domain {name!r} is not a valid DNS name", *kid)
        for server in net.dns_servers:
            validate.parse_ipv4(f"{what}: dns server", server, *kid)
        validate.check_mtu(what, net.mtu)
        if net.lease_seconds and net.lease_seconds < MIN_LEASE_SECONDS:
            raise ConfigError(f"{what}: lease time under {MIN_LEASE_SECONDS} s", *kid)
        taken = {cidr.network_address, cidr.broadcast_address, gateway}
        for host in net.hosts:
            _verify_host(net, cidr, host, taken, port_ids, macs, fqdns)
    _verify_records(cfg, network_ids)


def _verify_host(
    net: pb.GuestNetwork, cidr: ipaddress.IPv4Network, host: pb.DhcpHost,
    taken: set[ipaddress.IPv4Address], port_ids: set[str], macs: dict[str, str],
    fqdns: dict[str, str],
) -> None:
    validate.check_id("port", host.port_id)
    what, kid = f"port {host.port_id}", ("port", host.port_id)
    if host.port_id in port_ids:
        raise ConfigError(f"{what}: duplicate port", *kid)
    port_ids.add(host.port_id)
    mac = validate.check_mac(what, host.mac, *kid)
    if mac in macs:
        raise ConfigError(f"{what}: MAC {mac} is also port {macs[mac]}", *kid)
    macs[mac] = host.port_id
    ip = validate.parse_ipv4(what, host.ip, *kid)
    if ip not in cidr:
        raise ConfigError(f"{what}: IP {ip} is outside network {cidr}", *kid)
    if ip in taken:
        raise ConfigError(f"{what}: IP {ip} is the network, broadcast, gateway or another port's",
                          *kid)
    taken.add(ip)
    if not validate.is_dns_label(host.hostname):
        raise ConfigError(f"{what}: hostname {host.hostname!r} is not a valid DNS label", *kid)
    if host.hostname.lower() == ROUTER_HOSTNAME:
        raise ConfigError(f"{what}: hostname {ROUTER_HOSTNAME!r} is the router's own name", *kid)
    _verify_options(what, kid, host)
    fqdn = f"{host.hostname}.{net.domain}".lower() if net.domain else host.hostname.lower()
    if fqdn in fqdns:
        raise ConfigError(f"{what}: name {fqdn} is also port {fqdns[fqdn]}", *kid)
    fqdns[fqdn] = host.port_id


def _verify_options(what: str, kid: tuple[str, str], host: pb.DhcpHost) -> None:
    """The port's DHCP options, checked again (common.dhcp_options) before
    any value reaches dnsmasq's file."""
    checked = []
    for o in host.options:
        option, problems = dhcp_options.check(dhcp_options.NAME_OF.get(o.number, ""), o.number,
                                              o.type, list(o.values))
        if option is None or option.values != tuple(o.values):
            reason = "; ".join(f"{part}: {why}" for part, why in problems) or "not normalised"
            raise ConfigError(f"{what}: DHCP option {o.number}: {reason}",
                              objects.DHCP_OPTIONS, kid[1])
        checked.append(option)
    problem = dhcp_options.check_all(checked)
    if problem is not None:
        raise ConfigError(f"{what}: DHCP options: {problem[1]}", objects.DHCP_OPTIONS, kid[1])


# The metadata server's address (router/services/metadata.py).
METADATA_ROUTE = "169.254.169.254/32"


def with_metadata_route(host: pb.DhcpHost, gateway: str) -> list[mpb.DhcpHostOption]:
    """The port's options, with a classless route (option 121) to the
    metadata server through the router when the port's guest would not
    send it there by itself: its own `router` option names another gateway
    (121 then also carries that default route, which a client given 121
    takes instead of option 3, RFC 3442), or its own classless routes
    (which the client uses instead of option 3) would not lead there: the
    route is added unless their longest match for the address already goes
    through the router, or is a host route of the port's own, or there is no
    room left in the option."""
    options = list(host.options)
    numbers = {o.number: o for o in options}
    route = f"{METADATA_ROUTE},{gateway}"
    if 121 in numbers:
        own = numbers[121]
        values = list(own.values)
        if _metadata_routed(values, gateway) or \
                dhcp_options.check("", 121, "routes", [*values, route])[0] is None:
            return options
        extended = mpb.DhcpHostOption(number=121, type=own.type, values=[*values, route])
        return [extended if o.number == 121 else o for o in options]
    if 3 in numbers and numbers[3].values and numbers[3].values[0] != gateway:
        return [*options, mpb.DhcpHostOption(number=121, type="routes", values=[
            route, f"0.0.0.0/0,{numbers[3].values[0]}"])]
    return options


def _metadata_routed(routes: list[str], gateway: str) -> bool:
    """Whether these classless routes decide the metadata address's way
    already: their longest match goes through the router, or is a host
    route for it (the port's choice)."""
    address = ipaddress.IPv4Address(METADATA_ROUTE.split("/")[0])
    best: tuple[int, str] | None = None
    for r in routes:
        dest, _, via = r.partition(",")
        net = ipaddress.IPv4Network(dest, strict=False)
        if address in net and (best is None or net.prefixlen > best[0]):
            best = (net.prefixlen, via)
    return best is not None and (best[1] == gateway or best[0] == 32)


def option_lines(net_tag: str, host: pb.DhcpHost, gateway: str = "") -> list[str]:
    """dnsmasq lines of one port's verified options: matched by the port's
    tag and its network's (two tags: dnsmasq prefers them over the network's
    own option of the same number)."""
    tags = f"tag:{net_tag},tag:{port_tag(host)}"
    lines = [object_mark(objects.DHCP_OPTIONS, host.port_id)]
    all_options = with_metadata_route(host, gateway) if gateway else list(host.options)
    options = {o.number: o for o in all_options}
    for o in all_options:
        # Each piece a safe token (a route is "<cidr>,<gateway>").
        values = [",".join(templating.safe_token(p) for p in v.split(",")) for v in o.values]
        if o.number == dhcp_options.NEXT_SERVER:
            boot = templating.safe_token(options[67].values[0])
            lines.append(f"dhcp-boot={tags},{boot},,{values[0]}")
            continue
        if o.type == "string":
            text = f'"{values[0]}"'  # quoted: a string that looks like an address stays text
        elif o.type in ("uint16", "uint32"):
            width = 2 if o.type == "uint16" else 4
            text = ":".join(f"{b:02x}" for b in int(values[0]).to_bytes(width, "big"))
        else:
            text = ",".join(values)
        lines.append(f"dhcp-option-force={tags},{o.number},{text}")
    return lines


def port_tag(host: pb.DhcpHost) -> str:
    return f"port-{host.port_id}"


# A comment line before the lines of each object a refusal can leave out, so
# that the line dnsmasq --test names leads back to its object.
_MARK = "# object "


def object_mark(kind: str, object_id: str) -> str:
    return f"{_MARK}{kind} {templating.safe_token(object_id)}"


_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_RECORD_NAME = re.compile(rf"(?=.{{1,253}}$)({_LABEL}\.)*{_LABEL}")
_TXT = re.compile(r"[A-Za-z0-9 ._:/@=+,;-]{1,255}")


def _verify_records(cfg: pb.RouterConfig, network_ids: set[str]) -> None:
    """Every DNS record, checked again before it reaches dnsmasq's file."""
    for r in cfg.dns_records:
        validate.check_id("dns record", r.id)
        what, kid = f"DNS record {r.id}", ("dnsrecord", r.id)
        if r.network_id:
            if r.network_id not in network_ids:
                raise ConfigError(f"{what}: not a network of the router", *kid)
        elif not r.vpc_id:  # else a VPC's record, served to every tier
            raise ConfigError(f"{what}: neither a network's nor a VPC's", *kid)
        if not _RECORD_NAME.fullmatch(r.name):
            raise ConfigError(f"{what}: name {r.name[:60]!r} is not a DNS name", *kid)
        try:
            if r.type == "A":
                ipaddress.IPv4Address(r.value)
            elif r.type == "AAAA":
                ipaddress.IPv6Address(r.value)
            elif r.type in ("CNAME", "PTR"):
                ok = bool(_RECORD_NAME.fullmatch(r.value))
                if r.type == "PTR":
                    ok = ok and r.name.endswith(".in-addr.arpa")
                if not ok:
                    raise ValueError
            elif r.type == "TXT":
                if not _TXT.fullmatch(r.value):
                    raise ValueError
            elif r.type == "SRV":
                *numbers, target = r.value.split(" ")
                if len(numbers) != 3 or not all(n.isdigit() and int(n) <= 65535
                                                for n in numbers) \
                        or not _RECORD_NAME.fullmatch(target):
                    raise ValueError
            else:
                raise ConfigError(f"{what}: type {r.type[:10]!r} is not served", *kid)
        except ValueError:
            raise ConfigError(f"{what}: {r.type} value {r.value[:60]!r} is not valid",
                              *kid) from None


def record_lines(cfg: pb.RouterConfig) -> list[str]:
    """dnsmasq lines of the verified DNS records."""
    lines: list[str] = []
    for r in cfg.dns_records:
        lines.append(object_mark("dnsrecord", r.id))
        name = templating.safe_token(r.name)
        if r.type in ("A", "AAAA"):
            lines.append(f"host-record={name},{templating.safe_token(r.value)}")
        elif r.type == "CNAME":
            lines.append(f"cname={name},{templating.safe_token(r.value)}")
        elif r.type == "PTR":
            lines.append(f"ptr-record={name},{templating.safe_token(r.value)}")
        elif r.type == "TXT":
            lines.append(f'txt-record={name},"{r.value}"')  # verified: no quote or backslash
        else:  # SRV
            priority, weight, port, target = r.value.split(" ")
            lines.append(f"srv-host={name},{templating.safe_token(target)},{int(port)},"
                         f"{int(priority)},{int(weight)}")
    return lines


def relative_domains(cfg: pb.RouterConfig, net: pb.GuestNetwork) -> list[str]:
    """The network's domain relative to each local domain it is under:
    ["db"] for db.<vpc domain>, so that its hosts answer as db1.db too."""
    domain = net.domain.lower()
    return sorted({domain[:-len(d) - 1] for d in (x.lower() for x in cfg.dns.local_domains)
                   if domain.endswith("." + d)})


def render(cfg: pb.RouterConfig) -> Rendered:
    if not cfg.guest_networks:
        return {}
    networks = [
        {
            "network_id": n.network_id, "interface": n.interface, "tag": f"net-{n.interface}",
            "cidr": n.cidr, "gateway": n.gateway, "domain": n.domain,
            "dns_servers": list(n.dns_servers) or [n.gateway],
            "domain_search": list(n.domain_search), "mtu": n.mtu,
            "lease_seconds": n.lease_seconds or DEFAULT_LEASE_SECONDS,
            "ipv6_cidr": n.ipv6_cidr, "ipv6_gateway": n.ipv6_gateway,
            "ipv6_mode": n.ipv6_mode, "tag6": f"net6-{n.interface}",
            "ipv6_range_mode": IPV6_RANGE_MODES.get(n.ipv6_mode, ""),
            # The metadata server's name, unless a port took it first.
            "data_server": not any(h.hostname.lower() == DATA_SERVER for h in n.hosts),
        }
        for n in sorted(cfg.guest_networks, key=lambda n: n.interface)
    ]
    port_options = [line for n in sorted(cfg.guest_networks, key=lambda n: n.interface)
                    for h in n.hosts if h.options
                    for line in option_lines(f"net-{n.interface}", h, n.gateway)]
    out = {
        CONF: templating.render(
            "dnsmasq/dnsmasq.conf.j2", generator=f"{__name__} (router {cfg.router_id})",
            networks=networks, port_options=port_options, records=record_lines(cfg),
            upstream_servers=list(cfg.dns.upstream_servers),
            local_domains=sorted({d.lower() for d in cfg.dns.local_domains}
                                 - {n.domain.lower() for n in cfg.guest_networks}),
        )
    }
    for net in cfg.guest_networks:
        relative = relative_domains(cfg, net)
        for h in net.hosts:
            names = ([f"{h.hostname}.{net.domain}", h.hostname,
                      *(f"{h.hostname}.{r}" for r in relative)]
                     if net.domain else [h.hostname])
            tag = [f"set:{port_tag(h)}"] if h.options else []
            # A stateful DHCPv6 reservation rides on the same host line.
            fields = [templating.safe_token(v) for v in (h.mac.lower(), *tag, h.ip)]
            if net.ipv6_cidr and net.ipv6_mode == "dhcpv6_stateful" and h.ipv6:
                fields.append(f"[{templating.safe_token(h.ipv6)}]")
            out[f"{DHCP_HOSTS}/{h.port_id}"] = ",".join(
                [*fields, templating.safe_token(h.hostname)]) + "\n"
            # AAAA and PTR records: the port's IPv6 (reserved or EUI-64).
            lines = [(h.ip, *names)]
            if net.ipv6_cidr and h.ipv6:
                lines.append((h.ipv6, *names))
            out[f"{HOSTS}/{h.port_id}"] = "".join(
                " ".join(templating.safe_token(v) for v in line) + "\n" for line in lines)
    return out


# ---- process management ----------------------------------------------------

def _dir(ctx: Context, *parts: str) -> str:
    return ctx.paths.dnsmasq(*parts)


def _argv(ctx: Context, conf_path: str, user: str) -> list[str]:
    return [
        "dnsmasq",
        f"--conf-file={conf_path}",
        f"--pid-file={_dir(ctx, 'dnsmasq.pid')}",
        f"--dhcp-leasefile={ctx.paths.dhcp_leases}",
        f"--dhcp-hostsdir={_dir(ctx, DHCP_HOSTS)}",
        f"--hostsdir={_dir(ctx, HOSTS)}",
        f"--log-facility={_dir(ctx, 'dnsmasq.log')}",
        f"--user={user}",
    ]


def _user(ctx: Context) -> str:
    """The configured user, or root when that user could not read our files.

    dnsmasq drops privileges before it reads the host directories (inotify),
    so every directory above them must be searchable by that user.
    """
    try:
        pw = pwd.getpwnam(ctx.dnsmasq_user)
    except KeyError:
        return "root"
    path = os.path.abspath(_dir(ctx))
    while True:
        st = os.stat(path)
        bit = (stat.S_IXUSR if st.st_uid == pw.pw_uid else
               stat.S_IXGRP if st.st_gid == pw.pw_gid else stat.S_IXOTH)
        if not st.st_mode & bit:
            log.warning("dnsmasq user %s cannot search %s; running dnsmasq as root",
                        ctx.dnsmasq_user, path)
            return "root"
        if path == "/":
            return ctx.dnsmasq_user
        path = os.path.dirname(path)


def _fingerprint(conf: str, argv: list[str]) -> str:
    return hashlib.sha256((conf + "\0" + "\0".join(argv)).encode()).hexdigest()


def running_pid(ctx: Context) -> int | None:
    return proc.pid_running(_dir(ctx, "dnsmasq.pid"), f"--conf-file={_dir(ctx, CONF)}")


def _stop(ctx: Context) -> None:
    pid = running_pid(ctx)
    if pid is None:
        return
    proc.stop(pid)
    files.remove(_dir(ctx, "dnsmasq.pid"))


# What dnsmasq says when a host limit stops it, and the limit (it names
# none: "Too many open files" is also the per-process fd limit).
INOTIFY_LIMITS = (
    ("failed to create inotify:", "fs.inotify.max_user_instances",
     "inotify instances per user: every router's dnsmasq takes one"),
    ("inotify", "fs.inotify.max_user_watches", "inotify watches per user"),
)


def limit_hint(output: str, user: str, proc_sys: str = "/proc/sys") -> str:
    """The host limit a failed start hit, with its value (or "")."""
    for words, limit, what in INOTIFY_LIMITS:
        if words in output:
            try:
                with open(os.path.join(proc_sys, *limit.split("."))) as f:
                    value = f.read().strip()
            except OSError:
                value = "?"
            return f" (host limit {limit} = {value} {what}, shared by user {user})"
    return ""


def _start(ctx: Context, argv: list[str], user: str = "") -> None:
    files.remove(_dir(ctx, "dnsmasq.pid"))
    try:
        proc.run(argv, netns=ctx.netns)  # dnsmasq daemonizes; errors come back here
    except proc.CommandError as e:
        out = e.output.strip()
        raise ApplyError(f"dnsmasq: cannot start: {out}{limit_hint(out, user)}") from e
    deadline = time.monotonic() + 5
    while (pid := running_pid(ctx)) is None:
        if time.monotonic() > deadline:
            raise ApplyError("dnsmasq: started but wrote no pid file")
        time.sleep(0.02)
    proc.write_record(ctx.paths.record("dnsmasq"), pid)


# ---- check and apply -----------------------------------------------------------

def check(ctx: Context, rendered: Rendered) -> None:
    if CONF not in rendered:
        return
    with tempfile.NamedTemporaryFile("w", prefix=".check-", dir=ctx.state_dir) as f:
        f.write(rendered[CONF])
        f.flush()
        try:
            proc.run([*_argv(ctx, f.name, "root"), "--test"])
        except proc.CommandError as e:
            raise refusal(rendered[CONF], e.output) from e


_AT_LINE = re.compile(r"dnsmasq: (?P<why>.{1,200}?) at line (?P<line>\d+) of ")
_CNAME_LOOP = re.compile(r"dnsmasq: (?P<why>CNAME loop involving (?P<name>[^\s]{1,253}))")


def refusal(conf: str, output: str) -> CheckError:
    """dnsmasq --test's refusal, naming the object whose line it refused (a
    DNS record, a port's DHCP options) when it leads back to one: that object
    alone is then left out (``router.objects``)."""
    lines = conf.splitlines()
    if (m := _AT_LINE.search(output)) is not None:
        number = int(m["line"])
        why = m["why"]
        line = lines[number - 1] if 0 < number <= len(lines) else ""
        # The nearest mark above the line, within its block.
        for above in reversed(lines[:number - 1] if line else []):
            if not above.strip() or (above.startswith("#") and not above.startswith(_MARK)):
                break
            if above.startswith(_MARK):
                kind, _, object_id = above.removeprefix(_MARK).partition(" ")
                return CheckError(f"refused by dnsmasq: {why} ({line[:80]!r})", kind, object_id)
        return CheckError(f"dnsmasq: config refused by dnsmasq --test: {why} ({line[:80]!r})")
    if (m := _CNAME_LOOP.search(output)) is not None:
        name = m["name"].lower().removesuffix(".")
        for i, text in enumerate(lines):
            if text.lower().startswith(f"cname={name},") and i and lines[i - 1].startswith(_MARK):
                kind, _, object_id = lines[i - 1].removeprefix(_MARK).partition(" ")
                return CheckError(f"refused by dnsmasq: {m['why']}", kind, object_id)
    return CheckError(f"dnsmasq: config refused by dnsmasq --test: {output.strip()[-300:]}")


def apply(ctx: Context, cfg: pb.RouterConfig, rendered: Rendered) -> None:
    if CONF not in rendered:
        remove(ctx, keep_leases=True)
        return
    for sub in (DHCP_HOSTS, HOSTS):
        os.makedirs(_dir(ctx, sub), mode=0o755, exist_ok=True)
    reread, dropped = _sync_host_files(ctx, rendered)
    user = _user(ctx)
    conf_path = _dir(ctx, CONF)
    argv = _argv(ctx, conf_path, user)
    fingerprint = _fingerprint(rendered[CONF], argv)
    pid = running_pid(ctx)
    if pid is not None and files.read_text(_dir(ctx, "running")) == fingerprint:
        if reread:
            log.info("router %s: SIGHUP dnsmasq %d (hosts removed or changed)", ctx.router_id, pid)
            proc.os_kill(pid, signal.SIGHUP)
            _release_leases(ctx, cfg, dropped)
        return
    files.write_if_changed(conf_path, rendered[CONF])
    log.info("router %s: (re)starting dnsmasq", ctx.router_id)
    _stop(ctx)
    files.remove(_dir(ctx, "running"))
    _start(ctx, argv, user)
    files.write_if_changed(_dir(ctx, "running"), fingerprint)
    _release_leases(ctx, cfg, dropped)


def _sync_host_files(ctx: Context, rendered: Rendered) -> tuple[bool, list[tuple[str, str]]]:
    """Make the host directories hold exactly the rendered files.

    Returns whether a dhcp-hosts record was removed or changed (a new
    hostname too): dnsmasq adds the records of new and changed files through
    inotify but drops an old one only on SIGHUP, which also renames the
    leases of changed hosts (the name a lease gave in DNS). And the (mac, ip)
    of every record gone, whose lease must be released.
    """
    reread = False
    dropped: list[tuple[str, str]] = []
    for sub in (DHCP_HOSTS, HOSTS):
        for name in os.listdir(_dir(ctx, sub)):
            rel = f"{sub}/{name}"
            if name.startswith(".") or rendered.get(rel) is not None:
                continue
            if sub == DHCP_HOSTS:
                reread = True
                dropped += _records(files.read_text(_dir(ctx, rel)))
            files.remove(_dir(ctx, rel))
    for rel, text in rendered.items():
        if rel == CONF:
            continue
        old = files.read_text(_dir(ctx, rel))
        if files.write_if_changed(_dir(ctx, rel), text) and rel.startswith(DHCP_HOSTS + "/") \
                and old is not None:
            reread = True
            dropped += [r for r in _records(old) if r not in _records(text)]
    return reread, dropped


def _records(text: str | None) -> list[tuple[str, str]]:
    """(mac, ip) of a dhcp-hosts file's lines ("mac,ip,hostname")."""
    out = []
    for line in (text or "").splitlines():
        fields = line.split(",")
        if len(fields) >= 2:
            out.append((fields[0], fields[1]))
    return out


def _release_leases(ctx: Context, cfg: pb.RouterConfig, dropped: list[tuple[str, str]]) -> None:
    for mac, ip in dropped:
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            continue
        net = next((n for n in cfg.guest_networks if addr in ipaddress.IPv4Network(n.cidr)), None)
        if net is None:
            continue  # its network is gone with its interface; the lease just expires
        try:
            dhcprelease.release(ctx.netns, net.interface, net.gateway, ip, mac)
        except OSError as e:
            log.warning("router %s: cannot release lease %s %s: %s", ctx.router_id, ip, mac, e)


def remove(ctx: Context, keep_leases: bool) -> None:
    """Stop dnsmasq and delete its files (the lease file survives if asked)."""
    _stop(ctx)
    top = _dir(ctx)
    if not os.path.isdir(top):
        return
    for name in os.listdir(top):
        if keep_leases and name == LEASES:
            continue
        path = os.path.join(top, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            files.remove(path)


class Dnsmasq:
    """``base.Service``: DHCP and DNS of the router's guest networks."""

    name = "dnsmasq"
    capabilities: Capabilities = NO_CAPABILITIES

    def __init__(self) -> None:
        self._checked = CheckedText()

    def verify(self, cfg: pb.RouterConfig) -> None:
        verify(cfg)

    def render(self, cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
        return render(cfg)

    def check(self, ctx: Context, rendered: Rendered) -> None:
        if CONF in rendered:  # --test reads the config, not the hosts files
            self._checked.check(rendered[CONF], lambda: check(ctx, rendered))

    def apply(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
              previous: pb.RouterConfig | None) -> None:
        apply(ctx, cfg, rendered)

    def health(self, ctx: Context, cfg: pb.RouterConfig) -> pb.ServiceStatus:
        if not cfg.guest_networks:
            return pb.ServiceStatus(name=self.name, healthy=True, detail="no guest networks",
                                    version=proc.version("dnsmasq"))
        pid = running_pid(ctx)
        return pb.ServiceStatus(
            name=self.name, healthy=pid is not None, version=proc.version("dnsmasq"),
            detail=f"running, pid {pid}" if pid else "not running",
        )

    def remove(self, ctx: Context, cfg: pb.RouterConfig | None, keep_leases: bool) -> None:
        remove(ctx, keep_leases)
