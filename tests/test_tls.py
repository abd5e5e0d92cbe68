"""fraiseql_rb.checks.tls against real certificates, real TLS servers and a real PostgreSQL cluster.

Every certificate is made here with `cryptography` (a CA, good and bad leaves); the live
endpoint is an `ssl` server in a thread on 127.0.0.1; PostgreSQL comes from pg_fixtures.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fraiseql_rb.checks import tls
from fraiseql_rb.core import inventory
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import Finding, Status
from fraiseql_rb.sandbox.cluster import APP_USER, SUPERUSER

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)

# --------------------------------------------------------------------------------------------
# a small PKI, made once per module


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=True, crl_sign=True, encipher_only=False,
                         decipher_only=False)


def make_ca(cn: str, parent: tuple[x509.Certificate, Any] | None = None,
            ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_cert, issuer_key = parent if parent else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_cert.subject if issuer_cert else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY).not_valid_after(NOW + 3650 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
    )
    if issuer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def make_leaf(issuer: tuple[x509.Certificate, Any], *, cn: str = "localhost",
              dns: Sequence[str] = ("localhost",), ips: Sequence[str] = ("127.0.0.1",),
              not_before: dt.datetime | None = None, days: float = 365,
              key: Any = None, san: bool = True) -> tuple[x509.Certificate, Any]:
    issuer_cert, issuer_key = issuer
    key = key or ec.generate_private_key(ec.SECP256R1())
    start = not_before or NOW - DAY
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False)
    )
    if san:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 128:
        length = bytes([size])
    else:
        raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + body


SHA256_RSA_OID = bytes.fromhex("06092a864886f70d01010b")  # sha256WithRSAEncryption
SHA1_RSA_OID = bytes.fromhex("06092a864886f70d010105")  # sha1WithRSAEncryption


def resign_sha1(cert: x509.Certificate, issuer_key: rsa.RSAPrivateKey) -> x509.Certificate:
    """This cryptography refuses to sign with SHA-1, so swap the (same-length) algorithm OID
    in the to-be-signed part and sign that with SHA-1 ourselves: a real SHA-1 certificate."""
    tbs = cert.tbs_certificate_bytes
    assert tbs.count(SHA256_RSA_OID) == 1
    tbs = tbs.replace(SHA256_RSA_OID, SHA1_RSA_OID)
    signature = issuer_key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    algorithm = _der(0x30, SHA1_RSA_OID + b"\x05\x00")
    return x509.load_der_x509_certificate(
        _der(0x30, tbs + algorithm + _der(0x03, b"\x00" + signature)))


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Pki:
    dir: Path
    ca: tuple[x509.Certificate, Any]
    ca_path: Path
    other_ca_path: Path
    paths: dict[str, tuple[Path, Path]]  # name -> (cert or chain file, key file)
    certs: dict[str, x509.Certificate]

    def cert(self, name: str) -> Path:
        return self.paths[name][0]

    def key(self, name: str) -> Path:
        return self.paths[name][1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = make_ca("Test Root CA")
    other = make_ca("Other Root CA")
    intermediate = make_ca("Test Intermediate CA", parent=ca)
    rsa_ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaves: dict[str, tuple[x509.Certificate, Any]] = {
        "good": make_leaf(ca),
        "expired": make_leaf(ca, not_before=NOW - 40 * DAY, days=30),
        "soon": make_leaf(ca, not_before=NOW - DAY, days=6),  # 5 days left
        "fortnight": make_leaf(ca, not_before=NOW - DAY, days=15),  # 14 days left
        "wronghost": make_leaf(ca, cn="db.example.com", dns=["db.example.com"], ips=[]),
        "weak": make_leaf(ca, key=rsa.generate_private_key(public_exponent=65537,
                                                          key_size=1024)),
        "rsa2048": make_leaf(ca, key=rsa_ca_key),
        "ed25519": make_leaf(ca, key=ed25519.Ed25519PrivateKey.generate()),
        "foreign": make_leaf(other),
        "via_intermediate": make_leaf(intermediate),
        "wildcard": make_leaf(ca, cn="*.example.com", dns=["*.example.com"], ips=[]),
        "cn_only": make_leaf(ca, cn="legacy.example.com", san=False),
    }
    sha1_base, sha1_key = make_leaf((ca[0], rsa_ca_key), key=rsa_ca_key)
    leaves["sha1"] = (resign_sha1(sha1_base, rsa_ca_key), sha1_key)
    paths: dict[str, tuple[Path, Path]] = {}
    for name, (cert, key) in leaves.items():
        cert_path, key_path = root / f"{name}.crt", root / f"{name}.key"
        chain = (cert, intermediate[0]) if name == "via_intermediate" else (cert,)
        cert_path.write_bytes(pem(*chain))
        key_path.write_bytes(key_pem(key))
        key_path.chmod(0o600)
        paths[name] = (cert_path, key_path)
    # the good certificate with somebody else's key
    stranger = root / "stranger.key"
    stranger.write_bytes(key_pem(ec.generate_private_key(ec.SECP256R1())))
    paths["mismatch"] = (paths["good"][0], stranger)
    ca_path, other_path = root / "ca.crt", root / "other-ca.crt"
    ca_path.write_bytes(pem(ca[0]))
    other_path.write_bytes(pem(other[0]))
    return Pki(root, ca, ca_path, other_path, paths,
               {name: cert for name, (cert, _) in leaves.items()})


def adhoc(tmp_path: Path, **raw: Any) -> RunContext:
    target = inventory.Target(name="t", raw=raw, base_dir=tmp_path)
    return RunContext.adhoc(target=target, findings_path=tmp_path / "findings.json")


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


# --------------------------------------------------------------------------------------------
# pure functions


def test_load_certificates_reads_a_chain_file_in_order(pki: Pki) -> None:
    certs = tls.load_certificates(pki.cert("via_intermediate"))
    assert [tls.certificate_facts(c)["subject_cn"] for c in certs] == [
        "localhost", "Test Intermediate CA"]


@pytest.mark.parametrize("content, reason", [
    (None, "does not exist"),
    (b"", "the file is empty"),
    (b"hello, not a certificate\n", "holds no PEM certificate"),
    ("key", "it holds a private key"),
    ("der", "DER certificate"),
    (b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
     "malformed"),
])
def test_load_certificates_says_why_a_file_is_unusable(pki: Pki, tmp_path: Path,
                                                       content: Any, reason: str) -> None:
    path = tmp_path / "server.crt"
    if content == "key":
        content = pki.key("good").read_bytes()
    elif content == "der":
        content = pki.certs["good"].public_bytes(serialization.Encoding.DER)
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(tls.CertificateFileError, match=reason) as err:
        tls.load_certificates(path)
    assert "PRIVATE" not in str(err.value) and "\n" not in str(err.value)


def test_load_private_key_errors_never_show_the_key(pki: Pki, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    encrypted = tmp_path / "enc.key"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    with pytest.raises(tls.KeyFileError, match="encrypted and no passphrase"):
        tls.load_private_key(encrypted)
    assert tls.load_private_key(encrypted, b"passphrase").public_key() == key.public_key()
    broken = tmp_path / "broken.key"
    body = pki.key("good").read_text().splitlines()
    broken.write_text("\n".join([body[0], body[1][:20], body[-1]]))
    with pytest.raises(tls.KeyFileError) as err:
        tls.load_private_key(broken)
    assert body[1][:20] not in str(err.value)
    with pytest.raises(tls.KeyFileError, match="holds no PEM private key"):
        tls.load_private_key(pki.cert("good"))
    with pytest.raises(tls.KeyFileError, match="does not exist"):
        tls.load_private_key(tmp_path / "nope.key")


def test_certificate_facts(pki: Pki) -> None:
    facts = tls.certificate_facts(pki.certs["good"], now=NOW)
    assert facts["subject_cn"] == "localhost"
    assert facts["issuer"] == "CN=Test Root CA"
    assert facts["san_dns"] == ["localhost"] and facts["san_ip"] == ["127.0.0.1"]
    assert facts["signature_hash"] == "sha256"
    assert (facts["key_type"], facts["key_size"], facts["key_curve"]) == ("EC", 256, "secp256r1")
    assert facts["not_after"].endswith("Z") and facts["not_before"].endswith("Z")
    assert 363.9 < facts["days_left"] < 364.1
    assert int(facts["serial"], 16) == pki.certs["good"].serial_number
    json.dumps(facts)
    expired = tls.certificate_facts(pki.certs["expired"], now=NOW)
    assert -10.1 < expired["days_left"] < -9.9
    rsa_facts = tls.certificate_facts(pki.certs["weak"])
    assert (rsa_facts["key_type"], rsa_facts["key_size"]) == ("RSA", 1024)
    ed_facts = tls.certificate_facts(pki.certs["ed25519"])
    assert ed_facts["key_type"] == "Ed25519" and ed_facts["signature_hash"] == "sha256"


def test_key_matches(pki: Pki) -> None:
    good = pki.certs["good"]
    assert tls.key_matches(good, tls.load_private_key(pki.key("good")))
    assert not tls.key_matches(good, tls.load_private_key(pki.key("mismatch")))
    assert not tls.key_matches(good, tls.load_private_key(pki.key("weak")))


@pytest.mark.parametrize("cert, host, covered", [
    ("good", "localhost", True),
    ("good", "LOCALHOST.", True),
    ("good", "127.0.0.1", True),
    ("good", "127.0.0.2", False),
    ("good", "::1", False),
    ("good", "db.example.com", False),
    ("wildcard", "api.example.com", True),
    ("wildcard", "example.com", False),
    ("wildcard", "a.b.example.com", False),
    ("wildcard", "api.example.org", False),
    ("wronghost", "db.example.com", True),
    ("cn_only", "legacy.example.com", True),  # no SAN: the CN counts
    ("cn_only", "other.example.com", False),
    ("wronghost", "localhost", False),
])
def test_host_covered(pki: Pki, cert: str, host: str, covered: bool) -> None:
    assert tls.host_covered(pki.certs[cert], host) is covered


def test_host_covered_ignores_the_cn_when_there_is_a_san(pki: Pki) -> None:
    cert, _ = make_leaf(pki.ca, cn="cn.example.com", dns=["san.example.com"], ips=[])
    assert tls.host_covered(cert, "san.example.com")
    assert not tls.host_covered(cert, "cn.example.com")


@pytest.mark.parametrize("cert, ok, text", [
    ("weak", False, "RSA 1024-bit, below the 2048-bit minimum"),
    ("rsa2048", True, "RSA 2048-bit"),
    ("good", True, "EC secp256r1 (256-bit)"),
    ("ed25519", True, "Ed25519"),
])
def test_key_strength(pki: Pki, cert: str, ok: bool, text: str) -> None:
    assert tls.key_strength(pki.certs[cert]) == (ok, text)


def test_uses_sha1(pki: Pki) -> None:
    assert tls.uses_sha1(pki.certs["sha1"])
    assert tls.certificate_facts(pki.certs["sha1"])["signature_hash"] == "sha1"
    assert not tls.uses_sha1(pki.certs["good"])


def test_verify_chain(pki: Pki) -> None:
    good = pki.certs["good"]
    ok, reason = tls.verify_chain(good, [], pki.ca_path)
    assert ok, reason
    assert reason == "localhost -> Test Root CA"
    assert tls.verify_chain(good, [], pki.ca_path, host="127.0.0.1")[0]
    assert not tls.verify_chain(good, [], pki.ca_path, host="db.example.com")[0]
    assert not tls.verify_chain(good, [], pki.other_ca_path)[0]
    assert not tls.verify_chain(pki.certs["foreign"], [], pki.ca_path)[0]
    leaf, intermediate = tls.load_certificates(pki.cert("via_intermediate"))
    ok, reason = tls.verify_chain(leaf, [intermediate], pki.ca_path)
    assert ok and reason == "localhost -> Test Intermediate CA -> Test Root CA"
    ok, reason = tls.verify_chain(leaf, [], pki.ca_path)  # intermediate missing
    assert not ok and "no issuer for it in the CA bundle" in reason
    ok, reason = tls.verify_chain(pki.certs["expired"], [], pki.ca_path)
    assert not ok and reason == "a certificate in the chain is expired or not yet valid"
    ok, reason = tls.verify_chain(pki.certs["sha1"], [], pki.ca_path)
    assert not ok and "forbidden algorithm" in reason
    ok, reason = tls.verify_chain(good, [], pki.dir / "missing.pem")
    assert not ok and "CA bundle unusable" in reason
    ok, reason = tls.verify_chain(pki.certs["cn_only"], [], pki.ca_path)
    assert not ok and "subjectAltName" in reason


@pytest.mark.parametrize("text, canonical", [
    ("1.2", "TLSv1.2"), ("TLSv1.3", "TLSv1.3"), ("tlsv1_1", "TLSv1.1"), ("TLS1.0", "TLSv1"),
    ("TLSv1", "TLSv1"),
])
def test_normalise_protocol(text: str, canonical: str) -> None:
    assert tls.normalise_protocol(text) == canonical


def test_normalise_protocol_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="unknown TLS protocol"):
        tls.normalise_protocol("2.0")


# --------------------------------------------------------------------------------------------
# checks on files


def test_good_certificate_file_is_ok_on_every_aspect(pki: Pki, tmp_path: Path) -> None:
    ctx = adhoc(tmp_path)
    findings = tls.check_certificate_file(ctx, pki.cert("good"), pki.key("good"),
                                          host="localhost", ca_bundle=pki.ca_path)
    assert [f.check for f in findings] == [
        "tls.server.expiry", "tls.server.key_match", "tls.server.hostname",
        "tls.server.key_strength", "tls.server.signature", "tls.server.chain"]
    assert {f.status for f in findings} == {Status.OK}, findings
    assert ctx.status is Status.OK
    expiry = findings[0]
    assert "valid until" in expiry.summary and "364 days left" in expiry.summary
    assert expiry.evidence["not_after"] == tls.certificate_facts(pki.certs["good"])["not_after"]
    assert expiry.table is not None and list(expiry.table["position"]) == ["leaf"]
    assert findings[1].evidence["key_file_mode"] == "0o600"
    saved = json.loads((tmp_path / "findings.json").read_text())
    assert [f["check"] for f in saved["findings"]] == [f.check for f in findings]


def test_optional_aspects_only_when_asked(pki: Pki, tmp_path: Path) -> None:
    findings = tls.check_certificate_file(adhoc(tmp_path), pki.cert("good"), name="lb")
    assert [f.check for f in findings] == ["tls.lb.expiry", "tls.lb.key_strength",
                                           "tls.lb.signature"]


@pytest.mark.parametrize("cert, status, words", [
    ("expired", Status.CRITICAL, "expired on"),
    ("soon", Status.CRITICAL, "in 5.0 days (critical at 7); renew it now"),
    ("fortnight", Status.WARNING, "in 14.0 days (warning at 21)"),
    ("good", Status.OK, "valid until"),
])
def test_expiry_thresholds(pki: Pki, tmp_path: Path, cert: str, status: Status,
                           words: str) -> None:
    finding = by_check(tls.check_certificate_file(adhoc(tmp_path), pki.cert(cert)))[
        "tls.server.expiry"]
    assert finding.status is status
    assert words in finding.summary
    not_after = pki.certs[cert].not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
    assert not_after in finding.summary
    assert (finding.remediation is None) == (status is Status.OK)


def test_expiry_thresholds_are_parameters(pki: Pki, tmp_path: Path) -> None:
    finding = tls.check_certificate_file(adhoc(tmp_path), pki.cert("fortnight"),
                                         warning_days=10, critical_days=3)[0]
    assert finding.status is Status.OK
    finding = tls.check_certificate_file(adhoc(tmp_path), pki.cert("good"),
                                         warning_days=400, critical_days=3)[0]
    assert finding.status is Status.WARNING


def test_an_intermediate_expiring_first_decides(pki: Pki, tmp_path: Path) -> None:
    intermediate_key = ec.generate_private_key(ec.SECP256R1())
    intermediate = (
        x509.CertificateBuilder().subject_name(_name("Short Intermediate"))
        .issuer_name(pki.ca[0].subject).public_key(intermediate_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY).not_valid_after(NOW + 3 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(pki.ca[1], hashes.SHA256())
    )
    leaf, _ = make_leaf((intermediate, intermediate_key))
    path = tmp_path / "chain.pem"
    path.write_bytes(pem(leaf, intermediate))
    finding = tls.check_certificate_file(adhoc(tmp_path), path)[0]
    assert finding.status is Status.CRITICAL
    assert finding.summary.startswith(
        "Intermediate certificate 'Short Intermediate' in the chain of the server certificate "
        "expires on")
    assert "intermediate" in (finding.remediation or "")
    assert finding.evidence["position"] == 1


def test_wrong_host_is_critical(pki: Pki, tmp_path: Path) -> None:
    finding = by_check(tls.check_certificate_file(adhoc(tmp_path), pki.cert("wronghost"),
                                                  host="localhost"))["tls.server.hostname"]
    assert finding.status is Status.CRITICAL
    assert "does not cover localhost (it names db.example.com)" in finding.summary


def test_mismatched_key_is_critical(pki: Pki, tmp_path: Path) -> None:
    finding = by_check(tls.check_certificate_file(
        adhoc(tmp_path), pki.cert("mismatch"), pki.key("mismatch")))["tls.server.key_match"]
    assert finding.status is Status.CRITICAL
    assert "does not belong to the server certificate" in finding.summary


@pytest.mark.parametrize("kind", ["missing", "garbage", "truncated", "unreadable"])
def test_unusable_key_is_critical_without_its_content(pki: Pki, tmp_path: Path,
                                                      kind: str) -> None:
    key = tmp_path / "server.key"
    secret_line = pki.key("good").read_text().splitlines()[1]
    if kind == "garbage":
        key.write_text("not a key at all\n")
    elif kind == "truncated":
        key.write_text(f"-----BEGIN PRIVATE KEY-----\n{secret_line}\n-----END PRIVATE KEY-----\n")
    elif kind == "unreadable":
        key.mkdir()  # a directory: cannot be read as a file, whoever we are
    ctx = adhoc(tmp_path)
    findings = by_check(tls.check_certificate_file(ctx, pki.cert("good"), key))
    finding = findings["tls.server.key_match"]
    assert finding.status is Status.CRITICAL
    assert finding.summary.startswith("The private key for the server certificate cannot be used")
    assert "\n" not in finding.summary
    assert findings["tls.server.expiry"].status is Status.OK  # the others still ran
    assert secret_line[:16] not in (tmp_path / "findings.json").read_text()


def test_weak_key_is_critical(pki: Pki, tmp_path: Path) -> None:
    finding = by_check(tls.check_certificate_file(adhoc(tmp_path), pki.cert("weak")))[
        "tls.server.key_strength"]
    assert finding.status is Status.CRITICAL
    assert "RSA 1024-bit" in finding.summary


def test_sha1_signature_is_critical(pki: Pki, tmp_path: Path) -> None:
    finding = by_check(tls.check_certificate_file(adhoc(tmp_path), pki.cert("sha1")))[
        "tls.server.signature"]
    assert finding.status is Status.CRITICAL
    assert "signed with SHA-1, which current TLS clients reject" in finding.summary


def test_chain_to_another_ca_is_critical(pki: Pki, tmp_path: Path) -> None:
    findings = by_check(tls.check_certificate_file(adhoc(tmp_path), pki.cert("foreign"),
                                                   ca_bundle=pki.ca_path))
    assert findings["tls.server.chain"].status is Status.CRITICAL
    assert "does not verify against ca.crt" in findings["tls.server.chain"].summary
    chained = tls.check_certificate_file(adhoc(tmp_path), pki.cert("via_intermediate"),
                                         ca_bundle=pki.ca_path)
    assert by_check(chained)["tls.server.chain"].status is Status.OK


@pytest.mark.parametrize("content", [None, b"garbage\n"])
def test_unusable_certificate_file_is_one_critical_finding(tmp_path: Path,
                                                           content: bytes | None) -> None:
    path = tmp_path / "server.crt"
    if content is not None:
        path.write_bytes(content)
    findings = tls.check_certificate_file(adhoc(tmp_path), path, tmp_path / "server.key",
                                          host="localhost")
    assert len(findings) == 1
    assert findings[0].check == "tls.server.certificate"
    assert findings[0].status is Status.CRITICAL
    assert str(path) in findings[0].summary and "\n" not in findings[0].summary


def test_a_failing_aspect_is_unknown_and_the_others_run(pki: Pki, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(cert: x509.Certificate, host: str) -> bool:
        raise RuntimeError("resolver exploded")

    monkeypatch.setattr(tls, "host_covered", broken)
    findings = by_check(tls.check_certificate_file(adhoc(tmp_path), pki.cert("good"),
                                                   pki.key("good"), host="localhost"))
    assert findings["tls.server.hostname"].status is Status.UNKNOWN
    assert "resolver exploded" in findings["tls.server.hostname"].summary
    others = [f.status for name, f in findings.items() if name != "tls.server.hostname"]
    assert others and set(others) == {Status.OK}


# --------------------------------------------------------------------------------------------
# a live TLS endpoint


class TlsServer:
    """An ssl server on 127.0.0.1 in a thread: handshakes, then closes each connection."""

    def __init__(self, cert: Path, key: Path, *, minimum: str = "TLSv1.2",
                 maximum: str | None = None) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            if tls.protocol_rank(minimum) < tls.protocol_rank("TLSv1.2"):
                self.context.set_ciphers("DEFAULT:@SECLEVEL=0")
            self.context.minimum_version = ssl.TLSVersion(tls._SSL_VERSIONS[minimum])
            if maximum:
                self.context.maximum_version = ssl.TLSVersion(tls._SSL_VERSIONS[maximum])
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.recv(1)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def __enter__(self) -> TlsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.listener.close()

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"


@pytest.fixture(scope="module")
def legacy_tls(pki: Pki) -> None:
    """Skip unless this OpenSSL can still serve and speak TLS 1.1 (needs SECLEVEL=0)."""
    try:
        with TlsServer(pki.cert("good"), pki.key("good"), minimum="TLSv1",
                       maximum="TLSv1.1") as server:
            peer = tls.fetch_peer_certificate("127.0.0.1", server.port, timeout=5)
    except (ssl.SSLError, OSError, ValueError) as exc:
        pytest.skip(f"local OpenSSL cannot serve TLS 1.1: {exc}")
    if peer.protocol != "TLSv1.1":
        pytest.skip(f"local OpenSSL negotiated {peer.protocol} with a TLS 1.1-only server")


def test_fetch_peer_certificate_returns_the_chain(pki: Pki) -> None:
    with TlsServer(pki.cert("via_intermediate"), pki.key("via_intermediate")) as server:
        peer = tls.fetch_peer_certificate("127.0.0.1", server.port, server_hostname="localhost")
    assert peer.protocol == "TLSv1.3"
    assert peer.cipher
    certs = [x509.load_der_x509_certificate(der) for der in peer.chain]
    assert certs[0] == pki.certs["via_intermediate"]
    assert [tls.certificate_facts(c)["subject_cn"] for c in certs] == [
        "localhost", "Test Intermediate CA"]


def test_endpoint_with_modern_tls_is_ok(pki: Pki, tmp_path: Path) -> None:
    ctx = adhoc(tmp_path)
    with TlsServer(pki.cert("via_intermediate"), pki.key("via_intermediate")) as server:
        findings = tls.check_endpoint_tls(ctx, server.url, ca_bundle=pki.ca_path)
    checks = by_check(findings)
    assert list(checks) == ["tls.endpoint.protocol", "tls.endpoint.expiry",
                            "tls.endpoint.hostname", "tls.endpoint.chain"]
    assert {f.status for f in findings} == {Status.OK}, findings
    protocol = checks["tls.endpoint.protocol"]
    assert protocol.evidence["protocol"] == "TLSv1.3"
    assert protocol.evidence["minimum"] == "TLSv1.2"
    # whether TLS 1.1 could be offered depends on the local OpenSSL; refused either way
    assert protocol.evidence["accepts_below_minimum"] in (False, None)
    assert checks["tls.endpoint.chain"].evidence["intermediates"] == 1


def test_endpoint_capped_at_tls11_is_critical(pki: Pki, tmp_path: Path,
                                              legacy_tls: None) -> None:
    with TlsServer(pki.cert("good"), pki.key("good"), minimum="TLSv1",
                   maximum="TLSv1.1") as server:
        findings = by_check(tls.check_endpoint_tls(adhoc(tmp_path), server.url))
    protocol = findings["tls.endpoint.protocol"]
    assert protocol.status is Status.CRITICAL
    assert protocol.summary == (f"localhost:{server.port} negotiated TLSv1.1, below the "
                                "required TLSv1.2.")
    assert findings["tls.endpoint.expiry"].status is Status.OK


def test_endpoint_still_accepting_tls11_is_a_warning(pki: Pki, tmp_path: Path,
                                                     legacy_tls: None) -> None:
    with TlsServer(pki.cert("good"), pki.key("good"), minimum="TLSv1") as server:
        findings = by_check(tls.check_endpoint_tls(adhoc(tmp_path), server.url))
    protocol = findings["tls.endpoint.protocol"]
    assert protocol.status is Status.WARNING
    assert "still accepts TLSv1.1" in protocol.summary
    assert protocol.evidence["accepts_below_minimum"] is True


def test_endpoint_refusing_tls11_is_ok_when_tested(pki: Pki, tmp_path: Path,
                                                   legacy_tls: None) -> None:
    with TlsServer(pki.cert("good"), pki.key("good")) as server:
        protocol = tls.check_endpoint_tls(adhoc(tmp_path), server.url, minimum="1.2")[0]
    assert protocol.status is Status.OK
    assert protocol.evidence["accepts_below_minimum"] is False


def test_endpoint_minimum_tls13(pki: Pki, tmp_path: Path) -> None:
    with TlsServer(pki.cert("good"), pki.key("good"), maximum="TLSv1.2") as server:
        protocol = tls.check_endpoint_tls(adhoc(tmp_path), server.url, minimum="TLSv1.3")[0]
    assert protocol.status is Status.CRITICAL
    assert "negotiated TLSv1.2, below the required TLSv1.3" in protocol.summary


def test_endpoint_serving_a_bad_certificate(pki: Pki, tmp_path: Path) -> None:
    with TlsServer(pki.cert("expired"), pki.key("expired")) as server:
        expired = by_check(tls.check_endpoint_tls(adhoc(tmp_path), server.url))
    assert expired["tls.endpoint.protocol"].status is Status.OK
    assert expired["tls.endpoint.expiry"].status is Status.CRITICAL
    assert "expired on" in expired["tls.endpoint.expiry"].summary
    with TlsServer(pki.cert("wronghost"), pki.key("wronghost")) as server:
        wrong = by_check(tls.check_endpoint_tls(adhoc(tmp_path), server.url))
    assert wrong["tls.endpoint.hostname"].status is Status.CRITICAL


def test_plain_http_endpoint_is_info(tmp_path: Path) -> None:
    ctx = adhoc(tmp_path)
    findings = tls.check_endpoint_tls(ctx, "http://127.0.0.1:8000")
    assert len(findings) == 1
    assert findings[0].status is Status.INFO
    assert "not served over TLS here; TLS may terminate at the load balancer" in \
        findings[0].summary
    assert ctx.status is Status.UNKNOWN  # info alone decides nothing


def test_unreachable_endpoint_is_unknown(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    finding = tls.check_endpoint_tls(adhoc(tmp_path), f"https://127.0.0.1:{port}")[0]
    assert finding.status is Status.UNKNOWN
    assert "connection refused" in finding.summary


def test_endpoint_that_is_not_tls_is_critical(tmp_path: Path) -> None:
    """A plain-text server on an https:// URL: the handshake fails."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        finding = tls.check_endpoint_tls(adhoc(tmp_path), f"https://127.0.0.1:{port}")[0]
    finally:
        thread.join(5)
        listener.close()
    assert finding.check == "tls.endpoint.protocol"
    assert finding.status is Status.CRITICAL
    assert "handshake" in finding.summary


