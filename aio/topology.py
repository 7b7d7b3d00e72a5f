"""The all-in-one's fixed addresses: the provider edge, the public range and
the "internet" host with its web server and upstream DNS (see aio.allinone)."""

from __future__ import annotations

EDGE_PUBLIC_IP = "203.0.113.1"
PUBLIC_PREFIXLEN = 24
EDGE_INET_IP = "198.51.100.1"
INET_HOST_IP = "198.51.100.10"
INET_DNS_IP = "198.51.100.53"
INET_PREFIXLEN = 24
PUBLIC_CIDR = "203.0.113.0/24"
WEB_PORT = 80
UPSTREAM_NAMES = {"www.example.test": INET_HOST_IP, "dns.example.test": INET_DNS_IP}

# IPv6, routed networks and BGP (docs/ipv6-and-bgp.md): the provider network's
# /64 and the edge's address on it, the internet host's IPv6, the pools the
# zone allocates networks' /64s and routed CIDRs from, and the ASNs: the
# edge's stock FRR (aio/bgp_edge.py) learns every router's routed prefixes.
PUBLIC_CIDR6 = "2001:db8:cb00::/64"
EDGE_PUBLIC_IP6 = "2001:db8:cb00::1"
INET_CIDR6 = "2001:db8:5100::/64"
EDGE_INET_IP6 = "2001:db8:5100::1"
INET_HOST_IP6 = "2001:db8:5100::10"
IPV6_POOL = "2001:db8:1000::/48"
ROUTED_POOL = "198.18.0.0/16"
EDGE_ASN = 64496
ZONE_ASN = 64512
