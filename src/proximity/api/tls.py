"""HTTPS for the service: its certificate, and how the CLI trusts it.

On any address other than loopback, ``proximity serve`` speaks HTTPS only, so the bearer
token never crosses the LAN in clear text. The certificate is the one the settings name
(``api_cert_file``/``api_key_file``), or a self-signed one made on first start and kept next
to the token (``api-cert.pem``, ``api-key.pem`` mode 0600). ``proximity token show --json``
gives its SHA-256 fingerprint, to compare with what a browser shows.

The CLI's ``--api https://...`` trusts exactly that certificate (pinned: it is the only trust
anchor, so no other certificate passes, whatever names it carries), or the certificate
given with ``--api-ca``, or else the system's trust store.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import socket
import ssl
from pathlib import Path

from proximity.errors import InputError
from proximity.host import Host

VALID_DAYS = 10 * 365


def is_loopback(host: str) -> bool:
    """Whether a listen address or URL host is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def ensure_self_signed(cert: Path, key: Path, host: str) -> bool:
    """Make a self-signed certificate and its key unless both exist; True if made now."""
    if cert.exists() and key.exists():
        return False
    from cryptography import x509  # noqa: PLC0415 (only `serve` on the LAN needs it)
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = socket.gethostname()
    names: list[x509.GeneralName] = [x509.DNSName(name), x509.DNSName("localhost")]
    try:
        address = ipaddress.ip_address(host)
        if not address.is_unspecified:
            names.append(x509.IPAddress(address))
    except ValueError:
        names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Proximity API on {name}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(private, hashes.SHA256())
    )
    host_ = Host()
    host_.write_text(key, private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()).decode(), mode=0o600)
    host_.write_text(cert, certificate.public_bytes(serialization.Encoding.PEM).decode(), mode=0o644)
    return True


def fingerprint(cert: Path) -> str:
    """SHA-256 of the certificate (DER), as browsers show it: ``AB:CD:...``."""
    try:
        der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the API certificate {cert}: {exc}") from None
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


def server_files(cert: Path, key: Path) -> tuple[str, str]:
    """The certificate and key uvicorn is to load, checked first so that a bad one is a clear error."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise InputError(f"the API certificate or key {exc.filename} does not exist: check api_cert_file "
                         "and api_key_file, or leave both unset for a self-signed certificate") from None
    except (OSError, ssl.SSLError) as exc:
        raise InputError(f"cannot use the API certificate {cert} with the key {key}: {exc}; give a PEM "
                         "certificate and its unencrypted PEM key") from None
    return str(cert), str(key)


def client_verify(ca_file: Path | None, self_signed: Path | None) -> ssl.SSLContext:
    """What the CLI trusts: ``ca_file`` (``--api-ca``), else the service's self-signed certificate,
    pinned, when this machine has it, else the system's trust store."""
    pinned = ca_file is None and self_signed is not None and self_signed.exists()
    cafile = ca_file or (self_signed if pinned else None)
    try:
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except (OSError, ssl.SSLError) as exc:
        raise InputError(f"cannot read the certificate to trust, {cafile}: {exc}; pass a PEM file to --api-ca") from None
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # --api-ca may name the server's own certificate
    if pinned:  # the one trust anchor is the service's own self-made certificate: its names do not matter
        context.check_hostname = False
    return context


__all__ = ["client_verify", "ensure_self_signed", "fingerprint", "is_loopback", "server_files"]
