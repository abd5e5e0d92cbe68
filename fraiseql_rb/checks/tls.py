"""TLS checks shared by several runbooks: certificate files, served certificates, PostgreSQL.

The runbook verifies TLS with `openssl x509 -text` and `-dates` (§1.2, §4.1, §8.1) and reads
the output by eye. Here the same facts come from `cryptography`, so a check can say exactly
what is wrong (expired on which date, which host is not covered, which key does not match)
and a reviewer sees the numbers. The pure functions at the top take no context and are what
the checks below are built from; each check records one finding per aspect, so one broken
aspect never hides the others.
"""

from __future__ import annotations

import _ssl
import contextlib
import ipaddress
import re
import socket
import ssl
import stat
import struct
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import pandas as pd
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID
from cryptography.x509.verification import PolicyBuilder, Store, Subject, VerificationError
from psycopg.conninfo import conninfo_to_dict

from fraiseql_rb.checks import config
from fraiseql_rb.core import reachability, thresholds
from fraiseql_rb.core.context import RunContext, describe_error
from fraiseql_rb.core.findings import Finding, Status, isoformat, utcnow
from fraiseql_rb.targets import postgres

RENEWAL_RUNBOOK = "follow the TLS Certificate Renewal runbook (§9.1)"


class CertificateFileError(Exception):
    """A certificate file is missing, unreadable or not PEM; the message is one line."""


class KeyFileError(Exception):
    """A private key file cannot be used; the message never holds key material."""


class TlsNotOffered(Exception):
    """The server does not speak TLS on this port (PostgreSQL answered 'N' to SSLRequest)."""


# --------------------------------------------------------------------------------------------
# pure functions: files, facts, comparisons


