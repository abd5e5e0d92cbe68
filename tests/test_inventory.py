import pytest

from fraiseql_rb.core import inventory, secrets
from fraiseql_rb.core.errors import InventoryError, SecretError

SAMPLE = """
[targets.prod]
fraiseql_url = "https://api.example.test/"
database_url = "postgresql://fraiseql_user:${PROD_DB_PASSWORD}@db.example.test:5432/fraiseql"
metrics_token_env = "PROD_METRICS_TOKEN"
admin_token_file = "secrets/admin_token"
config_path = "etc/config.toml"
instances = ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]

[targets.sandbox]
fraiseql_url = "http://127.0.0.1:8000"
database_url = "postgresql://fraiseql_user@127.0.0.1:5433/fraiseql"
database_password_file = "secrets/db_password"
"""


@pytest.fixture
def inv_path(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "admin_token").write_text("admin-token-xyz123\n")
    (tmp_path / "secrets" / "db_password").write_text("p@ss/word:1\n")
    path = tmp_path / "fraiseql-rb.toml"
    path.write_text(SAMPLE)
    return path


def test_secrets_are_read_at_use_from_env_file_and_url(inv_path, monkeypatch):
    monkeypatch.setenv("PROD_DB_PASSWORD", "from-env-pw-42")
    monkeypatch.setenv("PROD_METRICS_TOKEN", "metrics-tok-777")
    prod = inventory.load(inv_path).target("prod")
    assert prod.fraiseql_url == "https://api.example.test"
    assert "from-env-pw-42" in prod.database_url()
    assert prod.metrics_token() == "metrics-tok-777"
    assert prod.admin_token() == "admin-token-xyz123"
    assert prod.instances == ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
    assert prod.get("config_path") == str(inv_path.parent / "etc/config.toml")
    # everything read is now masked
    assert secrets.mask(prod.database_url()).count("from-env-pw-42") == 0


def test_password_file_is_url_quoted_into_the_url(inv_path):
    sandbox = inventory.load(inv_path).target("sandbox")
    url = sandbox.database_url()
    assert url == "postgresql://fraiseql_user:p%40ss%2Fword%3A1@127.0.0.1:5433/fraiseql"
    assert sandbox.instances == ["http://127.0.0.1:8000"]


def test_unset_variable_is_a_clear_error(inv_path, monkeypatch):
    monkeypatch.delenv("PROD_DB_PASSWORD", raising=False)
    with pytest.raises(SecretError, match=r"\$\{PROD_DB_PASSWORD\}, which is not set"):
        inventory.load(inv_path).target("prod").database_url()


def test_unset_token_env_is_a_clear_error(inv_path, monkeypatch):
    monkeypatch.delenv("PROD_METRICS_TOKEN", raising=False)
    with pytest.raises(SecretError, match="PROD_METRICS_TOKEN"):
        inventory.load(inv_path).target("prod").metrics_token()


