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
