"""An in-memory host: the planner and the reconciler run against it without root.

It models just enough of what Proximity touches for the effects of its commands to be seen
by the next observation: links with masters and addresses, routes, iptables rules, the nftables
table (``nft -f`` loads a file's text whole, ``nft -j list ruleset`` lists it back), sysctls, files, ifupdown2 (``ifreload -a``, ``ifup``, ``ifquery --check``), a supervised dnsmasq
(pid file, signals, ``ss`` and DNS answers). ``fail`` makes one mutating command fail, to
test that a failed step undoes the earlier ones.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import ipaddress
import json
import shlex
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from proximity.host import CommandError, Host, Result
from proximity.network import interfaces
from proximity.network.firewall import Rule


@dataclass
class FakeLink:
    name: str
    index: int
    up: bool = True
    kind: str | None = None
    master: str | None = None
    addresses: list[str] = field(default_factory=list)  # "A.B.C.D/len"


class FakeHost(Host):
    nft_in_process = False  # nft goes through the commands this host models

    def __init__(self, bridge: str, netns: str = "fake"):
        super().__init__(netns)
        self.bridge = bridge  # whose address dnsmasq binds
        self.files: dict[str, str] = {}
        self.links: dict[str, FakeLink] = {}
        self.routes: list[dict] = []
        self.rules: list[Rule] = []
        self.table: str | None = None  # Proximity's nft table: the text nft -f loaded
        self.chains: dict[str, str] = {"INPUT": "ACCEPT", "FORWARD": "ACCEPT", "OUTPUT": "ACCEPT"}
        self.sysctls: dict[str, str] = {"net.ipv4.ip_forward": "0"}
        self.processes: dict[int, list[str]] = {}
        self.commands: list[list[str]] = []  # every mutating command, in order
        self.fail: Callable[[list[str]], bool] = lambda argv: False
        self._next_index = 10
        self._next_pid = 1000

    # -- building the initial host ---------------------------------------------------------
    def add_link(self, name: str, *, master: str | None = None, kind: str | None = None,
                 addresses: tuple[str, ...] = (), up: bool = True) -> FakeLink:
        self._next_index += 1
        link = self.links[name] = FakeLink(name, self._next_index, up, kind, master, list(addresses))
        return link

    def state(self) -> dict:
        """Everything that matters to compare two hosts (pids and Proximity's run files aside).

        Rules compare as a multiset: an undone deletion re-adds a rule at the end of its chain."""
        links = {n: (l.up, l.kind, l.master, tuple(l.addresses)) for n, l in self.links.items()}
        files = {p: t for p, t in self.files.items() if "/backups/" not in p and "/run/" not in p}
        dns = sorted(tuple(argv) for argv in self.processes.values())
        return {"links": links, "rules": sorted(self.rules, key=repr), "table": self.table,
                "sysctls": dict(self.sysctls), "files": files, "dns": dns}

    def clone(self) -> FakeHost:
        other = copy.copy(self)
        for name in ("files", "links", "routes", "rules", "chains", "sysctls", "processes"):
            setattr(other, name, copy.deepcopy(getattr(self, name)))
        other.commands = []
        return other

    def sibling(self, netns: str | None) -> FakeHost:
        return self  # one in-memory world: the probe's namespace is modelled by its links

    # -- Host: files, locks, sysctls ------------------------------------------------------------
    def read_text(self, path: Path, errors: str = "strict") -> str | None:
        return self.files.get(str(path))

    def write_text(self, path: Path, text: str, mode: int = 0o644, durable: bool = True) -> None:
        self._mutate(["write", str(path)])
        self.files[str(path)] = text

    def remove(self, path: Path) -> None:
        self._mutate(["rm", str(path)])
        self.files.pop(str(path), None)

    def mkdir(self, path: Path) -> None:
        pass

    def as_seen(self, pattern: str) -> str:
        return pattern

    def glob(self, pattern: str) -> list[Path]:
        """Files and their directories, matched like glob.glob (``*`` stops at ``/``)."""
        names = set(self.files) | {str(Path(p).parent) for p in self.files}
        depth = pattern.count("/")
        return sorted(Path(n) for n in names if n.count("/") == depth and fnmatch.fnmatchcase(n, pattern))

    @contextlib.contextmanager
    def lock(self, path: Path, timeout: float = 60, what: str = "") -> Iterator[None]:
        yield

    def read_sysctl(self, key: str) -> str | None:
        return self.sysctls.get(key)

    @property
    def has_systemd(self) -> bool:
        return False

    # -- processes ------------------------------------------------------------------------------
    def pid_cmdline(self, pid: int) -> list[str] | None:
        return self.processes.get(pid)

    def kill(self, pid: int, sig: int = signal.SIGTERM) -> None:
        self._mutate(["kill", str(sig), str(pid)])
        if sig in (signal.SIGTERM, signal.SIGKILL):
            self.processes.pop(pid, None)

    def resolve(self, name: str, server: str, timeout: float = 1.0, attempts: int = 2) -> list[str] | None:
        return [] if self._dnsmasq_pid() is not None else None

    def _dnsmasq_pid(self) -> int | None:
        return next((pid for pid, argv in self.processes.items() if argv[0].endswith("dnsmasq")), None)

    # -- commands ---------------------------------------------------------------------------------
    def ip_json(self, *args: str) -> list[dict]:
        if "route" in args:
            return [] if "-6" in args else copy.deepcopy(self.routes)  # the fake host has no IPv6
        return [{"ifname": l.name, "ifindex": l.index, "flags": ["UP"] if l.up else [],
                 "linkinfo": {"info_kind": l.kind} if l.kind else {}, **({"master": l.master} if l.master else {}),
                 "addr_info": [{"family": "inet", "local": a.split("/")[0], "prefixlen": int(a.split("/")[1])}
                               for a in l.addresses]} for l in self.links.values()]

    def query(self, argv: list[str], timeout: float = 15, input: str | None = None) -> Result:
        cmd = argv[0].rsplit("/", 1)[-1]
        if cmd == "iptables-save":
            return self._ok(argv, self._saved())
        if cmd == "nft":
            return self._nft_query(argv)
        if cmd == "iptables" and "-C" in argv:
            return self._ok(argv) if self._rule(argv) in self.rules else Result(argv, 1, "", "Bad rule")
        if cmd == "ss":
            pid = self._dnsmasq_pid()
            out = ""
            if pid is not None:
                gw = self._gateway()
                out = "".join(f"{proto} UNCONN 0 0 {gw}:{port} 0.0.0.0:* users:((\"dnsmasq\",pid={pid},fd=4))\n"
                              for proto, port in (("udp", 53), ("udp", 67), ("tcp", 53)))
            return self._ok(argv, out)
        if cmd == "ifquery":
            return self._ok(argv, json.dumps([{"name": name, "status": "pass"} for name in self.links]))
        if cmd == "dnsmasq":
            return self._ok(argv)
        if cmd == "busybox":  # the probe's DHCP client: a lease while dnsmasq runs on a live bridge
            bridge = self.links.get(self.bridge)
            leased = self._dnsmasq_pid() is not None and bridge is not None and bridge.up
            return self._ok(argv, "udhcpc: lease of 10.10.0.250 obtained\n" if leased else "")
        if cmd == "ip" and ("nomaster" in argv or argv[1:3] == ["netns", "delete"]):
            return self.run(argv)
        return self._ok(argv)

    def run(self, argv: list[str], timeout: float = 30, check: bool = True, input: str | None = None) -> Result:
        try:
            return self._run(argv, input)
        except CommandError as exc:
            if check:
                raise
            return Result(argv, exc.returncode or 1, "", exc.stderr)

    def _run(self, argv: list[str], input: str | None = None) -> Result:
        self._mutate(argv)
        cmd = argv[0].rsplit("/", 1)[-1]
        if cmd == "nft":
            self._nft_run(argv, input)
        elif cmd == "iptables":
            rule = self._rule(argv)
            op = next(a for a in argv if a in ("-A", "-I", "-D"))
            if op == "-D":
                if rule not in self.rules:
                    raise CommandError(argv, 1, "Bad rule (does a matching rule exist in that chain?)")
                self.rules.remove(rule)
            elif op == "-I":
                self.rules.insert(0, rule)
            else:
                self.rules.append(rule)
        elif cmd == "sysctl":
            key, value = argv[-1].split("=", 1)
            self.sysctls[key] = value
        elif cmd == "ifreload":
            self._apply_interfaces(None)
        elif cmd == "ifup":
            self._apply_interfaces(argv[1])
        elif cmd == "ip" and argv[1:3] == ["link", "delete"]:
            if argv[3] not in self.links:
                raise CommandError(argv, 1, f'Cannot find device "{argv[3]}"')
            self._delete_link(argv[3])
        elif cmd == "ip" and argv[1:3] == ["link", "add"]:  # the probe's veth; its peer is in its namespace
            self.add_link(argv[3], kind="veth")
        elif cmd == "ip" and argv[1:3] == ["netns", "delete"]:
            self.links = {n: l for n, l in self.links.items() if not n.startswith("pxp")}
        elif cmd == "ip" and argv[1:3] == ["link", "set"] and argv[4] not in self.links:
            pass  # inside the probe's namespace
        elif cmd == "ip" and argv[1:3] == ["address", "add"]:
            pass  # inside the probe's namespace
        elif cmd == "ip" and argv[1:3] == ["link", "set"]:
            link = self.links[argv[4]]
            if "down" in argv:
                link.up = False
            else:
                link.master = argv[argv.index("master") + 1] if "master" in argv else None
        elif cmd == "ip" and argv[1:3] == ["address", "del"]:
            self.links[argv[-1]].addresses.remove(argv[3])
        elif cmd.endswith("dnsmasq"):
            pid_file = next(a.split("=", 1)[1] for a in argv if a.startswith("--pid-file="))
            self._next_pid += 1
            self.processes[self._next_pid] = list(argv)
            self.files[pid_file] = f"{self._next_pid}\n"
        return self._ok(argv)

    # -- the models behind the commands -------------------------------------------------------------
    def _mutate(self, argv: list[str]) -> None:
        self.commands.append(list(argv))
        if self.fail(argv):
            raise CommandError(argv, 1, "injected failure")

    @staticmethod
    def _ok(argv: list[str], stdout: str = "") -> Result:
        return Result(argv, 0, stdout, "")

    @staticmethod
    def _rule(argv: list[str]) -> Rule:
        table = argv[argv.index("-t") + 1]
        op = next(i for i, a in enumerate(argv) if a in ("-A", "-I", "-D", "-C"))
        return Rule(table, argv[op + 1], tuple(argv[op + 2:]))

    def _nft_query(self, argv: list[str]) -> Result:
        if argv[1:] == ["-j", "list", "ruleset"]:
            items: list[dict] = [{"metainfo": {"version": "fake"}}]
            if self.table is not None:
                items += [{"table": {"family": "inet", "name": "proximity", "handle": 1}},
                          {"rule": {"family": "inet", "table": "proximity", "handle": 2, "text": self.table}}]
            return self._ok(argv, json.dumps({"nftables": items}))
        if argv[1:] == ["list", "table", "inet", "proximity"]:
            return self._ok(argv, self.table) if self.table is not None else Result(argv, 1, "", "No such file")
        return self._ok(argv)  # nft -c: the fake accepts every ruleset

    def _nft_run(self, argv: list[str], input: str | None) -> None:
        if argv[1:] == ["delete", "table", "inet", "proximity"]:
            if self.table is None:
                raise CommandError(argv, 1, "Error: No such file or directory")
            self.table = None
        elif argv[1] == "-f":
            text = input if argv[2] == "-" else self.files[argv[2]]
            self.table = "".join(line for line in text.splitlines(keepends=True)
                                 if not line.startswith(("add table", "delete table", "#")))

    def _saved(self) -> str:
        out = []
        for table in ("raw", "nat", "filter"):
            out.append(f"*{table}")
            if table == "filter":
                out += [f":{chain} {policy} [0:0]" for chain, policy in self.chains.items()]
            out += [f"-A {r.chain} {shlex.join(r.spec)}" for r in self.rules if r.table == table]
            out.append("COMMIT")
        return "\n".join(out) + "\n"

    def _gateway(self) -> str:
        link = self.links.get(self.bridge)
        return link.addresses[0].split("/")[0] if link and link.addresses else "0.0.0.0"

    def _apply_interfaces(self, only: str | None) -> None:
        """ifupdown2, reduced to bridges: a declared bridge exists, up, with its addresses."""
        path = next(p for p in self.files if p.endswith("/interfaces"))
        declared = {st.name: st for st in interfaces.parse_stanzas(self.files[path])}
        for name, stanza in declared.items():
            if only not in (None, name) or not stanza.values("bridge-ports"):
                continue
            link = self.links.get(name) or self.add_link(name, kind="bridge")
            link.up = True
            link.addresses = [str(ipaddress.IPv4Interface(v)) for v, _ in stanza.values("address")]
        if only is None:  # ifreload takes down bridges no longer declared
            for name in [n for n, l in self.links.items() if l.kind == "bridge" and n not in declared]:
                self._delete_link(name)

    def _delete_link(self, name: str) -> None:
        self.links.pop(name, None)
        for link in self.links.values():
            if link.master == name:
                link.master = None