# --------------------------------------------------------------------------------------------
# PostgreSQL


def test_fetch_postgres_certificate_gets_the_served_certificate(pg_cluster: Any) -> None:
    peer = tls.fetch_postgres_certificate("127.0.0.1", pg_cluster.port)
    served = x509.load_der_x509_certificate(peer.chain[0])
    on_disk = tls.load_certificates(pg_cluster.tls.server_cert)[0]
    assert served == on_disk
    assert peer.protocol in ("TLSv1.2", "TLSv1.3")


def test_postgres_tls_on_a_healthy_cluster(pg_cluster: Any, pg_passwords: Any,
                                           tmp_path: Path) -> None:
    """Through the inventory, as a runbook calls it; the password stays out of findings."""
    (tmp_path / "db-password").write_text(pg_passwords.app + "\n")
    ctx = adhoc(tmp_path,
                database_url=f"postgresql://{APP_USER}@127.0.0.1:{pg_cluster.port}/fraiseql"
                             "?sslmode=require",
                database_password_file="db-password")
    findings = tls.check_postgres_tls(ctx)
    checks = by_check(findings)
    assert list(checks) == ["tls.postgres.ssl", "tls.postgres.min_protocol",
                            "tls.postgres.connection", "tls.postgres.expiry",
                            "tls.postgres.hostname"]
    # the app role cannot read ssl_min_protocol_version: a capped handshake answers instead
    min_protocol = checks["tls.postgres.min_protocol"]
    assert min_protocol.evidence["ssl_min_protocol_version"] is None
    if min_protocol.evidence["accepts_below_minimum"] is None:  # cannot offer TLS 1.1 here
        assert min_protocol.status is Status.UNKNOWN
        findings.remove(min_protocol)
    else:
        assert "refuses a TLSv1.1 handshake" in min_protocol.summary
    assert {f.status for f in findings} == {Status.OK}, findings
    assert checks["tls.postgres.connection"].evidence["connection_protocol"] in (
        "TLSv1.2", "TLSv1.3")
    assert "127.0.0.1" in checks["tls.postgres.hostname"].summary
    saved = (tmp_path / "findings.json").read_text()
    assert pg_passwords.app not in saved
    assert pg_passwords.app[:10] not in saved


