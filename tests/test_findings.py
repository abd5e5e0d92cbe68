import json

from fraiseql_rb.core.findings import FindingsLog, Status, worst


def test_worst_ranks_unknown_between_warning_and_critical():
    assert worst(["ok", "warning"]) is Status.WARNING
    assert worst(["warning", "unknown"]) is Status.UNKNOWN
    assert worst(["unknown", "critical", "ok"]) is Status.CRITICAL
    assert worst(["ok", "info"]) is Status.OK


def test_info_never_decides_and_nothing_recorded_is_unknown():
    assert worst(["info"]) is Status.UNKNOWN
    assert worst([]) is Status.UNKNOWN


def test_every_record_is_on_disk_in_the_documented_shape(tmp_path):
    path = tmp_path / "findings.json"
    log = FindingsLog("service-down", "sandbox", incident_id="INC-42",
                      parameters={"target": "sandbox", "admin_token": "secret"}, path=path)
    log.record("database.reachable", "critical", "cannot connect", {"port": 5432}, "page DBA")
    on_disk = json.loads(path.read_text())  # written before finish(): a crash keeps it
    assert on_disk["status"] == "critical"
    assert on_disk["parameters"]["admin_token"] == "***"
    assert set(on_disk) == {"runbook", "target", "incident_id", "started_at", "finished_at",
                            "interrupted_at", "run_by", "fraiseql_rb_version",
                            "notebook_sha256", "parameters", "status", "findings", "actions"}
    assert on_disk["finished_at"] is None  # still running
    finding = on_disk["findings"][0]
    assert set(finding) == {"check", "status", "at", "summary", "evidence", "remediation"}
    assert finding["at"].endswith("Z")
    log.action("restart_service", "systemctl restart fraiseql", executed=False)
    on_disk = json.loads(path.read_text())
    assert on_disk["actions"][0] == {"action": "restart_service",
                                     "command": "systemctl restart fraiseql",
                                     "executed": False, "result": None,
                                     "at": on_disk["actions"][0]["at"], "confirmed_by": None}


def test_from_file_round_trips(tmp_path):
    path = tmp_path / "findings.json"
    log = FindingsLog("x", "t", path=path)
    log.record("a", "warning", "w")
    again = FindingsLog.from_file(path)
    again.record("b", "ok", "fine")
    again.finish()
    data = json.loads(path.read_text())
    assert [f["check"] for f in data["findings"]] == ["a", "b"]
    assert data["status"] == "warning"


def test_a_later_finding_resolves_an_earlier_one_without_hiding_it(tmp_path):
    log = FindingsLog("service-down", "t", path=tmp_path / "findings.json")
    log.record("service.health", "critical", "no answer")
    log.record("service.logs", "warning", "errors in the log")
    log.record("service.restart", "ok", "healthy again", resolves=("service.health",))
    data = json.loads((tmp_path / "findings.json").read_text())
    health = data["findings"][0]
    assert health["status"] == "critical" and health["resolved_by"].startswith("service.restart")
    assert "resolved_by" not in data["findings"][1]
    assert data["status"] == "warning"  # the state now: the logs warning still stands
    again = FindingsLog.from_file(tmp_path / "findings.json")
    assert again.status is Status.WARNING


def test_an_interrupted_log_has_no_finish(tmp_path):
    log = FindingsLog("x", "t", path=tmp_path / "findings.json")
    log.record("a", "ok", "fine")
    log.interrupt("2026-12-07T12:00:00Z")
    data = json.loads((tmp_path / "findings.json").read_text())
    assert data["finished_at"] is None and data["interrupted_at"] == "2026-12-07T12:00:00Z"
