#!/bin/sh
# /sbin/init of a Proximity local LXC container (PID 1, run by busybox sh).
#
# The container is a busybox rootfs built by proximity.containers.lxc. This init:
#   1. mounts /proc, /sys, /tmp and /run if LXC has not mounted them already;
#   2. brings up lo; for the net0 interface (name in /etc/proximity/net0.env):
#        ip=dhcp   -> busybox udhcpc in the background (it keeps renewing; no -q),
#                     with /usr/share/udhcpc/default.script (bound/renew: address,
#                     default route, /etc/resolv.conf);
#        ip=CIDR   -> nothing to do: LXC has set lxc.net.0.ipv4.address/gateway
#                     before init runs (init only checks and logs it);
#        ip6=dhcp  -> dhcpcd (DHCPv6 only, /etc/dhcpcd.conf) in the background;
#        ip6=auto  -> SLAAC by the kernel (accept_ra), no client;
#        with either, optimistic DAD and a 250 ms RetransTimer (see fast_ipv6);
#        ip6=CIDR  -> LXC has set lxc.net.0.ipv6.address/gateway;
#   3. serves /www on port 80 with busybox httpd (the stand-in application);
#   4. waits for SIGTERM (lxc.signal.halt), SIGPWR (LXC's default halt signal) or
#      SIGINT (lxc.signal.reboot) and exits, which ends the container at once.
# Its own output goes to /var/log/ct-init.log inside the container.

PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 022

mkdir -p /var/log
exec >>/var/log/ct-init.log 2>&1
echo "ct-init: starting as pid $$ on $(hostname)"

mounted() {
	# mounted DIR: true if DIR is a mount point (reads /proc/mounts when /proc is up)
	[ -r /proc/mounts ] && grep -q " $1 " /proc/mounts
}

[ -r /proc/mounts ] || mount -t proc proc /proc
mounted /sys || mount -t sysfs -o ro sysfs /sys 2>/dev/null
mounted /tmp || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mounted /run || mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run

ip link set lo up

fast_ipv6() {
	# fast_ipv6 IFACE: what the kernel offers to get IPv6 going quickly, without skipping DAD:
	# optimistic DAD (RFC 4429) makes the link-local and SLAAC addresses usable while DAD runs,
	# and no random delay (up to router_solicitation_delay, 1 s) comes before the first DAD probe.
	# RetransTimer, how long DAD (and neighbour discovery) waits for an answer, is 250 ms instead
	# of RFC 4861's 1 s default: the link is a local bridge whose round trip is well under 1 ms.
	# It is the value a router advertises for its link (RFC 4861 6.2.1); dnsmasq's RAs leave it
	# unspecified. DAD still sends its probe for every address, the DHCPv6 one included.
	# LXC brought the link up before init ran, so it goes down first: IPv6 then starts again
	# under these settings. (Down drops the IPv4 routes LXC set: the static case restores them.)
	conf=/proc/sys/net/ipv6/conf/$1
	ip link set "$1" down
	for setting in optimistic_dad=1 use_optimistic=1 router_solicitation_delay=0 accept_ra=1; do
		echo "${setting#*=}" >"$conf/${setting%=*}" || echo "ct-init: cannot set $conf/${setting%=*}"
	done
	echo 250 >"/proc/sys/net/ipv6/neigh/$1/retrans_time_ms" || echo "ct-init: cannot set RetransTimer"
}

NET0_IFACE=eth0
NET0_IP=
NET0_GW=
NET0_IP6=
NET0_GW6=
[ -r /etc/proximity/net0.env ] && . /etc/proximity/net0.env

if ip link show "$NET0_IFACE" >/dev/null 2>&1; then
	case "$NET0_IP6" in
		dhcp | auto) fast_ipv6 "$NET0_IFACE" ;;
	esac
	ip link set "$NET0_IFACE" up
	case "$NET0_IP" in
		dhcp)
			# Runs for the life of the container and renews the lease (no -q, no -n).
			udhcpc -i "$NET0_IFACE" -x "hostname:$(hostname)" -p /run/udhcpc."$NET0_IFACE".pid \
				-s /usr/share/udhcpc/default.script >>/var/log/udhcpc.log 2>&1 &
			echo "ct-init: udhcpc on $NET0_IFACE (pid $!)"
			;;
		"" | manual)
			echo "ct-init: $NET0_IFACE has no IPv4 configuration (ip=manual or no ip)"
			;;
		*)
			if ip -4 -o addr show dev "$NET0_IFACE" | grep -q " $NET0_IP "; then
				if [ -n "$NET0_GW" ] && [ -z "$(ip -4 route show default)" ]; then
					ip route replace default via "$NET0_GW" dev "$NET0_IFACE"  # gone with fast_ipv6's down
				fi
				echo "ct-init: $NET0_IFACE has the static address $NET0_IP (gateway ${NET0_GW:-none})"
			else
				# LXC normally did this; do it here if it did not.
				ip addr replace "$NET0_IP" dev "$NET0_IFACE"
				[ -n "$NET0_GW" ] && ip route replace default via "$NET0_GW" dev "$NET0_IFACE"
				echo "ct-init: configured $NET0_IFACE with $NET0_IP (gateway ${NET0_GW:-none})"
			fi
			;;
	esac
	case "$NET0_IP6" in
		dhcp)
			# DHCPv6 for the life of the container (renews; -B: stays in the foreground of its job).
			dhcpcd -B -f /etc/dhcpcd.conf -j /var/log/dhcpcd.log "$NET0_IFACE" >>/var/log/dhcpcd.log 2>&1 &
			echo "ct-init: dhcpcd (DHCPv6) on $NET0_IFACE (pid $!)"
			;;
		auto)
			echo "ct-init: $NET0_IFACE takes IPv6 from router advertisements (SLAAC)"
			;;
		"" | manual)
			;;
		*)
			echo "ct-init: $NET0_IFACE has the static IPv6 address $NET0_IP6 (gateway ${NET0_GW6:-none})"
			;;
	esac
else
	echo "ct-init: no interface $NET0_IFACE"
fi

# The stand-in application: a web server answering "hello from <hostname>".
mkdir -p /www
echo "hello from $(hostname)" >/www/index.html
httpd -p 80 -h /www && echo "ct-init: httpd on port 80"

stopping() {
	echo "ct-init: $1, stopping"
	exit 0  # PID 1 exits: the kernel ends every other process of the container
}
trap 'stopping SIGTERM' TERM
trap 'stopping SIGPWR' PWR
trap 'stopping SIGINT' INT

echo "ct-init: ready"
while :; do
	sleep 3600 &
	wait $!  # returns as soon as a trapped signal arrives
done
