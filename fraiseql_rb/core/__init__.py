"""What every run shares, kernel and runner side alike: the run context and `@check`, findings
and diagnoses, the thresholds catalogue, the runbook catalogue, the inventory and its secrets,
artifacts, progress and rendering. It imports nothing else of the package."""
