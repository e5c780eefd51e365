"""nftables in this process, through libnftables (the library ``nft`` itself is built on), by ctypes.

Why: spawning ``nft`` costs a process, and the kernel makes every nfnetlink socket that closes
while an old table is being destroyed wait out that destruction (one RCU grace period, 10-16 ms
here): ``nft -f`` pays it on exit. In-process, the transaction returns once it is committed and
the context is freed afterwards, off the caller's path.

The check. ``nft -c`` (``nft_ctx_set_dry_run``, not used here) has the kernel validate the batch and then abort
it, and an abort always waits one RCU grace period (~16 ms median, ~20 ms p95 here, even for
``add table``). :func:`check` instead commits the same text in a private, empty network namespace
of its own (``unshare(CLONE_NEWNET)`` in a short-lived thread; it vanishes with the context): the
kernel runs the same validation and also the commit, and nothing outside that namespace changes.
The file is self-contained (``add table``, ``delete table``, the table), so it does not depend
on what the target namespace holds.

Namespaces are per thread on Linux, so every call runs in a short-lived thread that enters the
namespace with setns(2) (a socket stays in the namespace it was opened in); the caller's threads
never switch. :func:`library` is None where libnftables cannot be loaded: callers run ``nft``.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import threading
from collections.abc import Callable

from proximity.host.netns import CLONE_NEWNET, NETNS_RUN_DIR
from proximity.network.nft import FAMILY, TABLE as _NAME

SONAME = "libnftables.so.1"
TABLE = f"{FAMILY} {_NAME}"
OUTPUT_JSON = 1 << 4  # NFT_CTX_OUTPUT_JSON, as ``nft -j``
_libc = ctypes.CDLL(None, use_errno=True)
_P = ctypes.c_void_p
_SIGNATURES = {  # name: (result, arguments), as libnftables(3) declares them
    "nft_ctx_new": (_P, [ctypes.c_uint32]),
    "nft_ctx_free": (None, [_P]),
    "nft_ctx_output_set_flags": (None, [_P, ctypes.c_uint]),
    "nft_ctx_buffer_output": (ctypes.c_int, [_P]),
    "nft_ctx_buffer_error": (ctypes.c_int, [_P]),
    "nft_ctx_get_output_buffer": (ctypes.c_char_p, [_P]),
    "nft_ctx_get_error_buffer": (ctypes.c_char_p, [_P]),
    "nft_run_cmd_from_buffer": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "nft_run_cmd_from_filename": (ctypes.c_int, [_P, ctypes.c_char_p]),
}


class NftError(Exception):
    """libnftables refused a command; the message is nft's own error text."""


@functools.cache
def library() -> ctypes.CDLL | None:
    """libnftables with its prototypes declared, or None (not installed, too old, or turned off with
    ``PROXIMITY_LIBNFTABLES=off``: then the nft binary does the check and the apply)."""
    if os.environ.get("PROXIMITY_LIBNFTABLES") == "off":
        return None
    try:
        lib = ctypes.CDLL(SONAME)
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
    except (OSError, AttributeError):
        return None
    return lib


class Context:
    """One ``nft_ctx``, output and errors buffered. Its socket opens in the calling thread's namespace."""

    def __init__(self, lib: ctypes.CDLL):
        self.lib, self.ctx = lib, lib.nft_ctx_new(0)
        if not self.ctx:
            raise NftError("nft_ctx_new failed")
        lib.nft_ctx_buffer_output(self.ctx)
        lib.nft_ctx_buffer_error(self.ctx)

    def run(self, commands: str, json_output: bool = False) -> str:
        """What nft prints for ``commands``; NftError with nft's message when it fails."""
        self.lib.nft_ctx_output_set_flags(self.ctx, OUTPUT_JSON if json_output else 0)
        return self._result(self.lib.nft_run_cmd_from_buffer(self.ctx, commands.encode()))

    def run_file(self, path: str) -> str:
        """``nft -f path``. (A file, not a buffer: libnftables 1.0.6 places a buffer's errors on line 1.)"""
        self.lib.nft_ctx_output_set_flags(self.ctx, 0)
        return self._result(self.lib.nft_run_cmd_from_filename(self.ctx, os.fsencode(path)))

    def _result(self, rc: int) -> str:
        out = (self.lib.nft_ctx_get_output_buffer(self.ctx) or b"").decode(errors="replace")
        if rc != 0:
            err = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode(errors="replace")
            raise NftError(err.strip() or f"nft failed ({rc})")
        return out

    def free(self) -> None:
        self.lib.nft_ctx_free(self.ctx)


