"""The config validator: format recognition, every rule, v2 mapping, masking, CLI output."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

from fraiseql_rb.checks import config
from fraiseql_rb.core import inventory
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.errors import EXIT_CRITICAL, EXIT_OK, EXIT_WARNING, UsageError
from fraiseql_rb.core.findings import Status, worst

DATA = Path(__file__).parent / "data" / "configs"
RUNBOOK_SAMPLE = DATA / "runbook-1.2.toml"
# The server config sample lives with the shape fixtures (its [tls] table names the paths the
# server requires whenever the table is written).
V2_SAMPLE = DATA / "v2-server.toml"
TLS_OFF = ("enabled = false  # TLS terminates at the load balancer in front of 10.0.1.0/24\n"
           "# TlsServerConfig requires both paths whenever [tls] is written, even with TLS off.\n"
           'cert_path = "/etc/fraiseql/tls/server.crt"\nkey_path = "/etc/fraiseql/tls/server.key"')
PROJECT_SAMPLE = DATA / "fraiseql.toml"
REFERENCE = Path("/work/shared/reference/operations-runbook.md")

DB_PASSWORD = "Sup3r-secret-db-pw"
ENV = {"DB_PASSWORD": DB_PASSWORD}

# Every key of the runbook's §1.2 file and its real v2 equivalent.
EXPECTED_V2 = {
    "[server] listen_addr": "bind_addr (or env FRAISEQL_BIND_ADDR)",
    "[server] tls_enabled": "[tls] enabled",
    "[server] tls_cert_path": "[tls] cert_path",
    "[server] tls_key_path": "[tls] key_path",
    "[server] min_tls_version": "[tls] min_version",
    "[database] url": "database_url (or env DATABASE_URL)",
    "[database] pool_size": "pool_max_size",
    "[database] connection_timeout": "pool_timeout_secs",
    "[security] security_profile": "no v2 equivalent",
    "[security] field_masking_enabled": "no v2 equivalent",
    "[security] error_redaction_enabled":
        "fraiseql.toml [fraiseql.security.error_sanitization] enabled",
    "[rate_limit] enabled": "[rate_limiting] enabled",
    "[rate_limit] rps_per_ip": "[rate_limiting] rps_per_ip",
    "[rate_limit] rps_per_user": "[rate_limiting] rps_per_user",
    "[rate_limit] burst_size": "[rate_limiting] burst_size",
    "[oidc] cache_ttl_secs": "[auth] jwks_cache_ttl_secs",
    "[oidc] key_rotation_check": "no v2 equivalent",
    "[audit] enabled": "fraiseql.toml [fraiseql.security.audit_logging] enabled",
    "[audit] log_level": "no v2 equivalent",
    "[audit] destination": "no v2 equivalent",
}
# What the rules say about the sample on a machine without its certificate files.
EXPECTED_SAMPLE_STATUS = {
    "config.format": "info",
    "config.keys": "ok",
    "config.v2.server": "warning",
    "config.v2.database": "warning",
    "config.v2.security": "warning",
    "config.v2.rate_limit": "warning",
    "config.v2.oidc": "warning",
    "config.v2.audit": "warning",
    "config.v2_mapping": "info",
    "config.env": "ok",
    "config.bind": "ok",
    "config.tls": "critical",  # /etc/fraiseql/certs/server.{crt,key} do not exist here
    "config.tls_version": "ok",
    "config.database_url": "ok",
    "config.pool": "info",  # max_connections not given
    "config.rate_limit": "ok",
    "config.audit": "ok",
    "config.security_profile": "ok",
}
EXIT_BY_STATUS = {Status.OK: EXIT_OK, Status.WARNING: EXIT_WARNING,
                  Status.CRITICAL: EXIT_CRITICAL}


def run(text: str, tmp_path: Path, name: str = "config.toml",
        **kwargs: object) -> list[config.ConfigResult]:
    path = tmp_path / name
    path.write_text(text)
    kwargs.setdefault("environ", {})
    return config.validate(config.load(path), **kwargs)  # type: ignore[arg-type]


def by_check(results: list[config.ConfigResult]) -> dict[str, list[config.ConfigResult]]:
    out: dict[str, list[config.ConfigResult]] = {}
    for r in results:
        out.setdefault(r.check, []).append(r)
    return out


def only(results: list[config.ConfigResult], check: str) -> config.ConfigResult:
    found = by_check(results)[check]
    assert len(found) == 1, found
    return found[0]


def everything(results: list[config.ConfigResult]) -> str:
    return "\n".join(repr(r) for r in results)


def validate_cli(path: Path, **kwargs: object) -> tuple[int, str]:
    buffer = io.StringIO()
    code = config.main_validate(path, out=buffer, **kwargs)  # type: ignore[arg-type]
    return code, buffer.getvalue()


# ---------------------------------------------------------------- the runbook's own file
@pytest.mark.skipif(not REFERENCE.exists(), reason="reference runbook not on this machine")
def test_fixture_is_the_runbook_sample_verbatim():
    block = REFERENCE.read_text().split("```toml\n", 1)[1].split("```", 1)[0]
    assert RUNBOOK_SAMPLE.read_text() == block


def test_runbook_sample_names_the_v2_equivalent_of_every_key():
    results = config.validate(config.load(RUNBOOK_SAMPLE), environ=ENV)
    assert only(results, "config.format").evidence["format"] == "runbook"
    mapping = only(results, "config.v2_mapping")
    rows = {row["key"]: row for row in mapping.evidence["rows"]}
    assert {k: row["v2"] for k, row in rows.items()} == EXPECTED_V2
    # values carried over in v2's units
    assert rows["[database] connection_timeout"]["v2_setting"] == "pool_timeout_secs = 30"
    assert rows["[database] pool_size"]["v2_setting"] == "pool_max_size = 50"
    assert rows["[oidc] cache_ttl_secs"]["v2_setting"] == "[auth] jwks_cache_ttl_secs = 300"
    assert rows["[database] url"]["v2_setting"] is None  # a secret: env DATABASE_URL
    server = mapping.evidence["v2_server_config"]
    assert 'bind_addr = "127.0.0.1:4000"' in server
    assert "pool_timeout_secs = 30" in server
    assert "[rate_limiting]\nenabled = true\nrps_per_ip = 100" in server
    assert "[auth]\njwks_cache_ttl_secs = 300" in server
    assert "DATABASE_URL" in server and "postgresql://" not in server
    project = mapping.evidence["fraiseql_toml"]
    assert "[fraiseql.security.error_sanitization]\nenabled = true" in project
    assert "[fraiseql.security.audit_logging]\nenabled = true" in project
    # one warning per refused section, naming each of its keys' equivalent
    for key, v2 in EXPECTED_V2.items():
        section, name = key[1:].split("] ")
        warning = only(results, f"config.v2.{section}")
        assert warning.status is Status.WARNING
        assert f"{name} -> {v2}" in warning.summary


def test_runbook_sample_status_is_that_of_its_findings(monkeypatch):
    results = config.validate(config.load(RUNBOOK_SAMPLE), environ=ENV)
    assert {r.check: str(r.status) for r in results} == EXPECTED_SAMPLE_STATUS
    assert len(results) == len(EXPECTED_SAMPLE_STATUS)
    tls = only(results, "config.tls")
    assert "/etc/fraiseql/certs/server.crt does not exist" in tls.summary
    monkeypatch.setenv("DB_PASSWORD", DB_PASSWORD)
    code, output = validate_cli(RUNBOOK_SAMPLE)
    assert code == EXIT_BY_STATUS[worst([Status(s) for s in EXPECTED_SAMPLE_STATUS.values()])]
    assert code == EXIT_CRITICAL
    for key, v2 in EXPECTED_V2.items():  # the CLI prints the whole mapping table
        assert any(line.strip().startswith(key) and v2.split(" (")[0] in line
                   for line in output.splitlines()), key
    assert DB_PASSWORD not in output
    assert DB_PASSWORD not in everything(results)


def test_runbook_sample_with_its_certificates_present_has_only_warnings(tmp_path):
    (tmp_path / "server.crt").write_text("cert")
    (tmp_path / "server.key").write_text("key")
    text = RUNBOOK_SAMPLE.read_text().replace("/etc/fraiseql/certs/", "")
    results = run(text, tmp_path, environ=ENV)  # relative paths resolve from the file's dir
    assert only(results, "config.tls").status is Status.OK
    assert worst([r.status for r in results]) is Status.WARNING


def test_runbook_sample_without_db_password_is_critical_naming_it():
    results = config.validate(config.load(RUNBOOK_SAMPLE), environ={})
    env = only(results, "config.env")
    assert env.status is Status.CRITICAL
    assert "DB_PASSWORD" in env.summary and env.evidence["variable"] == "DB_PASSWORD"
    assert "[database] url" in env.summary


def test_unknown_key_in_the_runbook_format_is_a_warning(tmp_path):
    text = RUNBOOK_SAMPLE.read_text().replace("pool_size = 50", "pool_sise = 50")
    unknown = only(run(text, tmp_path, environ=ENV), "config.unknown_keys")
    assert unknown.status is Status.WARNING
    assert "[database] pool_sise (did you mean [database] pool_size?)" in unknown.summary


# ---------------------------------------------------------------- the real v2 server config
def test_valid_v2_server_config_has_no_critical():
    doc = config.load(V2_SAMPLE)
    results = config.validate(doc, environ={"DATABASE_URL": "postgresql://u:pw-in-env@h/db"})
    assert only(results, "config.format").evidence["format"] == "v2-server"
    assert only(results, "config.keys").status is Status.OK
    assert only(results, "config.bind").status is Status.OK
    assert only(results, "config.tls").status is Status.WARNING  # terminated at the LB
    assert only(results, "config.database_url").status is Status.OK
    assert "pw-in-env" not in everything(results)
    assert not [r for r in results if r.status is Status.CRITICAL]
    assert worst([r.status for r in results]) is Status.WARNING


def test_v2_server_config_with_tls_and_env_is_ok(tmp_path):
    (tmp_path / "tls.crt").write_text("cert")
    (tmp_path / "tls.key").write_text("key")
    assert TLS_OFF in V2_SAMPLE.read_text()
    text = V2_SAMPLE.read_text().replace(
        TLS_OFF, 'enabled = true\ncert_path = "tls.crt"\nkey_path = "tls.key"\nmin_version = "1.3"')
    results = run(text, tmp_path, environ={"DATABASE_URL": "postgresql://u@h/db"},
                  max_connections=100)
    assert only(results, "config.tls").status is Status.OK
    assert only(results, "config.tls_version").status is Status.OK
    assert only(results, "config.pool").status is Status.OK
    assert worst([r.status for r in results]) is Status.OK


@pytest.mark.parametrize("section", ["server", "database", "cors", "rate_limit", "cache"])
def test_v2_server_config_with_a_refused_section_is_critical(tmp_path, section):
    text = V2_SAMPLE.read_text() + f"\n[{section}]\nport = 4000\n"
    results = run(text, tmp_path)
    assert only(results, "config.format").evidence["format"] == "v2-server"
    refused = only(results, "config.refused_section")
    assert refused.status is Status.CRITICAL
    assert f"[{section}] is refused by name" in refused.summary


def test_v2_server_config_with_an_unknown_key_is_critical(tmp_path):
    text = V2_SAMPLE.read_text().replace("request_timeout_secs = 30",
                                         'request_timeout_secs = 30\nbind_adress = "x"')
    unknown = only(run(text, tmp_path), "config.unknown_keys")
    assert unknown.status is Status.CRITICAL
    assert "bind_adress (did you mean bind_addr?)" in unknown.summary


def test_v2_server_config_does_not_expand_variables(tmp_path):
    text = 'bind_addr = "127.0.0.1:8000"\ndatabase_url = "postgresql://u:${DB_PASSWORD}@h/db"\n'
    results = run(text, tmp_path, environ=ENV)  # set, but the v2 server ignores it
    literal = only(results, "config.interpolation")
    assert literal.status is Status.CRITICAL
    assert "${DB_PASSWORD}" in literal.summary and "DATABASE_URL" in (literal.remediation or "")
    assert DB_PASSWORD not in everything(results)


def test_literal_token_in_v2_config_is_a_warning_and_masked(tmp_path):
    text = 'bind_addr = "127.0.0.1:8000"\nmetrics_token = "tok-abcdef-123456"\n'
    results = run(text, tmp_path)
    token = only(results, "config.literal_secret")
    assert token.status is Status.WARNING and "FRAISEQL_METRICS_TOKEN" in (token.remediation or "")
    assert "tok-abcdef-123456" not in everything(results)


# ---------------------------------------------------------------- the project file
def test_fraiseql_toml_example(tmp_path):
    results = config.validate(config.load(PROJECT_SAMPLE),
                              environ={"BLOG_DB_PASSWORD": DB_PASSWORD})
    assert only(results, "config.format").evidence["format"] == "fraiseql.toml"
    assert only(results, "config.keys").status is Status.OK
    assert only(results, "config.env").status is Status.OK
    assert only(results, "config.bind").status is Status.OK
    assert only(results, "config.rate_limit").status is Status.OK
    assert only(results, "config.audit").status is Status.OK
    assert only(results, "config.pool").evidence["pool_size"] == 10
    assert not [r for r in results if r.status is Status.CRITICAL]
    assert DB_PASSWORD not in everything(results)
    unset = config.validate(config.load(PROJECT_SAMPLE), environ={})
    assert "BLOG_DB_PASSWORD" in only(unset, "config.env").summary


def test_fraiseql_toml_defaults_and_public_host(tmp_path):
    results = run('[server]\nhost = "0.0.0.0"\nport = 8000\n[database]\npool_max = 5\n',
                  tmp_path, name="fraiseql.toml")
    assert only(results, "config.bind").status is Status.CRITICAL
    # absent [fraiseql.security.*] tables take the compiler's defaults: enabled
    assert only(results, "config.rate_limit").status is Status.OK
    assert "(default)" in only(results, "config.audit").summary


# ---------------------------------------------------------------- the rules
@pytest.mark.parametrize(("address", "status"), [
    ("0.0.0.0:8000", Status.CRITICAL),
    ("[::]:8000", Status.CRITICAL),
    ("8.8.8.8:8000", Status.CRITICAL),
    ("[2001:4860:4860::8888]:443", Status.CRITICAL),
    ("api.example.com:443", Status.CRITICAL),
    ("127.0.0.1", Status.CRITICAL),  # no port: not a socket address
    ("10.1.2.3:8000", Status.OK),
    ("172.20.0.5:8000", Status.OK),
    ("192.168.1.5:8000", Status.OK),
    ("169.254.10.1:8000", Status.OK),
    ("127.0.0.1:8000", Status.OK),
    ("localhost:4000", Status.OK),
    ("[::1]:8000", Status.OK),
    ("[fd12:3456::1]:8000", Status.OK),
    ("[fe80::1]:8000", Status.OK),
])
def test_listen_address(tmp_path, address, status):
    bind = only(run(f'bind_addr = "{address}"\n', tmp_path), "config.bind")
    assert bind.status is status, bind.summary
    if status is Status.CRITICAL and "0.0.0.0" in address:
        assert "never expose" in bind.summary


def test_listen_address_in_the_runbook_format(tmp_path):
    text = RUNBOOK_SAMPLE.read_text().replace("127.0.0.1:4000", "0.0.0.0:4000")
    assert only(run(text, tmp_path, environ=ENV), "config.bind").status is Status.CRITICAL


@pytest.mark.parametrize(("version", "status"), [
    ('"1.0"', Status.CRITICAL), ('"1.1"', Status.CRITICAL), ('"TLSv1.1"', Status.CRITICAL),
    ('"1.2"', Status.OK), ('"TLSv1.3"', Status.OK), ("1.3", Status.OK),
])
def test_minimum_tls_version(tmp_path, version, status):
    text = RUNBOOK_SAMPLE.read_text().replace('min_tls_version = "1.2"',
                                              f"min_tls_version = {version}")
    assert only(run(text, tmp_path, environ=ENV), "config.tls_version").status is status


def test_tls_disabled_is_a_warning_mentioning_the_load_balancer(tmp_path):
    text = RUNBOOK_SAMPLE.read_text().replace("tls_enabled = true", "tls_enabled = false")
    tls = only(run(text, tmp_path, environ=ENV), "config.tls")
    assert tls.status is Status.WARNING and "load balancer" in tls.summary


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_key_is_critical(tmp_path):
    (tmp_path / "server.crt").write_text("cert")
    key = tmp_path / "server.key"
    key.write_text("key")
    key.chmod(0)
    text = RUNBOOK_SAMPLE.read_text().replace("/etc/fraiseql/certs/", "")
    tls = only(run(text, tmp_path, environ=ENV), "config.tls")
    assert tls.status is Status.CRITICAL and "not readable" in tls.summary


@pytest.mark.parametrize(("pool", "instances", "status"), [
    (50, 3, Status.CRITICAL),  # 150 > 97
    (30, 3, Status.WARNING),   # 90 > 80 % of 97
    (20, 3, Status.OK),        # 60
])
def test_pool_against_max_connections(tmp_path, pool, instances, status):
    text = RUNBOOK_SAMPLE.read_text().replace("pool_size = 50", f"pool_size = {pool}")
    result = only(run(text, tmp_path, environ=ENV, max_connections=100, instances=instances),
                  "config.pool")
    assert result.status is status
    assert result.evidence["total"] == pool * instances
    assert result.evidence["available"] == 97


def test_pool_not_checked_without_max_connections():
    results = config.validate(config.load(RUNBOOK_SAMPLE), environ=ENV, instances=3)
    pool = only(results, "config.pool")
    assert pool.status is Status.INFO and "not checked" in pool.summary
    assert pool.evidence["total"] == 150


def test_burst_below_rps_is_a_warning(tmp_path):
    text = RUNBOOK_SAMPLE.read_text().replace("burst_size = 500", "burst_size = 50")
    rate = only(run(text, tmp_path, environ=ENV), "config.rate_limit")
    assert rate.status is Status.WARNING and "burst_size = 50" in rate.summary


def test_rate_limiting_and_audit_disabled_are_warnings(tmp_path):
    text = (RUNBOOK_SAMPLE.read_text()
            .replace("[rate_limit]\nenabled = true", "[rate_limit]\nenabled = false")
            .replace("[audit]\nenabled = true", "[audit]\nenabled = false"))
    results = run(text, tmp_path, environ=ENV)
    assert only(results, "config.rate_limit").status is Status.WARNING
    assert only(results, "config.audit").status is Status.WARNING


def test_regulated_profile_without_field_masking_is_critical(tmp_path):
    text = RUNBOOK_SAMPLE.read_text().replace("field_masking_enabled = true",
                                              "field_masking_enabled = false")
    profile = only(run(text, tmp_path, environ=ENV), "config.security_profile")
    assert profile.status is Status.CRITICAL
    assert "field masking" in profile.summary and "error redaction" not in profile.summary


def test_literal_password_in_url_is_a_warning_never_shown(tmp_path):
    password = "Hunter2-literal"
    text = RUNBOOK_SAMPLE.read_text().replace("${DB_PASSWORD}", password)
    path = tmp_path / "config.toml"
    path.write_text(text)
    results = config.validate(config.load(path), environ={})
    url = only(results, "config.database_url")
    assert url.status is Status.WARNING and "literal password" in url.summary
    assert password not in everything(results)
    code, output = validate_cli(path)
    assert password not in output
    assert "fraiseql_user:***@postgres" in output


def test_wrong_types_and_ranges_are_critical(tmp_path):
    text = (RUNBOOK_SAMPLE.read_text().replace("pool_size = 50", 'pool_size = "fifty"')
            .replace('connection_timeout = "30s"', "connection_timeout = 0"))
    values = by_check(run(text, tmp_path, environ=ENV))["config.value"]
    summaries = " | ".join(v.summary for v in values)
    assert all(v.status is Status.CRITICAL for v in values)
    assert '[database] pool_size = "fifty" must be a whole number' in summaries
    assert "[database] connection_timeout = 0 must be between 1 and 3600 seconds" in summaries


def test_syntax_error_is_critical_with_line_and_column(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('[server]\nlisten_addr = "127.0.0.1:4000"\nadmin_token = "abc\n')
    doc = config.load(path)
    [result] = config.validate(doc)
    assert result.check == "config.syntax" and result.status is Status.CRITICAL
    assert result.evidence["line"] == 3 and result.evidence["column"] > 1
    assert f"line 3, column {result.evidence['column']}" in result.summary
    assert "abc" not in result.evidence["excerpt"]  # a secret-looking line is masked
    code, output = validate_cli(path)
    assert code == EXIT_CRITICAL and "config.syntax" in output


def test_missing_file_is_a_usage_error(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(UsageError, match=f"config file not found: {missing}"):
        config.load(missing)
    with pytest.raises(UsageError):
        config.main_validate(missing, out=io.StringIO())


def test_ambiguous_and_unrecognisable_files_say_so(tmp_path):
    mixed = run('bind_addr = "127.0.0.1:8000"\npool_max_size = 10\n[oidc]\ncache_ttl_secs = 5\n',
                tmp_path)
    fmt = only(mixed, "config.format")
    assert fmt.evidence["format"] == "v2-server" and fmt.evidence["ambiguous"]
    assert "ambiguous" in fmt.summary
    unknown = only(mixed, "config.unknown_keys")
    assert "[auth] jwks_cache_ttl_secs" in unknown.summary  # the runbook name's v2 key
    empty = only(run("", tmp_path), "config.format")
    assert empty.status is Status.WARNING and "no key belongs" in empty.summary


def test_duration_and_version_parsing():
    assert config.seconds("30s") == 30 and config.seconds("500ms") == 0.5
    assert config.seconds("5m") == 300 and config.seconds(30) == 30
    assert config.seconds("soon") is None
    assert config.tls_version("TLSv1.2") == (1, 2) and config.tls_version(1.3) == (1, 3)
    assert config.tls_version("tls1_1") == (1, 1) and config.tls_version("2.0") is None


# ---------------------------------------------------------------- CLI, pool_max, check_config
def test_main_validate_prints_one_line_per_finding_and_exit_code(tmp_path, monkeypatch):
    monkeypatch.setenv("DB_PASSWORD", DB_PASSWORD)
    code, output = validate_cli(V2_SAMPLE)
    lines = output.splitlines()
    assert code == EXIT_WARNING
    assert lines[0].startswith("INFO      config.format  recognised as the FraiseQL v2 server")
    assert any(line.startswith('OK        config.bind  bind_addr = "10.0.1.5:8000" is private')
               for line in lines)
    tls = lines.index(next(line for line in lines if line.startswith("WARNING   config.tls")))
    assert lines[tls + 1].startswith("          -> ")
    assert lines[-1].startswith("Overall status: WARNING")

    copy = tmp_path / "good.toml"
    shutil.copy(V2_SAMPLE, copy)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@10.0.0.9/db")
    copy.write_text(copy.read_text().replace(
        TLS_OFF, 'enabled = true\ncert_path = "c.pem"\nkey_path = "k.pem"'))
    (tmp_path / "c.pem").write_text("c")
    (tmp_path / "k.pem").write_text("k")
    assert validate_cli(copy)[0] == EXIT_OK
    code, output = validate_cli(RUNBOOK_SAMPLE, max_connections=100, instances=3)
    assert code == EXIT_CRITICAL
    assert any(line.startswith("CRITICAL  config.pool  pool 50") for line in output.splitlines())


@pytest.mark.parametrize(("text", "expected"), [
    ("pool_max_size = 12\n", (12, "pool_max_size in the v2 server config")),
    ("[database]\npool_max = 7\n", (7, "[database] pool_max in c.toml")),
    ("[database]\npool_size = 50\n", (50, "[database] pool_size in c.toml")),
    ('bind_addr = "127.0.0.1:1"\n', (None, "config file names no pool size")),
    ("not toml [[[\n", (None, "config file unreadable")),
])
def test_pool_max_from_each_format(tmp_path, text, expected):
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert config.pool_max(path) == expected
    assert config.pool_max(None) == (None, "no config file")
    assert config.pool_max(tmp_path / "missing") == (None, "no config file")


def test_check_config_records_findings_with_instances_from_the_target(monkeypatch):
    monkeypatch.setenv("DB_PASSWORD", DB_PASSWORD)
    target = inventory.Target("prod", {
        "fraiseql_url": "http://10.0.0.1:4000", "config_path": str(RUNBOOK_SAMPLE),
        "instances": ["http://10.0.0.1:4000", "http://10.0.0.2:4000", "http://10.0.0.3:4000"]})
    ctx = RunContext.adhoc("preflight", target)
    findings = config.check_config(ctx, max_connections=100)
    assert [f.check for f in findings] == [f.check for f in ctx.log.findings]
    pool = next(f for f in findings if f.check == "config.pool")
    assert pool.status is Status.CRITICAL and pool.evidence["instances"] == 3
    mapping = next(f for f in findings if f.check == "config.v2_mapping")
    assert len(mapping.table) == len(EXPECTED_V2)
    assert ctx.status is Status.CRITICAL
    assert DB_PASSWORD not in repr(ctx.log.to_dict())


def test_check_config_missing_file_is_unknown(tmp_path):
    ctx = RunContext.adhoc("preflight")
    [finding] = config.check_config(ctx, tmp_path / "nope.toml", instances=1)
    assert finding.check == "config.file" and finding.status is Status.UNKNOWN


@pytest.mark.parametrize(("extra", "expected"), [
    ("introspection_enabled = true\nintrospection_require_auth = false\n", Status.WARNING),
    ("introspection_enabled = true\n", Status.INFO),
    ("introspection_enabled = false\n", None),
])
def test_introspection_rule(tmp_path, extra, expected):
    path = tmp_path / "server.toml"
    path.write_text('bind_addr = "127.0.0.1:8000"\n' + extra)
    found = [r for r in config.validate(config.load(path)) if r.check == "config.introspection"]
    assert [r.status for r in found] == ([expected] if expected else [])