def test_postgres_session_without_tls_is_a_warning(pg_cluster: Any, pg_passwords: Any,
                                                   tmp_path: Path) -> None:
    url = pg_cluster.dsn(APP_USER, pg_passwords.app, sslmode="disable")
    checks = by_check(tls.check_postgres_tls(adhoc(tmp_path), url))
    assert checks["tls.postgres.ssl"].status is Status.OK
    connection = checks["tls.postgres.connection"]
    assert connection.status is Status.WARNING
    assert "not encrypted (sslmode=disable)" in connection.summary
    assert checks["tls.postgres.expiry"].status is Status.OK


def test_postgres_with_an_expiring_certificate_and_old_protocols(
        make_cluster: Any, pg_passwords: Any, tmp_path: Path) -> None:
    cluster = make_cluster(extra_conf={"ssl_min_protocol_version": "TLSv1"})
    cluster.reissue_server_cert(days=6, not_before=NOW - DAY)
    url = cluster.dsn(SUPERUSER, pg_passwords.superuser, dbname="postgres")
    checks = by_check(tls.check_postgres_tls(adhoc(tmp_path), url))
    assert checks["tls.postgres.ssl"].status is Status.OK
    min_protocol = checks["tls.postgres.min_protocol"]
    assert min_protocol.status is Status.WARNING
    assert "ssl_min_protocol_version is TLSv1, below the required TLSv1.2" in \
        min_protocol.summary
    assert "ALTER SYSTEM SET ssl_min_protocol_version = 'TLSv1.2'" in min_protocol.remediation
    assert min_protocol.evidence["ssl_min_protocol_version"] == "TLSv1"  # read as superuser
    expiry = checks["tls.postgres.expiry"]
    assert expiry.status is Status.CRITICAL
    assert "in 5.0 days" in expiry.summary
    assert f"127.0.0.1:{cluster.port}" in expiry.summary


