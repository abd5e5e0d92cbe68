"""Config files as they really are (issue 11 §5): both real shapes, every key, file values.

The fixtures under tests/data/configs/ hold every key of the server config and of both
readings of fraiseql.toml (TomlProjectConfig and TomlSchema), plus the defect cases.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from fraiseql_rb.checks import config
from fraiseql_rb.core.findings import Status

DATA = Path(__file__).parent / "data" / "configs"
ENV = {"BLOG_DB_PASSWORD": "Sup3r-secret-db-pw"}


def results_of(name: str, text: str | None = None, tmp_path: Path | None = None,
               environ: dict[str, str] | None = None) -> list[config.ConfigResult]:
    path = DATA / name
    if text is not None:
        assert tmp_path is not None
        path = tmp_path / name
        path.write_text(text)
    return config.validate(config.load(path), environ=ENV if environ is None else environ)


def found(results: list[config.ConfigResult], check: str) -> list[config.ConfigResult]:
    return [r for r in results if r.check == check]


def only(results: list[config.ConfigResult], check: str) -> config.ConfigResult:
    [result] = found(results, check)
    return result


def leaves(name: str) -> set[str]:
    doc = config.load(DATA / name)
    return {path for path, _ in config._leaves(doc.data, config.TABLES[config.Format.SERVER]
                                                if name.startswith("server")
                                                else config.TABLES[config.Format.PROJECT])}


# ------------------------------------------------------------------ the defect cases
def test_schema_authoring_file_has_no_unknown_keys():
    results = results_of("schema-authoring.toml")
    assert only(results, "config.format").evidence["format"] == "fraiseql.toml"
    assert found(results, "config.unknown_keys") == []
    assert only(results, "config.keys").status is Status.OK


def test_tls_enabled_false_is_tls_off_without_demanding_files():
    for name in ("tls-disabled.toml", "schema-authoring.toml"):
        results = results_of(name)
        tls = only(results, "config.tls")
        assert tls.status is Status.WARNING, tls.summary  # as plain HTTP is everywhere
        assert "TLS is not enabled" in tls.summary and "enabled = false" in tls.summary
        assert "certificate" not in tls.summary and "key" not in tls.summary.replace(
            "keys", "")
        assert tls.evidence["tls_enabled"] is False
        assert not [r for r in results if r.status is Status.CRITICAL], name
        assert found(results, "config.tls_version") == []


def test_tls_table_naming_files_without_enabled_is_off():
    tls = only(results_of("tls-table-without-enabled.toml"), "config.tls")
    assert tls.status is Status.WARNING
    assert "[server.tls] enabled = false (default)" in tls.summary
    assert "names a certificate" in tls.summary


def test_burst_size_is_the_files_own_value():
    rate = only(results_of("schema-authoring.toml"), "config.rate_limit")
    assert rate.status is Status.OK
    assert rate.evidence == {"rps_per_ip": 100, "burst_size": 200}
    assert "[security.rate_limiting] enabled" in rate.summary and "(default)" not in rate.summary
    assert "burst 200" in rate.summary


def test_schema_authoring_rate_limiting_absent_takes_that_readers_default(tmp_path):
    text = (DATA / "schema-authoring.toml").read_text().replace(
        "[security.rate_limiting]\nenabled = true\nrequests_per_second = 100\nburst_size = 200\n",
        "")
    rate = only(results_of("fraiseql.toml", text, tmp_path), "config.rate_limit")
    # TomlSchema's [security.rate_limiting] is optional and off when absent
    assert rate.status is Status.WARNING and "[security.rate_limiting] enabled" in rate.summary


def test_truly_unknown_keys_are_still_flagged_with_a_suggestion(tmp_path):
    text = (DATA / "schema-authoring.toml").read_text().replace(
        "keep_alive_secs = 75", "keep_alive_secs = 75\nkeep_alive_sec = 5").replace(
        "burst_size = 200", "burst_size = 200\nburst = 5")
    unknown = only(results_of("fraiseql.toml", text, tmp_path), "config.unknown_keys")
    assert unknown.status is Status.CRITICAL  # every fraiseql.toml struct denies unknown keys
    assert unknown.evidence["unknown"] == ["[server] keep_alive_sec",
                                           "[security.rate_limiting] burst"]
    assert "[server] keep_alive_sec (did you mean [server] keep_alive_secs?)" in unknown.summary


def test_runbook_names_in_a_project_file_keep_their_explanation(tmp_path):
    text = '[server]\nhost = "127.0.0.1"\n[database]\npool_size = 10\n'
    unknown = only(results_of("fraiseql.toml", text, tmp_path), "config.unknown_keys")
    assert ("[database] pool_size (the runbook's name; fraiseql.toml: [database] pool_max)"
            in unknown.summary)


# ------------------------------------------------------------------ the server config
def test_real_top_level_server_keys_are_known_and_file_values_reported():
    results = results_of("server-real-top-level.toml")
    assert only(results, "config.format").evidence["format"] == "v2-server"
    assert found(results, "config.unknown_keys") == []
    rate = only(results, "config.rate_limit")  # [rate_limiting] written: enabled by default
    assert rate.status is Status.OK
    assert rate.evidence == {"rps_per_ip": 50, "burst_size": 200}


def test_server_tls_table_without_its_required_keys_is_refused():
    results = results_of("server-tls-without-paths.toml")
    missing = [r for r in found(results, "config.value") if "required" in r.summary]
    assert [r.status for r in missing] == [Status.CRITICAL, Status.CRITICAL]
    assert "[tls] cert_path is required" in missing[0].summary
    assert "[tls] key_path is required" in missing[1].summary
    tls = only(results, "config.tls")
    assert tls.status is Status.WARNING and "no certificate" not in tls.summary


def test_server_unknown_key_in_a_nested_table_is_ignored_not_fatal(tmp_path):
    text = 'bind_addr = "127.0.0.1:8000"\n[rate_limiting]\nenabled = true\nrps = 5\n'
    unknown = only(results_of("server.toml", text, tmp_path), "config.unknown_keys")
    assert unknown.status is Status.WARNING and "[rate_limiting] rps" in unknown.summary
    assert "ignored" in unknown.summary
    text = 'bind_addr = "127.0.0.1:8000"\nbind_adress = "x"\n'
    unknown = only(results_of("server.toml", text, tmp_path), "config.unknown_keys")
    assert unknown.status is Status.CRITICAL


def test_removed_database_tls_switch_is_critical(tmp_path):
    text = 'bind_addr = "127.0.0.1:8000"\n[database_tls]\nredis_ssl = true\n'
    value = only(results_of("server.toml", text, tmp_path), "config.value")
    assert value.status is Status.CRITICAL and "rediss://" in value.summary


# ------------------------------------------------------------------ every key of both shapes
@pytest.mark.parametrize(("fixtures", "fmt"), [
    (("server-full.toml",), config.Format.SERVER),
    (("project-full.toml", "schema-full.toml"), config.Format.PROJECT),
])
def test_full_fixtures_cover_every_key_of_the_shape(fixtures, fmt):
    table = config.TABLES[fmt]
    covered = set().union(*(leaves(name) for name in fixtures))
    expected = {path for path, key in table.items() if key.kind != "removed"}
    assert covered == expected


@pytest.mark.parametrize("name", ["server-full.toml", "project-full.toml",
                                  "schema-full.toml"])
def test_full_fixture_is_recognised_and_every_key_valid(name):
    results = results_of(name)
    expected = "v2-server" if name.startswith("server") else "fraiseql.toml"
    assert only(results, "config.format").evidence["format"] == expected
    assert found(results, "config.unknown_keys") == []
    assert found(results, "config.value") == []
    assert "fake-admin-token-for-tests" not in repr(results)
    assert ENV["BLOG_DB_PASSWORD"] not in repr(results)


def test_every_key_says_its_type_default_meaning_and_struct():
    for fmt in (config.Format.SERVER, config.Format.PROJECT):
        for key in config.TABLES[fmt].values():
            assert key.meaning and key.source and key.kind, key.path


def test_mixed_project_readers_are_flagged(tmp_path):
    text = '[project]\nname = "blog"\n[schema]\nname = "blog"\n'
    mixed = only(results_of("fraiseql.toml", text, tmp_path), "config.project_shape")
    assert mixed.status is Status.CRITICAL
    assert "[project]" in mixed.summary and "[schema]" in mixed.summary


def test_validate_config_cli_on_each_fixture():
    for path in sorted(DATA.glob("*.toml")):
        out = io.StringIO()
        code = config.main_validate(path, out=out)
        assert code in (0, 1, 2), path
        assert out.getvalue().splitlines()[-1].startswith("Overall status: ")


def test_redis_password_in_a_project_file_is_never_shown(tmp_path):
    text = ('[schema]\nname = "blog"\n[security.rate_limiting]\nenabled = true\n'
            'redis_url = "redis://:Redis-pw-123@redis.internal:6379/0"\nburst_size = "x"\n')
    results = results_of("fraiseql.toml", text, tmp_path)
    assert only(results, "config.value").status is Status.CRITICAL  # burst_size's type
    assert "Redis-pw-123" not in repr(results)
