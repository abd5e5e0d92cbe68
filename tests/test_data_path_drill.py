"""The data-path probe on the drill sandbox (issue 11 §1): `{ __typename }` never touches the
database, so with the database down or an operation failing it still passes, while the
inventory's probe_query (a read of v_post) is critical and says why."""

from __future__ import annotations

import pytest

from fraiseql_rb.checks import service as service_checks
from fraiseql_rb.core import inventory
from fraiseql_rb.core.context import RunContext
from fraiseql_rb.core.findings import Status

pytestmark = pytest.mark.drill


def _ctx(sandbox) -> RunContext:
    return RunContext.adhoc("test", inventory.load_target("sandbox", sandbox.inventory))


def test_data_path_passes_on_a_healthy_sandbox(healthy_sandbox):
    found = service_checks.check_data_path(_ctx(healthy_sandbox))
    assert found.status is Status.OK, found.summary
    assert "posts" in found.summary


@pytest.mark.parametrize(("fault", "said"), [("db-down", ""), ("error-spike", "error-spike")])
def test_data_path_fails_where_typename_passes(healthy_sandbox, fault, said):
    healthy_sandbox.fault(fault)
    ctx = _ctx(healthy_sandbox)
    typename = service_checks.check_graphql(ctx)
    found = service_checks.check_data_path(ctx)
    assert typename.status is Status.OK, typename.summary
    assert found.status is Status.CRITICAL, found.summary
    # the GraphQL error, or (db-down on a loaded machine) no answer within the timeout while
    # the server waits for its pool: either way the read through PostgreSQL failed
    assert found.evidence["errors"] or (fault == "db-down"
                                        and found.evidence["http_status"] is None), found.evidence
    assert said in found.summary