def test_postgres_with_ssl_off_is_critical(make_cluster: Any, pg_passwords: Any,
                                           tmp_path: Path) -> None:
    cluster = make_cluster(ssl=False)
    with pytest.raises(tls.TlsNotOffered, match=r"ssl = off"):
        tls.fetch_postgres_certificate("127.0.0.1", cluster.port)
    url = cluster.dsn(SUPERUSER, pg_passwords.superuser, dbname="postgres", sslmode="prefer")
    ctx = adhoc(tmp_path)
    checks = by_check(tls.check_postgres_tls(ctx, url))
    assert list(checks) == ["tls.postgres.ssl", "tls.postgres.connection"]
    assert checks["tls.postgres.ssl"].status is Status.CRITICAL
    assert "has ssl = off" in checks["tls.postgres.ssl"].summary
    assert checks["tls.postgres.connection"].status is Status.WARNING
    assert ctx.status is Status.CRITICAL


def test_postgres_over_a_unix_socket(pg_cluster: Any, tmp_path: Path) -> None:
    info = pg_cluster.superuser_conninfo()
    url = f"host={info['host']} port={info['port']} user={info['user']} dbname=postgres"
    checks = by_check(tls.check_postgres_tls(adhoc(tmp_path), url))
    assert list(checks) == ["tls.postgres.ssl", "tls.postgres.min_protocol",
                            "tls.postgres.connection", "tls.postgres.certificate"]
    assert checks["tls.postgres.ssl"].status is Status.OK
    min_protocol = checks["tls.postgres.min_protocol"]  # the superuser reads the setting
    assert min_protocol.status is Status.OK
    assert min_protocol.summary == ("ssl_min_protocol_version is TLSv1.2 (required: TLSv1.2 "
                                    "or newer).")
    assert checks["tls.postgres.connection"].status is Status.INFO
    assert checks["tls.postgres.certificate"].status is Status.INFO


def test_postgres_unreachable_is_unknown(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    url = f"postgresql://nobody:pw-not-real@127.0.0.1:{port}/db?connect_timeout=2"
    findings = tls.check_postgres_tls(adhoc(tmp_path), url, timeout=2)
    assert [f.status for f in findings] == [Status.UNKNOWN, Status.UNKNOWN]
    assert "pw-not-real" not in json.dumps([f.to_dict() for f in findings])


def test_postgres_without_database_url_is_unknown(tmp_path: Path) -> None:
    findings = tls.check_postgres_tls(adhoc(tmp_path))
    assert len(findings) == 1 and findings[0].status is Status.UNKNOWN
    assert "database_url" in findings[0].summary

