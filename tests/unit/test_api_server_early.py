"""Bytes that arrive with the TLS handshake: a small head followed by its body is not a head over the cap.

(A client that sends its head and the start of a big body at once was refused with 431 whenever
the body's first bytes came in with the handshake; the Door's 401 or 413 is the answer then.)
"""

from types import SimpleNamespace

from proximity.api.server import Limits, BoundedProtocol


def too_large(early: bytes) -> bool:
    return BoundedProtocol._early_head_too_large(SimpleNamespace(limits=Limits()), early)


def test_a_small_head_with_the_start_of_its_body_is_not_refused():
    head = b"POST /api/v1/containers HTTP/1.1\r\nHost: x\r\nContent-Length: 209715200\r\n\r\n"
    assert not too_large(head + b"x" * (512 * 1024))


def test_a_head_that_does_not_end_within_the_cap_is_refused():
    assert too_large(b"GET / HTTP/1.1\r\nX-Long: " + b"a" * (3 * Limits().max_head_bytes))
    assert not too_large(b"GET / HTTP/1.1\r\nHost: x\r\n")  # still arriving, and within the cap
