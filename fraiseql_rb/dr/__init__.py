"""§5 backup and disaster recovery: one module per runbook of section `dr`."""