def test_unknown_target_lists_known_ones(inv_path):
    with pytest.raises(InventoryError, match=r"unknown target 'stage'.*prod, sandbox"):
        inventory.load(inv_path).target("stage")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(InventoryError, match="not found"):
        inventory.load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[targets.x\nfraiseql_url = 1")
    with pytest.raises(InventoryError, match="not valid TOML"):
        inventory.load(bad)
    empty = tmp_path / "empty.toml"
    empty.write_text("title = 'x'\n")
    with pytest.raises(InventoryError, match=r"no \[targets.NAME\]"):
        inventory.load(empty)


def test_locate_order(tmp_path, monkeypatch, inv_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FRAISEQL_RB_SANDBOX_DIR", str(tmp_path / "no-sandbox"))
    monkeypatch.delenv("FRAISEQL_RB_INVENTORY", raising=False)
    assert inventory.locate() == inventory.Path("fraiseql-rb.toml")
    other = tmp_path / "other.toml"
    other.write_text(SAMPLE)
    monkeypatch.setenv("FRAISEQL_RB_INVENTORY", str(other))
    assert inventory.locate() == other
    monkeypatch.setenv("FRAISEQL_RB_INVENTORY", str(tmp_path / "gone.toml"))
    with pytest.raises(InventoryError, match="FRAISEQL_RB_INVENTORY"):
        inventory.locate()


# ---- every key's type is checked when the inventory is read (issue 9 point 7) ----------------

def _inventory_with(tmp_path, line):
    path = tmp_path / "inv.toml"
    path.write_text(f'[targets.prod]\ndescription = "production"\n{line}\n')
    return path


@pytest.mark.parametrize(("line", "message"), [
    ("fraiseql_url = 1", "targets.prod.fraiseql_url must be an http(s) URL string, got integer 1"),
    ('fraiseql_url = "localhost:8000"',
     "fraiseql_url must be an http(s) URL string, got string 'localhost:8000'"),
    ('prometheus_url = "http://prom:9o90"', "prometheus_url must be an http(s) URL string"),
    ('database_url = "mysql://db/fraiseql"',
     "database_url must be a postgres:// or postgresql:// URL string"),
    ("admin_database_url = true", "admin_database_url must be a postgres:// or postgresql://"),
    ('redis_url = "http://cache:6379"', "redis_url must be a redis:// or rediss:// URL string"),
    ('instances = "http://10.0.0.1:8000"',
     "instances must be a list of http(s) URL strings, got string 'http://10.0.0.1:8000'"),
    ('instances = ["http://10.0.0.1:8000", 8000]',
     "instances[1] must be an http(s) URL string, got integer 8000"),
    ('metrics_token_env = "$FRAISEQL_METRICS_TOKEN"',
     "metrics_token_env must be a string naming an environment variable"),
    ("admin_token_file = 5", "admin_token_file must be a file path string, got integer 5"),
    ('ha = "yes"', "ha must be true or false, got string 'yes'"),
    ('restart_command = ["systemctl", "restart", "fraiseql"]',
     'restart_command must be a command string, got array ["systemctl", "restart", '),
    ('backup_dir = ""', "backup_dir must be a path string, got string ''"),
    ("probe_query = 42", "probe_query must be a GraphQL query string"),
    ('notify = "mailto://ops@example.test"', "notify must be a list of apprise URL strings"),
    ("notify_env = 1", "notify_env must be a string naming an environment variable"),
    ('site_url = "reports.example.test"', "site_url must be an http(s) URL string"),
    ('upgrade_command = 1.5', "upgrade_command must be a command string, got float 1.5"),
    ("replica_fraiseql_url = 3", "replica_fraiseql_url must be an http(s) URL string"),
    ("oidc_issuer = 2026-01-01", "oidc_issuer must be an http(s) URL string, got date"),
])
def test_a_known_key_of_the_wrong_type_is_refused_when_read(tmp_path, line, message):
    path = _inventory_with(tmp_path, line)
    with pytest.raises(InventoryError) as caught:
        inventory.load(path)
    assert str(caught.value).startswith(f"inventory {path}: targets.prod.")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_secret_values_are_not_echoed_in_type_errors(tmp_path):
    with pytest.raises(InventoryError) as caught:
        inventory.load(_inventory_with(tmp_path, "database_password = 12345678"))
    assert "database_password must be a string" in str(caught.value)
    assert "12345678" not in str(caught.value)
    with pytest.raises(InventoryError) as caught:
        inventory.load(_inventory_with(tmp_path, 'redis_url = "http://u:hunter2-pw@cache/0"'))
    assert "hunter2-pw" not in str(caught.value) and "redis_url" in str(caught.value)


def test_valid_forms_and_unknown_keys_are_accepted(tmp_path, monkeypatch):
    path = tmp_path / "inv.toml"
    path.write_text("""
[targets.prod]
fraiseql_url = "${FRAISEQL_URL}"
database_url = "host=db.example.test dbname=fraiseql user=fraiseql_user"
database_password_env = "DB_PW"
replica_database_url = "postgresql:///fraiseql?host=/run/postgresql"
admin_database_url = "postgres://admin:${ADMIN_PW}@db.example.test:${PG_PORT}/fraiseql"
redis_url = "rediss://cache.example.test:6380/0"
instances = ["https://${HOST_A}:8000", "http://10.0.0.2:8000"]
notify = ["mailto://ops@example.test", "slack://T1/B2/C3"]
ha = true
favourite_colour = 3
""")
    monkeypatch.setenv("DB_PW", "it's a \\ secret")
    prod = inventory.load(path).target("prod")
    assert inventory.load(path).unknown_keys() == {"prod": ["favourite_colour"]}
    # a libpq key=value database_url gets its password too, quoted as libpq wants
    from psycopg.conninfo import conninfo_to_dict

    assert conninfo_to_dict(prod.database_url())["password"] == "it's a \\ secret"


def test_non_utf8_toml_errors_and_non_table_targets_are_one_line(tmp_path):
    latin = tmp_path / "latin1.toml"
    latin.write_bytes('[targets.prod]\nfraiseql_url = "http://café.example.test"\n'
                      .encode("latin-1"))
    with pytest.raises(InventoryError,
                       match=r"inventory .*latin1\.toml is not UTF-8 text \(byte 0xe9 on line 2\)"):
        inventory.load(latin)
    bad = tmp_path / "bad.toml"
    bad.write_text('[targets.prod]\nfraiseql_url = "http://x\n')
    with pytest.raises(InventoryError, match=r"not valid TOML: .*line 2, column"):
        inventory.load(bad)
    flat = tmp_path / "flat.toml"
    flat.write_text('[targets]\nprod = "http://10.0.0.1:8000"\n')
    with pytest.raises(InventoryError,
                       match=r"flat\.toml: targets\.prod must be a table \(\[targets\.prod\]\), "
                             r"got string 'http://10\.0\.0\.1:8000'"):
        inventory.load(flat)


def test_the_sandbox_writes_an_inventory_that_passes_the_checks(tmp_path):
    """`sandbox up` writes its inventory with `manager.write_inventory`: run that writer on a
    sandbox state with every optional service, and read the result back."""
    from fraiseql_rb.sandbox import manager

    sb = manager.Sandbox(tmp_path / "sb", {"pg_port": 5999, "server_port": 8999,
                                           "redis_port": 6999, "prometheus_port": 9999})
    sb.root.mkdir()
    for name in manager.SECRET_NAMES:
        sb.write_secret(name, f"{name}-value")
    manager.write_inventory(sb)
    loaded = inventory.load(sb.inventory)
    assert loaded.unknown_keys() == {}
    raw = loaded.target("sandbox").raw
    assert {"redis_url", "prometheus_url", "admin_database_url", "restart_command"} <= set(raw)
