#!/bin/sh
# Runs "$@" as root of a fresh user and network namespace, for a non-root
# user's test run (dev.py starts it under `unshare --user --map-root-user
# --net --mount`). Everything set up here lives and dies with that namespace.
set -eu

# The network: loopback, plus an interface of its own, because WebRTC peers
# offer no loopback candidates (aioice and Chromium skip lo). A veth pair
# whose both ends stay inside, with an address from a documentation range
# (TEST-NET-2): nothing sent there leaves the namespace.
ip link set lo up
ip link add host0 type veth peer name host1
# IPv4 only: no link-local IPv6 addresses for ICE to gather and bind, so a
# session holds as many sockets here as on a host with one address.
echo 1 > /proc/sys/net/ipv6/conf/host0/disable_ipv6
echo 1 > /proc/sys/net/ipv6/conf/host1/disable_ipv6
ip link set host1 up
ip link set host0 up
ip addr add 198.51.100.1/24 dev host0
ip route add default dev host0

# Our own /run, for `ip netns`.
mount -t tmpfs tmpfs /run

# The network lab writes /etc/netns/<ns>/hosts, and /etc is not ours: a
# tmpfs /etc of links to the real entries, plus a netns folder of our own.
# No DNS server is reachable from here, so resolv.conf is empty: an unknown
# name fails at once, as on an offline machine, instead of timing out.
mkdir /run/etc
mount --rbind /etc /run/etc
mount -t tmpfs tmpfs /etc
for entry in /run/etc/* /run/etc/.[!.]*; do
    if [ -e "$entry" ]; then ln -s "$entry" /etc/; fi
done
rm -f /etc/netns /etc/resolv.conf
mkdir /etc/netns
touch /etc/resolv.conf

exec "$@"