def check(lib: ctypes.CDLL, text: str, name: str) -> str | None:
    """None if ``text`` loads (committed in a private, empty namespace); else nft's error, its
    locations given as ``name`` (the text is read from a memfd, as nft reads ``-f /dev/stdin``)."""
    fd = os.memfd_create("proximity-ruleset")
    try:
        os.write(fd, text.encode())
        source = f"/proc/self/fd/{fd}"

        def work(ctx: Context) -> str | None:
            try:
                ctx.run_file(source)
            except NftError as exc:
                return str(exc).replace(source, name)
            return None
        return _in_thread(lib, None, work)
    finally:
        os.close(fd)


def apply(lib: ctypes.CDLL, path: str, netns: str | None, saved: dict,
          first: Callable[[], None] = lambda: None) -> dict:
    """``nft -f path`` (one transaction) in ``netns`` (None: this process's own namespace); returns
    ``nft -j list table inet proximity`` read right after, in the same context (only the table the
    digest is of: on a Proxmox host the whole ruleset holds the firewall's rules too). ``first()`` runs in the caller's
    thread while the worker enters the namespace and lists the table (the check, the file): the
    transaction waits for it, and does not happen if it raises. Just before the transaction,
    ``saved["table"]`` gets the table as ``nft list table`` printed it (None: there was none), for
    an undo. NftError when the kernel refuses the batch (it aborted it: nothing changed)."""
    go, state = threading.Event(), {}

    def work(ctx: Context) -> dict | None:
        try:
            table = ctx.run(f"list table {TABLE}")
        except NftError:  # no such table
            table = None
        go.wait()
        if not state.get("go"):
            return None
        saved["table"] = table
        ctx.run_file(path)
        return json.loads(ctx.run(f"list table {TABLE}", json_output=True) or "{}")

    def alongside() -> None:
        try:
            first()
            state["go"] = True
        finally:
            go.set()
    return _in_thread(lib, netns or "", work, alongside)


def _in_thread(lib: ctypes.CDLL, netns: str | None, work: Callable[[Context], object],
               alongside: Callable[[], None] = lambda: None):
    """``work(context)`` in a fresh thread, in namespace ``netns`` ("": the caller's, None: a new empty
    one), while the caller runs ``alongside()``. Returns as soon as ``work`` does; the context is freed
    after, in that thread (the close may wait out the old table's destruction; the caller need not)."""
    done, box = threading.Event(), {}

    def run() -> None:
        ctx = None
        try:
            _enter(netns)
            ctx = Context(lib)
            box["value"] = work(ctx)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc
        finally:
            done.set()
            if ctx is not None:
                ctx.free()

    threading.Thread(target=run, name="libnft", daemon=True).start()
    try:
        alongside()
    finally:
        done.wait()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _enter(netns: str | None) -> None:
    """Move this (short-lived) thread into ``netns``: a named one, a new empty one (None), or stay ("")."""
    if netns == "":
        return
    if netns is None:
        rc, what = _libc.unshare(CLONE_NEWNET), "unshare"
    else:
        try:
            fd = os.open(NETNS_RUN_DIR / netns, os.O_RDONLY)
        except FileNotFoundError:
            raise NftError(f"network namespace {netns!r} does not exist") from None
        try:
            rc, what = _libc.setns(fd, CLONE_NEWNET), "setns"
        finally:
            os.close(fd)
    if rc != 0:
        raise NftError(f"{what}: {os.strerror(ctypes.get_errno())}")