def load_certificates(path: str | Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file, in file order (a chain file: leaf first)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise CertificateFileError(f"{p} does not exist") from None
    except IsADirectoryError:
        raise CertificateFileError(f"{p} is a directory, not a certificate file") from None
    except OSError as exc:
        raise CertificateFileError(f"cannot read {p}: {exc.strerror or exc}") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise CertificateFileError(f"{p} holds no PEM certificate{_not_pem_hint(data)}")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateFileError(f"{p} holds a malformed PEM certificate") from None


def _not_pem_hint(data: bytes) -> str:
    """Say what the file is instead, so the responder knows the fix (never its content)."""
    if not data.strip():
        return " (the file is empty)"
    if b"PRIVATE KEY-----" in data:
        return " (it holds a private key)"
    with contextlib.suppress(ValueError):
        x509.load_der_x509_certificate(data)
        return " (it is a DER certificate; convert it to PEM)"
    return ""


def load_private_key(path: str | Path, password: bytes | None = None) -> PrivateKeyTypes:
    """The PEM private key in `path`. Errors say why in one line, never with key content."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{p} does not exist") from None
    except IsADirectoryError:
        raise KeyFileError(f"{p} is a directory, not a key file") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {p}: {exc.strerror or exc}") from None
    if b"PRIVATE KEY-----" not in data:
        raise KeyFileError(f"{p} holds no PEM private key")
    try:
        return serialization.load_pem_private_key(data, password=password)
    except TypeError:
        raise KeyFileError(f"{p} is encrypted and no passphrase was given"
                           if password is None else f"{p} is not encrypted") from None
    except UnsupportedAlgorithm:
        raise KeyFileError(f"{p} uses an unsupported key algorithm") from None
    except ValueError:
        raise KeyFileError(f"{p} holds a malformed PEM private key (or the passphrase "
                           "is wrong)") from None


def _common_names(name: x509.Name) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _cn(cert: x509.Certificate) -> str | None:
    return next(iter(_common_names(cert.subject)), None)


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _signature_hash(cert: x509.Certificate) -> str | None:
    """The signature's hash name; None for Ed25519/Ed448 (no separate hash) or unknown."""
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return None
    return algorithm.name if algorithm is not None else None


def _key_description(cert: x509.Certificate) -> tuple[str, int | None, str | None]:
    """(type, bits, curve) of the certificate's public key."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size, None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size, key.curve.name
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256, None
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456, None
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size, None
    return type(key).__name__, None, None


def certificate_facts(cert: x509.Certificate, now: datetime | None = None) -> dict[str, Any]:
    """What `openssl x509 -text` would show a person, as plain values for evidence."""
    now = now or utcnow()
    san = _san(cert)
    key_type, key_size, curve = _key_description(cert)
    not_after = cert.not_valid_after_utc
    serial = format(cert.serial_number, "X")
    return {
        "subject_cn": _cn(cert),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": serial if len(serial) % 2 == 0 else "0" + serial,
        "not_before": isoformat(cert.not_valid_before_utc),
        "not_after": isoformat(not_after),
        "days_left": round((not_after - now).total_seconds() / 86400, 2),
        "san_dns": san.get_values_for_type(x509.DNSName) if san else [],
        "san_ip": [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] if san else [],
        "signature_hash": _signature_hash(cert),
        "key_type": key_type,
        "key_size": key_size,
        "key_curve": curve,
        "self_signed": cert.subject == cert.issuer,
    }


def _spki(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    """True when `key` is the private half of the certificate's public key."""
    return _spki(cert.public_key()) == _spki(key.public_key())


def _normalise_host(host: str) -> str:
    host = host.strip().rstrip(".").lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    with contextlib.suppress(UnicodeError):
        host = host.encode("idna").decode("ascii")
    return host


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _dns_match(pattern: str, host: str) -> bool:
    """RFC 6125 matching: exact, or a wildcard that is the whole left-most label only."""
    pattern = pattern.strip().rstrip(".").lower()
    if "*" not in pattern:
        return pattern == host
    if not pattern.startswith("*.") or "*" in pattern[2:]:
        return False  # partial wildcards (f*.example.com) are refused by browsers and libpq
    label, _, rest = host.partition(".")
    return bool(label) and rest == pattern[2:]


def host_covered(cert: x509.Certificate, host: str) -> bool:
    """Would a verifying client accept this certificate for `host`?

    SAN DNS names (with a single-label wildcard) for names, SAN IP addresses for IP literals;
    the subject CN only when the certificate has no SAN at all, as clients do.
    """
    host = _normalise_host(host)
    ip = _ip(host)
    san = _san(cert)
    if san is not None:
        if ip is not None:
            return ip in san.get_values_for_type(x509.IPAddress)
        return any(_dns_match(name, host) for name in san.get_values_for_type(x509.DNSName))
    names = _common_names(cert.subject)
    if ip is not None:  # libpq compares an IP with a SAN-less CN as text
        return any(_ip(cn.strip()) == ip for cn in names)
    return any(_dns_match(cn, host) for cn in names)


def covered_names(cert: x509.Certificate) -> list[str]:
    """The names a client checks: SAN entries, or the CN when there is no SAN."""
    san = _san(cert)
    if san is None:
        return _common_names(cert.subject)
    return [*san.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def key_strength(cert: x509.Certificate) -> tuple[bool, str]:
    """(acceptable, description): RSA >= 2048, EC >= 256 bits, Ed25519/Ed448 always."""
    key_type, bits, curve = _key_description(cert)
    if key_type == "RSA":
        ok = (bits or 0) >= thresholds.RSA_MIN_BITS
        text = f"RSA {bits}-bit"
        return ok, text if ok else f"{text}, below the {thresholds.RSA_MIN_BITS}-bit minimum"
    if key_type == "EC":
        ok = (bits or 0) >= thresholds.EC_MIN_BITS
        text = f"EC {curve} ({bits}-bit)"
        return ok, text if ok else f"{text}, below the {thresholds.EC_MIN_BITS}-bit minimum"
    if key_type in ("Ed25519", "Ed448"):
        return True, key_type
    if key_type == "DSA":
        return False, f"DSA {bits}-bit, which TLS 1.3 and current clients do not accept"
    return False, f"unrecognised key type {key_type}"


def uses_sha1(cert: x509.Certificate) -> bool:
    """True when the certificate is signed with SHA-1 (rejected by current TLS clients)."""
    return _signature_hash(cert) == "sha1"


def _hash_label(name: str | None) -> str:
    """'sha256' -> 'SHA-256', as people write it."""
    if not name:
        return "no separate hash"
    return name.upper().replace("SHA", "SHA-", 1) if name.startswith("sha") else name.upper()


_EDDSA = {SignatureAlgorithmOID.ED25519: "Ed25519", SignatureAlgorithmOID.ED448: "Ed448"}


def _weak_signature(cert: x509.Certificate) -> bool:
    return _signature_hash(cert) in ("sha1", "md5")


def _verification_subject(leaf: x509.Certificate, host: str | None) -> Subject | None:
    """The name to verify for: `host`, else the first name the certificate itself claims."""
    if host:
        host = _normalise_host(host)
        ip = _ip(host)
        return x509.IPAddress(ip) if ip is not None else x509.DNSName(host)
    san = _san(leaf)
    if san is None:
        return None
    for name in san.get_values_for_type(x509.DNSName):
        return x509.DNSName(name.replace("*", "wildcard-probe", 1).rstrip("."))
    for ip in san.get_values_for_type(x509.IPAddress):
        return x509.IPAddress(ip)
    return None


def verify_chain(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate],
                 ca_bundle_path: str | Path, host: str | None = None,
                 now: datetime | None = None) -> tuple[bool, str]:
    """Does `leaf` chain, through `intermediates`, to a root in the CA bundle?

    Uses cryptography's RFC 5280 / CA-B Forum server verifier, which is what a strict client
    does: dates, key usage, signatures and names. Without `host`, the certificate is verified
    for the first name it claims, so only the chain of trust is judged.
    """
    try:
        roots = load_certificates(ca_bundle_path)
    except CertificateFileError as exc:
        return False, f"CA bundle unusable: {exc}"
    subject = _verification_subject(leaf, host)
    if subject is None:
        return False, ("the certificate has no subjectAltName, which verifying clients "
                       "require")
    builder = PolicyBuilder().store(Store(roots))
    if now is not None:
        builder = builder.time(now)
    try:
        chain = builder.build_server_verifier(subject).verify(leaf, list(intermediates))
    except (VerificationError, ValueError) as exc:
        return False, _verification_reason(str(exc))
    path = " -> ".join(_cn(c) or c.subject.rfc4514_string() for c in chain)
    return True, path


# cryptography's verifier speaks in Rust debug output; say the same thing for a person
_VERIFICATION_REASONS = [
    ("no interior errors", "no issuer for it in the CA bundle (an intermediate is missing, "
                           "or another CA signed it)"),
    ("not valid at validation time", "a certificate in the chain is expired or not yet valid"),
    ("Forbidden signature algorithm", "a certificate in the chain is signed with a forbidden "
                                      "algorithm (SHA-1?)"),
    ("no matching subjectAltName", "the certificate does not name the host"),
    ("Forbidden public key algorithm", "a certificate in the chain has a forbidden key"),
]


def _verification_reason(text: str) -> str:
    for fragment, reason in _VERIFICATION_REASONS:
        if fragment in text:
            return reason
    text = re.sub(r"\s*\(encountered processing <Certificate.*$", "", text, flags=re.S)
    return _one_line(text.removeprefix("validation failed: "))


def _one_line(text: str, limit: int = 240) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------
# protocol versions

_PROTOCOLS = ["SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
_SSL_VERSIONS = {"TLSv1": 769, "TLSv1.1": 770, "TLSv1.2": 771, "TLSv1.3": 772}


def normalise_protocol(name: str) -> str:
    """'1.2', 'TLS1.2', 'tlsv1_2', 'TLSv1.2' -> 'TLSv1.2' (FraiseQL and PostgreSQL spellings)."""
    text = name.strip().upper().replace("_", ".").replace("TLSV", "").replace("TLS", "")
    text = text.removeprefix("V").strip()
    if text in ("1", "1.0"):
        return "TLSv1"
    if text in ("1.1", "1.2", "1.3"):
        return f"TLSv{text}"
    if name.strip().upper() in ("SSLV2", "SSLV3"):
        return "SSLv" + name.strip()[-1]
    raise ValueError(f"unknown TLS protocol version {name!r}")


def protocol_rank(name: str) -> int:
    return _PROTOCOLS.index(normalise_protocol(name))


# --------------------------------------------------------------------------------------------
# live handshakes


class PeerTls(NamedTuple):
    """What one handshake showed: DER certificates (leaf first), protocol and cipher."""

    chain: list[bytes]
    protocol: str
    cipher: str


SSL_REQUEST_CODE = 80877103  # PostgreSQL's SSLRequest: 1234 << 16 | 5679


def _inspection_context(max_version: str | None = None) -> ssl.SSLContext:
    """A client context that accepts anything: we inspect the server, we do not trust it.

    Verification is off so that an expired, self-signed or mismatched certificate is still
    fetched and reported rather than ending the check; old protocols are allowed so that a
    server stuck on TLS 1.0/1.1 is seen as such. Nothing is sent over this connection.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with contextlib.suppress(ssl.SSLError):
        context.set_ciphers("ALL:!aNULL:!eNULL:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1/1.1 names are deprecated
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        if max_version is not None:
            context.maximum_version = ssl.TLSVersion(_SSL_VERSIONS[max_version])
    return context


def _peer(tls: ssl.SSLSocket) -> PeerTls:
    """The chain the server sent (Python 3.13 public API, 3.10-3.12 private), else the leaf."""
    chain: list[bytes] = []
    getter = getattr(tls, "get_unverified_chain", None) or getattr(
        getattr(tls, "_sslobj", None), "get_unverified_chain", None)
    if getter is not None:
        with contextlib.suppress(Exception):
            for item in getter() or []:
                chain.append(item if isinstance(item, bytes)
                             else item.public_bytes(_ssl.ENCODING_DER))
    if not chain:
        leaf = tls.getpeercert(binary_form=True)
        chain = [leaf] if leaf else []
    cipher = tls.cipher()
    return PeerTls(chain, tls.version() or "unknown", cipher[0] if cipher else "unknown")


def _sni(host: str, server_hostname: str | None) -> str | None:
    name = server_hostname or host
    return None if _ip(_normalise_host(name)) is not None else name


def fetch_peer_certificate(host: str, port: int, timeout: float = thresholds.HTTP_TIMEOUT_S,
                           server_hostname: str | None = None,
                           max_version: str | None = None) -> PeerTls:
    """Handshake with a TLS server and return its chain, protocol and cipher.

    Certificate verification is deliberately off (see `_inspection_context`): the point is to
    inspect what the server presents, including a certificate no client should trust.
    """
    endpoint = reachability.endpoint("https", host, port)
    with reachability.socket_probe(endpoint, f"TLS handshake timeout {timeout:g} s"), \
            socket.create_connection((host, port), timeout=timeout) as raw, \
            _inspection_context(max_version).wrap_socket(
                raw, server_hostname=_sni(host, server_hostname)) as tls:
        return _peer(tls)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def fetch_postgres_certificate(host: str, port: int,
                               timeout: float = thresholds.DB_CONNECT_TIMEOUT_S,
                               max_version: str | None = None) -> PeerTls:
    """PostgreSQL's TLS, reached as libpq does: an SSLRequest, then the handshake.

    The 8-byte SSLRequest (length 8, code 80877103) is answered with b'S' (go ahead) or b'N'
    (ssl = off). Verification is off, as in `fetch_peer_certificate`: we inspect, not trust.
    No startup packet follows, so no credentials are sent.
    """
    endpoint = reachability.endpoint("postgresql", host, port)
    with reachability.socket_probe(endpoint, f"SSLRequest timeout {timeout:g} s"), \
            socket.create_connection((host, port), timeout=timeout) as raw:
        raw.sendall(struct.pack("!ii", 8, SSL_REQUEST_CODE))
        answer = _recv_exact(raw, 1)
        if answer == b"N":
            raise TlsNotOffered(f"PostgreSQL at {host}:{port} refused TLS (ssl = off)")
        if answer != b"S":
            raise ConnectionError(f"{host}:{port} answered the SSLRequest with {answer!r}; "
                                  "is it PostgreSQL?")
        with _inspection_context(max_version).wrap_socket(
                raw, server_hostname=_sni(host, None)) as tls:
            return _peer(tls)


def _accepts_protocol(fetch: Callable[..., PeerTls], version: str) -> bool | None:
    """Does the server complete a handshake capped at `version`? None: we cannot offer it."""
    if not _LOCAL_SUPPORT.get(version, False):
        return None
    try:
        peer = fetch(max_version=version)
    except ssl.SSLError as exc:
        if exc.reason in ("NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE"):
            return None  # refused by our own OpenSSL, not by the server
        return False
    return protocol_rank(peer.protocol) <= protocol_rank(version)


_LOCAL_SUPPORT = {"TLSv1": ssl.HAS_TLSv1, "TLSv1.1": ssl.HAS_TLSv1_1,
                  "TLSv1.2": ssl.HAS_TLSv1_2, "TLSv1.3": ssl.HAS_TLSv1_3}


# --------------------------------------------------------------------------------------------
# recording helpers shared by the checks


def _guarded(ctx: RunContext, check_name: str, aspect: Callable[[], Finding | None],
             ) -> Finding | None:
    """Run one aspect; an exception becomes an `unknown` finding so the others still run."""
    try:
        return aspect()
    except Exception as exc:  # noqa: BLE001 - any failure means "could not check"
        return ctx.could_not_run(check_name, exc, "fix what stopped the check (path, network, "
                                                  "permissions) and rerun")


def _date(iso_z: str) -> str:
    return iso_z.replace("T", " ")[:16] + " UTC"


def _facts_table(certs: Sequence[x509.Certificate], now: datetime) -> pd.DataFrame:
    rows = []
    for i, cert in enumerate(certs):
        f = certificate_facts(cert, now)
        key = f"{f['key_type']} {f['key_curve'] or f['key_size']}"
        rows.append({"position": "leaf" if i == 0 else f"chain[{i}]",
                     "subject_cn": f["subject_cn"], "issuer": f["issuer"],
                     "not_after": f["not_after"], "days_left": f["days_left"],
                     "names": ", ".join(f["san_dns"] + f["san_ip"]), "key": key,
                     "signature_hash": f["signature_hash"]})
    return pd.DataFrame(rows)


def _record_expiry(ctx: RunContext, check_name: str, certs: Sequence[x509.Certificate],
                   what: str, source: str, warning_days: float, critical_days: float,
                   renew: str) -> Finding:
    """The certificate that fails first decides: usually the leaf, sometimes an intermediate."""
    now = utcnow()
    facts = [certificate_facts(c, now) for c in certs]
    pos = min(range(len(certs)), key=lambda i: facts[i]["days_left"])
    f = facts[pos]
    name = f["subject_cn"] or f["subject"]
    subject = (f"the {what} ({name})" if pos == 0
               else f"intermediate certificate {name!r} in the chain of the {what}")
    if pos > 0:
        renew = "replace the intermediate with the issuing CA's current one in the chain"
    days = f["days_left"]
    evidence = {"source": source, "subject_cn": f["subject_cn"], "position": pos,
                "not_before": f["not_before"], "not_after": f["not_after"], "days_left": days,
                "warning_days": warning_days, "critical_days": critical_days,
                "certificates": len(certs)}
    early = [g for g in facts if g["not_before"] > isoformat(now)]
    table = _facts_table(certs, now)
    if early:
        g = early[0]
        return ctx.record(check_name, Status.CRITICAL,
                          f"The {what} ({g['subject_cn']}) is not valid before "
                          f"{_date(g['not_before'])}; clients refuse it until then.",
                          {**evidence, "not_before": g["not_before"]},
                          "check the clock of the server and of the issuing CA, or reissue",
                          table=table)
    if days < 0:
        status = Status.CRITICAL
        summary = (f"{_cap(subject)} expired on {_date(f['not_after'])}, {-days:.1f} days ago; "
                   "clients refuse it.")
    elif days <= critical_days:
        status = Status.CRITICAL
        summary = (f"{_cap(subject)} expires on {_date(f['not_after'])}, in {days:.1f} days "
                   f"(critical at {critical_days:g}); renew it now.")
    elif days <= warning_days:
        status = Status.WARNING
        summary = (f"{_cap(subject)} expires on {_date(f['not_after'])}, in {days:.1f} days "
                   f"(warning at {warning_days:g}); schedule its renewal.")
    else:
        status = Status.OK
        summary = f"{_cap(subject)} is valid until {_date(f['not_after'])}, {days:.0f} days left."
    return ctx.record(check_name, status, summary, evidence,
                      None if status is Status.OK else renew, table=table)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _record_hostname(ctx: RunContext, check_name: str, leaf: x509.Certificate, host: str,
                     what: str, mismatch: Status = Status.CRITICAL,
                     consequence: str = "clients that verify the host name refuse it",
                     ) -> Finding:
    names = covered_names(leaf)
    evidence = {"host": host, "names": names, "san": _san(leaf) is not None}
    if host_covered(leaf, host):
        return ctx.record(check_name, Status.OK, f"The {what} covers {host}.", evidence)
    return ctx.record(check_name, mismatch,
                      f"The {what} does not cover {host} (it names "
                      f"{', '.join(names) or 'nothing'}); {consequence}.", evidence,
                      f"reissue it with {host} in its subjectAltName, or connect by a name "
                      "it covers")


def _record_key_strength(ctx: RunContext, check_name: str, leaf: x509.Certificate,
                         what: str) -> Finding:
    ok, text = key_strength(leaf)
    key_type, bits, curve = _key_description(leaf)
    evidence = {"key_type": key_type, "key_size": bits, "key_curve": curve,
                "rsa_min_bits": thresholds.RSA_MIN_BITS, "ec_min_bits": thresholds.EC_MIN_BITS}
    if ok:
        return ctx.record(check_name, Status.OK, f"The {what}'s key is {text}.", evidence)
    return ctx.record(check_name, Status.CRITICAL,
                      f"The {what} has a weak key ({text}); current TLS clients refuse it.",
                      evidence,
                      f"reissue it with an RSA key of at least {thresholds.RSA_MIN_BITS} bits "
                      "or an EC P-256 key")


def _record_signature(ctx: RunContext, check_name: str, certs: Sequence[x509.Certificate],
                      what: str) -> Finding:
    """SHA-1 (or MD5) anywhere but on a self-signed root breaks the chain for clients."""
    signed = [(i, c) for i, c in enumerate(certs) if c.subject != c.issuer or i == 0]
    weak = [(i, c) for i, c in signed if _weak_signature(c)]
    evidence = {"signature_hashes": [_signature_hash(c) for c in certs],
                "weak": [{"position": i, "subject_cn": _cn(c), "hash": _signature_hash(c)}
                         for i, c in weak]}
    if weak:
        i, c = weak[0]
        who = f"the {what}" if i == 0 else f"intermediate {_cn(c)!r} in the chain of the {what}"
        return ctx.record(check_name, Status.CRITICAL,
                          f"{_cap(who)} is signed with {_hash_label(_signature_hash(c))}, "
                          "which current TLS clients reject.", evidence,
                          "reissue it signed with SHA-256 or better")
    algo = _signature_hash(certs[0])
    label = _hash_label(algo) if algo else _EDDSA.get(certs[0].signature_algorithm_oid, "EdDSA")
    return ctx.record(check_name, Status.OK, f"The {what} is signed with {label}.", evidence)


def _record_chain(ctx: RunContext, check_name: str, leaf: x509.Certificate,
                  intermediates: Sequence[x509.Certificate], ca_bundle: str | Path,
                  what: str) -> Finding:
    ok, reason = verify_chain(leaf, intermediates, ca_bundle)
    evidence = {"ca_bundle": str(ca_bundle), "intermediates": len(intermediates),
                "result": reason}
    if ok:
        return ctx.record(check_name, Status.OK,
                          f"The {what} chains to a trusted root: {reason}.", evidence)
    if "expired" in reason:
        fix = f"renew the expired certificate; {RENEWAL_RUNBOOK}"
    elif "signed with" in reason or "forbidden key" in reason:
        fix = "reissue the certificate with SHA-256 and an RSA 2048+ or EC P-256 key"
    else:
        fix = "install the full chain (leaf, then intermediates) or fix the CA bundle"
    return ctx.record(check_name, Status.CRITICAL,
                      f"The {what} does not verify against {Path(ca_bundle).name}: {reason}.",
                      evidence, fix)


def _done(findings: list[Finding | None]) -> list[Finding]:
    return [f for f in findings if f is not None]


# --------------------------------------------------------------------------------------------
# checks on certificate files


def check_certificate_file(ctx: RunContext, cert_path: str | Path,
                           key_path: str | Path | None = None, host: str | None = None,
                           ca_bundle: str | Path | None = None,
                           warning_days: float = thresholds.CERT_EXPIRY_DAYS.warning,
                           critical_days: float = thresholds.CERT_EXPIRY_DAYS.critical,
                           name: str = "server") -> list[Finding]:
    """§1.2 "Verify TLS certificates" and §8.1's weekly expiry check, on the files themselves.

    Records `tls.<name>.expiry`, `.key_strength`, `.signature`, and `.key_match` (with
    `key_path`), `.hostname` (with `host`), `.chain` (with `ca_bundle`). A file that cannot
    be used at all is one critical `tls.<name>.certificate` finding instead.
    """
    prefix = f"tls.{name}"
    what = f"{name} certificate"
    try:
        certs = load_certificates(cert_path)
    except CertificateFileError as exc:
        return [ctx.record(f"{prefix}.certificate", Status.CRITICAL,
                           f"The {what} cannot be used: {exc}.", {"path": str(cert_path)},
                           "point the check (and the server) at the PEM certificate chain "
                           "file the server is configured with")]
    leaf, rest = certs[0], certs[1:]
    source = str(cert_path)
    renew = f"renew it, install it at {cert_path} and reload the service; {RENEWAL_RUNBOOK}"
    findings: list[Finding | None] = [
        _guarded(ctx, f"{prefix}.expiry", lambda: _record_expiry(
            ctx, f"{prefix}.expiry", certs, what, source, warning_days, critical_days, renew)),
    ]
    if key_path is not None:
        findings.append(_guarded(ctx, f"{prefix}.key_match", lambda: _record_key_match(
            ctx, f"{prefix}.key_match", leaf, key_path, what)))
    if host:
        findings.append(_guarded(ctx, f"{prefix}.hostname", lambda: _record_hostname(
            ctx, f"{prefix}.hostname", leaf, host, what)))
    findings.append(_guarded(ctx, f"{prefix}.key_strength", lambda: _record_key_strength(
        ctx, f"{prefix}.key_strength", leaf, what)))
    findings.append(_guarded(ctx, f"{prefix}.signature", lambda: _record_signature(
        ctx, f"{prefix}.signature", certs, what)))
    if ca_bundle is not None:
        findings.append(_guarded(ctx, f"{prefix}.chain", lambda: _record_chain(
            ctx, f"{prefix}.chain", leaf, rest, ca_bundle, what)))
    return _done(findings)


def _record_key_match(ctx: RunContext, check_name: str, leaf: x509.Certificate,
                      key_path: str | Path, what: str) -> Finding:
    evidence: dict[str, Any] = {"key_path": str(key_path)}
    with contextlib.suppress(OSError):
        evidence["key_file_mode"] = oct(stat.S_IMODE(Path(key_path).stat().st_mode))
    try:
        key = load_private_key(key_path)
    except KeyFileError as exc:
        return ctx.record(check_name, Status.CRITICAL,
                          f"The private key for the {what} cannot be used: {exc}.", evidence,
                          "point key_path at the unencrypted PEM key the server loads, "
                          "readable by the checking user")
    evidence["key_type"] = type(key.public_key()).__name__.removeprefix("_")
    if key_matches(leaf, key):
        return ctx.record(check_name, Status.OK,
                          f"The private key {Path(key_path).name} belongs to the {what}.",
                          evidence)
    return ctx.record(check_name, Status.CRITICAL,
                      f"The private key {Path(key_path).name} does not belong to the {what}; "
                      "the server cannot complete a handshake with this pair.", evidence,
                      "install the key issued with this certificate (or the certificate "
                      "issued for this key), then reload")


# --------------------------------------------------------------------------------------------
# live checks


def _protocol_summary(ctx: RunContext, check_name: str, where: str, peer: PeerTls,
                      minimum: str, below: bool | None, below_version: str | None,
                      evidence: dict[str, Any]) -> Finding:
    evidence = {**evidence, "protocol": peer.protocol, "cipher": peer.cipher,
                "minimum": minimum, "accepts_below_minimum": below,
                "tested_below_minimum": below_version}
    if protocol_rank(peer.protocol) < protocol_rank(minimum):
        return ctx.record(check_name, Status.CRITICAL,
                          f"{where} negotiated {peer.protocol}, below the required {minimum}.",
                          evidence,
                          f"set the server's minimum TLS version to {minimum} (FraiseQL: "
                          "min_tls_version; load balancer: its TLS policy)")
    if below:
        return ctx.record(check_name, Status.WARNING,
                          f"{where} negotiates {peer.protocol} but still accepts "
                          f"{below_version}, below the required {minimum}.", evidence,
                          f"raise the server's minimum TLS version to {minimum}")
    tail = ("" if below is not None
            else " (older protocols not tested: this client cannot offer them)")
    return ctx.record(check_name, Status.OK,
                      f"{where} negotiated {peer.protocol} with {peer.cipher}{tail}.", evidence)


def _below(minimum: str) -> str | None:
    rank = protocol_rank(minimum)
    return _PROTOCOLS[rank - 1] if rank - 1 >= _PROTOCOLS.index("TLSv1") else None


def check_endpoint_tls(ctx: RunContext, url: str,
                       minimum: str = thresholds.TLS_MIN_VERSION,
                       warning_days: float = thresholds.CERT_EXPIRY_DAYS.warning,
                       critical_days: float = thresholds.CERT_EXPIRY_DAYS.critical,
                       name: str = "endpoint", ca_bundle: str | Path | None = None,
                       timeout: float = thresholds.HTTP_TIMEOUT_S) -> list[Finding]:
    """§1.1 "TLS 1.2+" on a served endpoint, plus the served certificate's expiry and host.

    Records `tls.<name>.protocol` (critical below `minimum`, warning when the server still
    accepts the version just below it, info for http://), `tls.<name>.expiry`,
    `tls.<name>.hostname` and, with `ca_bundle`, `tls.<name>.chain`.
    """
    prefix = f"tls.{name}"
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "http":
        return [ctx.record(f"{prefix}.protocol", Status.INFO,
                           f"{parts.netloc} is not served over TLS here; TLS may terminate at "
                           "the load balancer.", {"url": url},
                           "check TLS on the public URL in front of it")]
    if scheme != "https" or not parts.hostname:
        return [ctx.record(f"{prefix}.protocol", Status.UNKNOWN,
                           f"{url!r} is not an https:// URL, so its TLS cannot be checked.",
                           {"url": url}, "pass the https:// URL clients use")]
    minimum = normalise_protocol(minimum)
    host, port = parts.hostname, parts.port or 443
    where = f"{host}:{port}"
    evidence = {"url": url, "host": host, "port": port}

    def fetch(max_version: str | None = None) -> PeerTls:
        return fetch_peer_certificate(host, port, timeout, server_hostname=host,
                                      max_version=max_version)

    try:
        peer = fetch()
    except ssl.SSLError as exc:
        return [ctx.record(f"{prefix}.protocol", Status.CRITICAL,
                           f"The TLS handshake with {where} failed: {_ssl_reason(exc)}.",
                           {**evidence, "error": _ssl_reason(exc)},
                           "check the server's TLS configuration and its logs")]
    except OSError as exc:
        return [ctx.record(f"{prefix}.protocol", Status.UNKNOWN,
                           f"Could not reach {where} to check its TLS: {_os_reason(exc)}.",
                           {**evidence, "error": _os_reason(exc)},
                           "run the service-down playbook if the service should answer here")]
    return _done(_served_findings(ctx, prefix, peer, fetch, where, host, minimum, evidence,
                                  warning_days, critical_days, ca_bundle,
                                  what=f"certificate served by {where}",
                                  mismatch=Status.CRITICAL,
                                  renew=f"renew the certificate served at {where} and reload "
                                        f"the server or load balancer; {RENEWAL_RUNBOOK}"))


def _served_findings(ctx: RunContext, prefix: str, peer: PeerTls,
                     fetch: Callable[..., PeerTls], where: str, host: str, minimum: str,
                     evidence: dict[str, Any], warning_days: float, critical_days: float,
                     ca_bundle: str | Path | None, *, what: str, mismatch: Status,
                     renew: str, protocol: bool = True) -> list[Finding | None]:
    """Findings about one handshake: protocol, then the served certificate."""
    certs = [x509.load_der_x509_certificate(der) for der in peer.chain]
    findings: list[Finding | None] = []
    if protocol:
        def protocol_aspect() -> Finding:
            below_version = _below(minimum)
            below = _accepts_protocol(fetch, below_version) if below_version else False
            return _protocol_summary(ctx, f"{prefix}.protocol", where, peer, minimum, below,
                                     below_version, evidence)
        findings.append(_guarded(ctx, f"{prefix}.protocol", protocol_aspect))
    if not certs:
        findings.append(ctx.record(f"{prefix}.certificate", Status.CRITICAL,
                                   f"{where} completed a handshake without a certificate.",
                                   evidence, "configure a server certificate"))
        return findings
    findings.append(_guarded(ctx, f"{prefix}.expiry", lambda: _record_expiry(
        ctx, f"{prefix}.expiry", certs, what, where, warning_days, critical_days, renew)))
    findings.append(_guarded(ctx, f"{prefix}.hostname", lambda: _record_hostname(
        ctx, f"{prefix}.hostname", certs[0], host, what, mismatch)))
    if ca_bundle is not None:
        findings.append(_guarded(ctx, f"{prefix}.chain", lambda: _record_chain(
            ctx, f"{prefix}.chain", certs[0], certs[1:], ca_bundle, what)))
    return findings


def _ssl_reason(exc: ssl.SSLError) -> str:
    return _one_line(exc.reason or exc.strerror or str(exc) or type(exc).__name__)


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "host name does not resolve"
    return _one_line(exc.strerror or str(exc) or type(exc).__name__)


POSTGRES_TLS_SQL = """
SELECT current_setting('ssl') AS ssl,
       current_setting('server_version_num')::int AS version_num,
       -- pg_settings hides this row from roles without pg_read_all_settings
       (SELECT setting FROM pg_settings
        WHERE name = 'ssl_min_protocol_version') AS ssl_min_protocol_version,
       inet_server_addr() IS NULL AS unix_socket,
       s.ssl AS connection_ssl, s.version AS connection_protocol,
       s.cipher AS connection_cipher, s.bits AS connection_bits
FROM pg_stat_ssl s
WHERE s.pid = pg_backend_pid()
"""


def postgres_endpoint(database_url: str) -> tuple[str | None, int, str | None]:
    """(host, port, sslmode) of a URL or conninfo; host None for a unix socket."""
    params = conninfo_to_dict(database_url)
    host = str(params.get("host") or params.get("hostaddr") or "").split(",")[0] or None
    port = int(str(params.get("port") or 5432).split(",")[0])
    if host is not None and (host.startswith("/") or host.startswith("@")):
        host = None
    sslmode = params.get("sslmode")
    return host, port, str(sslmode) if sslmode else None


def check_postgres_tls(ctx: RunContext, database_url: str | None = None,
                       minimum: str = thresholds.TLS_MIN_VERSION,
                       warning_days: float = thresholds.CERT_EXPIRY_DAYS.warning,
                       critical_days: float = thresholds.CERT_EXPIRY_DAYS.critical,
                       name: str = "postgres",
                       timeout: float = thresholds.DB_CONNECT_TIMEOUT_S) -> list[Finding]:
    """TLS between FraiseQL and PostgreSQL: the server's settings, our own session, and the
    certificate the server presents.

    Records `tls.<name>.ssl` (ssl = off is critical), `tls.<name>.min_protocol` (below
    `minimum` is a warning), `tls.<name>.connection` (our session unencrypted is a warning),
    `tls.<name>.expiry` and `tls.<name>.hostname` (a mismatch is a warning, critical when the
    URL asks for sslmode=verify-full).
    """
    prefix = f"tls.{name}"
    minimum = normalise_protocol(minimum)
    try:
        url = database_url or ctx.target.database_url()
        host, port, sslmode = postgres_endpoint(url)
    except Exception as exc:  # noqa: BLE001 - a bad inventory is a finding, not a crash
        return [ctx.record(f"{prefix}.ssl", Status.UNKNOWN,
                           f"could not run the check: {describe_error(exc)}",
                           {"error": type(exc).__name__},
                           "give the target a database_url (and its password) in the "
                           "inventory")]
    where = f"{host}:{port}" if host else "the unix socket"
    evidence = {"host": host, "port": port, "sslmode": sslmode}
    state: dict[str, Any] = {}

    def fetch(max_version: str | None = None) -> PeerTls:
        assert host is not None
        return fetch_postgres_certificate(host, port, timeout, max_version=max_version)

    def probe_below() -> tuple[str | None, bool | None]:
        below = _below(minimum)
        if host is None or below is None:
            return below, None
        return below, _accepts_protocol(fetch, below)

    def settings_aspect() -> list[Finding]:
        with postgres.connect(url, connect_timeout_s=int(timeout)) as conn:
            row = postgres.one(conn, POSTGRES_TLS_SQL)
        state.update(row)
        return _record_postgres_settings(ctx, prefix, row, minimum, where, evidence,
                                         probe_below)

    out: list[Finding] = []
    recorded = _guarded_many(ctx, f"{prefix}.ssl", settings_aspect)
    out.extend(recorded)
    if host is None:
        out.append(ctx.record(f"{prefix}.certificate", Status.INFO,
                              "The database_url connects over a unix socket, so the served "
                              "certificate was not checked.", evidence))
        return out
    if state.get("ssl") == "off":
        return out  # nothing to fetch; tls.<name>.ssl already says why

    def served_aspect() -> list[Finding]:
        try:
            peer = fetch()
        except TlsNotOffered as exc:
            return [ctx.record(f"{prefix}.ssl", Status.CRITICAL,
                               f"{exc}; passwords and data cross the network in clear.",
                               evidence, _SSL_ON)]
        mismatch = Status.CRITICAL if sslmode == "verify-full" else Status.WARNING
        return _done(_served_findings(
            ctx, prefix, peer, fetch, where, host, minimum, evidence, warning_days,
            critical_days, None, what=f"PostgreSQL certificate at {where}", mismatch=mismatch,
            renew="renew the server certificate (ssl_cert_file, ssl_key_file) and run "
                  f"SELECT pg_reload_conf(); {RENEWAL_RUNBOOK}",
            protocol=False))

    out.extend(_guarded_many(ctx, f"{prefix}.expiry", served_aspect))
    return out


_SSL_ON = ("set ssl = on with ssl_cert_file and ssl_key_file, use hostssl lines in "
           "pg_hba.conf, and run SELECT pg_reload_conf()")


def _guarded_many(ctx: RunContext, check_name: str,
                  aspect: Callable[[], list[Finding]]) -> list[Finding]:
    try:
        return aspect()
    except Exception as exc:  # noqa: BLE001 - any failure means "could not check"
        return [ctx.could_not_run(check_name, exc,
                                  "fix what stopped the check (network, credentials) and rerun")]


def _record_postgres_settings(ctx: RunContext, prefix: str, row: dict[str, Any],
                              minimum: str, where: str, evidence: dict[str, Any],
                              probe_below: Callable[[], tuple[str | None, bool | None]],
                              ) -> list[Finding]:
    """`SHOW ssl`, `SHOW ssl_min_protocol_version` and our own row of pg_stat_ssl.

    An application role may not read ssl_min_protocol_version (it needs
    pg_read_all_settings); then a handshake capped just below `minimum` answers instead.
    """
    findings = []
    ssl_on = row.get("ssl") == "on"
    server = {**evidence, "ssl": row.get("ssl"),
              "ssl_min_protocol_version": row.get("ssl_min_protocol_version")}
    if ssl_on:
        findings.append(ctx.record(f"{prefix}.ssl", Status.OK,
                                   f"PostgreSQL at {where} has ssl = on.", server))
    else:
        findings.append(ctx.record(f"{prefix}.ssl", Status.CRITICAL,
                                   f"PostgreSQL at {where} has ssl = off; passwords and data "
                                   "cross the network in clear.", server, _SSL_ON))
    if ssl_on:
        findings.append(_record_min_protocol(ctx, f"{prefix}.min_protocol", row, minimum,
                                             server, probe_below))
    session = {**evidence, "connection_ssl": row.get("connection_ssl"),
               "connection_protocol": row.get("connection_protocol"),
               "connection_cipher": row.get("connection_cipher"),
               "connection_bits": row.get("connection_bits")}
    if row.get("unix_socket"):
        findings.append(ctx.record(f"{prefix}.connection", Status.INFO,
                                   "This session uses a unix socket, where TLS does not "
                                   "apply.", session))
    elif row.get("connection_ssl"):
        findings.append(ctx.record(
            f"{prefix}.connection", Status.OK,
            f"This session is encrypted with {row.get('connection_protocol')} "
            f"({row.get('connection_cipher')}).", session))
    else:
        sslmode = evidence.get("sslmode") or "prefer"
        findings.append(ctx.record(
            f"{prefix}.connection", Status.WARNING,
            f"This session to {where} is not encrypted (sslmode={sslmode}); the "
            "database_url lets clients fall back to plain text.", session,
            "set sslmode=require (or verify-full) in database_url and accept only hostssl "
            "connections in pg_hba.conf"))
    return findings


def _record_min_protocol(ctx: RunContext, check_name: str, row: dict[str, Any], minimum: str,
                         server: dict[str, Any],
                         probe_below: Callable[[], tuple[str | None, bool | None]],
                         ) -> Finding:
    found = row.get("ssl_min_protocol_version")
    fix = (f"ALTER SYSTEM SET ssl_min_protocol_version = '{minimum}'; "
           "SELECT pg_reload_conf();")
    if found:
        if protocol_rank(found) < protocol_rank(minimum):
            # the setting decides; the handshake shows whether OpenSSL's policy hides it today
            below, accepted = probe_below()
            practice = {True: f"; a {below} handshake succeeds today",
                        False: f"; OpenSSL's policy refuses a {below} handshake today, "
                               "but not by this setting"}.get(accepted, "")
            return ctx.record(check_name, Status.WARNING,
                              f"ssl_min_protocol_version is {found}, below the required "
                              f"{minimum}{practice}.",
                              {**server, "tested_below_minimum": below,
                               "accepts_below_minimum": accepted}, fix)
        return ctx.record(check_name, Status.OK,
                          f"ssl_min_protocol_version is {found} (required: {minimum} or "
                          "newer).", server)
    if (row.get("version_num") or 0) < 120000:
        return ctx.record(check_name, Status.WARNING,
                          "This PostgreSQL (before 12) cannot set ssl_min_protocol_version, "
                          f"so clients may negotiate below {minimum}.", server,
                          "upgrade PostgreSQL, or restrict protocols with ssl_ciphers")
    below, accepted = probe_below()
    evidence = {**server, "tested_below_minimum": below, "accepts_below_minimum": accepted}
    unreadable = "this role cannot read ssl_min_protocol_version"
    if below is None:  # the minimum is the oldest TLS: whatever is set meets it
        return ctx.record(check_name, Status.OK,
                          f"Every TLS version meets the required {minimum}.", evidence)
    if accepted:
        return ctx.record(check_name, Status.WARNING,
                          f"The server completes a {below} handshake, below the required "
                          f"{minimum} ({unreadable}).", evidence, fix)
    if accepted is False:
        return ctx.record(check_name, Status.OK,
                          f"The server refuses a {below} handshake ({unreadable}, so this was "
                          "tested directly).", evidence)
    return ctx.record(check_name, Status.UNKNOWN,
                      f"The minimum TLS version is unknown: {unreadable} and a {below} "
                      "handshake could not be tried from here.", evidence,
                      "grant pg_read_all_settings to the checking role, or check as a "
                      "superuser")


# -- what the server's config names, and what it serves (§1.2, §8.1 weekly) ------------------

def check_config_certificates(ctx: RunContext, path: str | None = None, *,
                              warning_days: float, critical_days: float) -> list[Finding]:
    """§1.2 `openssl x509 -in server.crt -text -noout`: the certificate and key the config
    names, for the host the inventory serves."""
    chosen = config.config_path(ctx, path)
    settings = config.settings_by_role(chosen) if chosen and Path(chosen).is_file() else {}
    if not settings.get("tls_enabled") or not settings.get("tls_cert"):
        return [ctx.record("tls.server.certificate", Status.INFO,
                           "the config does not enable TLS with a certificate; TLS may "
                           "terminate at the load balancer (check it there)",
                           {"config_path": chosen})]
    host = urlsplit(ctx.target.fraiseql_url).hostname
    return check_certificate_file(
        ctx, settings["tls_cert"], settings.get("tls_key"), host=host,
        ca_bundle=ctx.target.get("ca_bundle"), warning_days=warning_days,
        critical_days=critical_days, name="server")


def check_served_tls(ctx: RunContext, path: str | None = None, *, warning_days: float,
                     critical_days: float) -> list[Finding]:
    """What clients get: the negotiated protocol against the configured minimum, and the
    certificate actually served (which may differ from the file after a botched renewal)."""
    chosen = config.config_path(ctx, path)
    settings = config.settings_by_role(chosen) if chosen and Path(chosen).is_file() else {}
    minimum = normalise_protocol(str(settings.get("tls_min_version") or "1.2"))
    if protocol_rank(minimum) < protocol_rank("TLSv1.2"):
        minimum = "TLSv1.2"  # §1.1: the runbook's floor, whatever the config allows
    return check_endpoint_tls(ctx, ctx.target.fraiseql_url, minimum=minimum,
                              warning_days=warning_days, critical_days=critical_days,
                              name="endpoint", ca_bundle=ctx.target.get("ca_bundle"))
