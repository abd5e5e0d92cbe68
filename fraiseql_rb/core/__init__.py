"""What every run shares, kernel and runner side alike: the run context, findings and diagnoses,
the thresholds catalogue, the inventory, secrets, artifacts and the runbook catalogue."""
