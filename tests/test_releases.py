"""The release catalogue (issue 11 §1): version parsing and "not available before" texts."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraiseql_rb.core import releases
from fraiseql_rb.core.releases import Version, parse_version

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("text", "expected"), [
    ("2.14.1", Version(2, 14, 1)),
    ("2.15.0-dev", Version(2, 15, 0, "dev")),
    ("2.15.0-standin", Version(2, 15, 0, "standin")),
    ("v2.9.3", Version(2, 9, 3)),
    ("2.3", Version(2, 3, 0)),
])
def test_versions_parse(text, expected):
    assert parse_version(text) == expected


@pytest.mark.parametrize("text", [None, "", "garbage", "2", "latest", "2.x.1", 214, {}])
def test_missing_or_garbage_is_no_version(text):
    assert parse_version(text) is None


def test_the_reference_release_table():
    v = parse_version
    assert releases.available("root_typename", v("2.9.9")) is False
    assert releases.available("root_typename", v("2.10.0")) is True
    assert releases.available("root_typename", v("2.10.0-dev")) is True  # main on its way
    assert releases.available("duration_histograms", v("2.0.5")) is False
    assert releases.available("pool_requests_waiting", v("2.1.0")) is True
    assert releases.available("admin_health_detailed", v("2.2.9")) is False
    assert releases.available("admin_health_detailed", v("2.3.0")) is True
    for name in ("query_cost_metric", "timeout_504", "cache_stats_list"):
        assert releases.available(name, v("2.14.1")) is False, name
        assert releases.available(name, v("2.15.0-dev")) is True, name


def test_an_unknown_version_is_not_known_to_lack_anything():
    for name in releases.FEATURES:
        assert releases.available(name, None) is None
        assert not releases.lacks(name, None)


def test_the_info_text_names_both_versions():
    text = releases.not_available("root_typename", parse_version("2.9.0"))
    assert "not available before v2.10.0 (this server reports v2.9.0)" in text
    text = releases.not_available("query_cost_metric", parse_version("2.14.1"))
    assert "not available before the release after v2.14.1" in text
    assert "(this server reports v2.14.1)" in text


def test_every_metric_concept_feature_is_in_the_catalogue():
    from fraiseql_rb.targets import metrics

    for concept, name in releases.CONCEPT_FEATURES.items():
        assert concept in metrics.CONCEPTS and name in releases.FEATURES


def test_an_unknown_feature_is_a_key_error():
    with pytest.raises(KeyError, match="unknown feature"):
        releases.available("nonesuch", None)


def test_readme_release_table_is_the_catalogue() -> None:
    """README's table of what each check needs is rendered from FEATURES, never by hand."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("<!-- releases -->\n", 1)[1].split("\n<!-- /releases -->", 1)[0]
    assert block == releases.markdown_table()
    for feature in releases.FEATURES.values():
        assert feature.used_by, f"{feature.name}: say which checks need it"
