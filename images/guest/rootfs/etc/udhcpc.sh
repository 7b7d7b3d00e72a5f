#!/bin/sh
# udhcpc event script: configure the lease and print a marker on the console.
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    if [ -n "$router" ] && ! ip route | grep -q '^default'; then
      for r in $router; do ip route add default via "$r" dev "$interface" && break; done
    fi
    if [ -n "$dns" ] && [ ! -s /etc/resolv.conf ]; then
      : > /etc/resolv.conf
      [ -n "$search$domain" ] && echo "search ${search:-$domain}" >> /etc/resolv.conf
      for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    fi
    echo "CLOUDNET-LEASE $1 iface=$interface mac=$(cat /sys/class/net/$interface/address) ip=$ip mask=$mask router=$router dns=$dns domain=$domain server=$serverid" > /dev/console
    ;;
esac
exit 0
