import pytest

from fraiseql_rb import inventory, secrets
from fraiseql_rb.errors import InventoryError, SecretError

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
