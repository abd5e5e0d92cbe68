from fraiseql_rb.core import secrets


def test_registered_value_is_masked_everywhere():
    secrets.register("s3cr3t-token-value")
    assert secrets.mask("Bearer s3cr3t-token-value!") == "Bearer ***!"
    assert secrets.mask_data({"a": ["x s3cr3t-token-value y"]}) == {"a": ["x *** y"]}


def test_url_password_is_masked_even_when_unregistered():
    text = "postgresql://fraiseql_user:hunter2hunter@db:5432/fraiseql failed"
    assert secrets.mask(text) == "postgresql://fraiseql_user:***@db:5432/fraiseql failed"


def test_secret_named_keys_lose_their_value():
    masked = secrets.mask_data({"metrics_token": "abc", "admin_password": "x", "count": 3})
    assert masked == {"metrics_token": "***", "admin_password": "***", "count": 3}


def test_short_values_are_not_masked_by_value():
    secrets.register("123")  # would shred every number if masked
    assert secrets.mask("port 1234") == "port 1234"


def test_secret_looking_environment_is_registered():
    secrets.register_environment({"MY_API_TOKEN": "env-token-987654", "HOME": "/root/home"})
    assert secrets.mask("env-token-987654 in /root/home") == "*** in /root/home"
