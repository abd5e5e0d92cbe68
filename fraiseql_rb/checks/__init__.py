"""Reusable checks by domain, each a `@check("domain.name")` function: database, tls, config,
service (HTTP surface, logs, restart), instances, cache, host, backup, audit and alert rules.
A check two runbooks run lives here, once, under its one name."""
