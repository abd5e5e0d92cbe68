import json

from fraiseql_rb.findings import FindingsLog, Status, worst


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
                            "parameters", "status", "findings", "actions"}
    finding = on_disk["findings"][0]
    assert set(finding) == {"check", "status", "at", "summary", "evidence", "remediation"}
    assert finding["at"].endswith("Z")
    log.action("restart_service", "systemctl restart fraiseql", executed=False)
    on_disk = json.loads(path.read_text())
    assert on_disk["actions"][0] == {"action": "restart_service",
                                     "command": "systemctl restart fraiseql",
                                     "executed": False, "result": None,
                                     "at": on_disk["actions"][0]["at"]}


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
