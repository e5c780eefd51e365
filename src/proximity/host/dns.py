"""DNS queries from inside a host's network namespace (the probe, status, the tests): dnspython over
a socket made in the namespace, so no process is forked per query. Mixed into Host."""

from __future__ import annotations

import socket

from proximity.host.netns import inside_netns


class DnsQueries:
    """Needs ``netns`` (Host's)."""

    netns: str | None

    def resolve(self, name: str, server: str, timeout: float = 1.0, attempts: int = 2,
                rdtype: str = "A") -> list[str] | None:
        """A (or AAAA) records of ``name`` asked of ``server`` from inside this host's namespace.

        ``[]`` is an answer without addresses (NXDOMAIN included); None means no answer at all.
        UDP datagrams can be lost, so the query is retried like a stub resolver does.
        """
        import dns.exception  # dnspython is only needed by the commands that ask
        import dns.message
        import dns.query
        import dns.rdatatype

        query, wanted = dns.message.make_query(name, rdtype), dns.rdatatype.from_text(rdtype)
        for _ in range(attempts):
            try:
                with self.udp_socket(6 if ":" in server else 4) as sock:
                    answer = dns.query.udp(query, server, timeout=timeout, sock=sock)
            except (dns.exception.DNSException, OSError):
                continue
            return [item.address for rrset in answer.answer if rrset.rdtype == wanted for item in rrset]
        return None

    def udp_socket(self, version: int = 4) -> socket.socket:
        """A non-blocking UDP socket in this host's network namespace (what dnspython expects)."""
        with inside_netns(self.netns):
            sock = socket.socket(socket.AF_INET6 if version == 6 else socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        return sock
