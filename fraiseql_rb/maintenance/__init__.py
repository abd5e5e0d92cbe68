"""§2.2 step 2, §6 and §7 planned changes: one module per runbook of section `maintenance`."""
