"""Router services: one class per daemon or kernel part (interfaces, nftables,
dnsmasq, haproxy, strongswan), each implementing ``base.Service``; the list
of them, in apply order, is ``registry.router_services``."""
