"""Default thresholds: one catalogue, each entry with its value, unit and runbook source.

Checks read their limits from here (or from a notebook parameter that defaults to these),
never from literals in code, so a reviewer can see and argue with every number in one place.

`CATALOGUE` is the single definition, one `Limit` per number, as check_postgres keeps one
table of its actions with their defaults. The module-level names below it are derived from it
for the code that imports them: a single entry as a plain value (`HTTP_TIMEOUT_S`), a
`NAME.warning`/`NAME.critical` pair of entries as a `Threshold` (`RESPONSE_TIME_MS.warning`).
An entry lists the notebook parameters that carry it (papermill needs literal defaults in a
notebook's parameters cell): tests/test_thresholds.py holds every such default, and the
numbers README states, to the catalogue. README's "Thresholds" table is `render_table()`
(rewrite it with `python3 tools/thresholds_table.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

Value = int | float | str | tuple[int, ...]


@dataclass(frozen=True)
class Parameter:
    """A notebook parameter carrying a catalogue entry: its default is `value / per`.

    `runbook` None means the parameter of that name in every notebook that declares it;
    `per` is how many catalogue units make one of the notebook's (1000 for ms -> s)."""

    name: str
    runbook: str | None = None
    per: float = 1

    @classmethod
    def of(cls, spec: str | Parameter) -> Parameter:
        """A Parameter from `name`, `runbook:name`, or a Parameter itself."""
        if isinstance(spec, Parameter):
            return spec
        runbook, _, name = spec.rpartition(":")
        return cls(name, runbook or None)

    def describe(self) -> str:
        text = f"`{self.runbook}:{self.name}`" if self.runbook else f"`{self.name}`"
        if self.per == 1:
            return text
        return f"{text} (value ÷ {_shown(self.per)})"


@dataclass(frozen=True)
class Limit:
    """One number of the catalogue."""

    value: Value
    unit: str
    source: str  # the runbook section (and its words) or why this number, when it has none
    doc: str  # what it limits, in one line
    parameters: tuple[Parameter, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", tuple(Parameter.of(p) for p in self.parameters))


@dataclass(frozen=True)
class Threshold:
    """A warning/critical pair (for a lower bound, critical is the smaller number)."""

    warning: float
    critical: float
    unit: str
    source: str


def _l(value: Value, unit: str, source: str, doc: str, *parameters: str | Parameter) -> Limit:
    return Limit(value, unit, source, doc, parameters)  # type: ignore[arg-type]


_P = Parameter

CATALOGUE: dict[str, Limit] = {
    # -- §6.1 "When to Scale Up" and §3.2 alerts: response time, connections, host -----------
    "response_time_ms.warning": _l(
        2000, "ms", "§6.1 scale up when 'Query latency: P95 > 2s'",
        "P95 response time above this is a warning",
        "warning_ms", "p95_warning_ms", _P("latency_warning_s", per=1000)),
    "response_time_ms.critical": _l(
        5000, "ms", "§3.2 HighQueryLatency: P99 > 5 s; §4.1 symptom 'P99 latency > 5s'",
        "P99 (service-health: P95) response time above this is critical",
        "critical_ms", "p99_critical_ms", _P("latency_critical_s", per=1000)),
    "pool_of_max_connections.warning": _l(
        0.80, "fraction of max_connections", "§6.1 'Connections: > 80% pool capacity'",
        "connections (or all pools together) above this share of max_connections: warning",
        "connections_warning", "pool_warning_fraction"),
    "pool_of_max_connections.critical": _l(
        1.0, "fraction of max_connections",
        "PostgreSQL refuses sessions beyond max_connections (SQLSTATE 53300)",
        "connections at this share of max_connections: critical", "connections_critical"),
    "cpu_used.warning": _l(0.70, "fraction of CPU", "§6.1 'CPU: > 70% sustained for 10min'",
                           "CPU use above this, sustained, is a reason to scale up",
                           "scale-out:cpu_warning"),
    "cpu_used.critical": _l(0.90, "fraction of CPU",
                            "no headroom left for a spike while a new instance starts",
                            "CPU use above this is critical"),
    "cpu_sustained_min": _l(10, "minutes", "§6.1 'sustained for 10min'",
                            "shorter CPU bursts are not a reason to scale"),
    "memory_used.warning": _l(0.75, "fraction of memory", "§6.1 'Memory: > 75% used'",
                              "host memory use above this is a reason to scale up",
                              "scale-out:memory_warning"),
    "memory_used.critical": _l(0.90, "fraction of memory",
                               "no headroom left for a spike while a new instance starts",
                               "host memory use above this is critical"),
    "disk_used.warning": _l(0.80, "fraction used", "§6.1 'Disk: > 80% used'",
                            "disk use above this is a reason to scale up",
                            "scale-out:disk_warning"),
    "disk_used.critical": _l(0.90, "fraction used", "90 % leaves no room for WAL and dumps",
                             "disk use above this is critical"),
    "cache_hit_ratio_min": _l(0.7, "ratio", "§3.2 LowCacheHitRatio: fraiseql_cache_hit_ratio "
                              "< 0.7 for 10m", "cache hit ratio below this is a warning",
                              "cache_hit_floor"),
    "pool_active_share_max": _l(0.9, "fraction of the pool", "§3.2 ConnectionPoolNearCapacity: "
                                "more than 45 active of a 50-connection pool",
                                "active pool connections above this share: critical",
                                "pool_critical"),
    "capacity_horizon": _l("30d", "duration", "a month to add capacity before a §6.1 "
                           "scale-up line is crossed", "a scale-up line the trend "
                           "reaches within this is a warning", "horizon"),
    "db_errors_per_s_max": _l(10.0, "errors/s", "§3.2 HighDatabaseErrorRate: "
                              "rate(fraiseql_db_errors_total[5m]) > 10 for 5m",
                              "database errors per second above this are critical",
                              "db_errors_per_s"),
    # -- §1.1 infrastructure requirements (lower bounds: critical below the minimum) ------------
    "host_cpus.warning": _l(4, "vCPU", "§1.1 'Recommended: 4 vCPU, 8GB RAM per instance'",
                            "fewer vCPUs than this: warning"),
    "host_cpus.critical": _l(2, "vCPU", "§1.1 'Minimum: 2 vCPU, 4GB RAM per instance'",
                             "fewer vCPUs than this: critical"),
    "host_memory_gb.warning": _l(8, "GB", "§1.1 'Recommended: 4 vCPU, 8GB RAM per instance'",
                                 "less memory than this: warning"),
    "host_memory_gb.critical": _l(4, "GB", "§1.1 'Minimum: 2 vCPU, 4GB RAM per instance'",
                                  "less memory than this: critical"),
    "postgres_min_version.warning": _l(11, "major version", "§1.1 'PostgreSQL 11+ "
                                       "(SCRAM-SHA-256-PLUS recommended)'",
                                       "an older PostgreSQL: warning"),
    "postgres_min_version.critical": _l(10, "major version",
                                        "§1.1 'PostgreSQL 10+ (SCRAM-SHA-256)'",
                                        "an older PostgreSQL: critical"),
    "redis_min_version": _l((6, 0), "version", "§1.1 Caching: 'Redis 6.0+'",
                            "an older Redis is a finding"),
    # -- TLS and backups -----------------------------------------------------------------------
    "cert_expiry_days.warning": _l(
        21, "days", "§8.1 weekly certificate-expiry review: warn three reviews ahead",
        "a certificate expiring within this many days: warning", "warning_days"),
    "cert_expiry_days.critical": _l(
        7, "days", "§8.1 weekly review: the next weekly review would come too late",
        "a certificate expiring within this many days: critical", "critical_days"),
    "tls_min_version": _l("TLSv1.2", "protocol", "§1.1 load balancer 'TLS 1.2+'; §1.2 "
                          "min_tls_version = \"1.2\"", "an older protocol offered is a finding"),
    "rsa_min_bits": _l(2048, "bits", "OpenSSL security level 2, CA/Browser Forum",
                       "smallest RSA key current TLS clients accept"),
    "ec_min_bits": _l(256, "bits", "OpenSSL security level 2, CA/Browser Forum",
                      "smallest EC key current TLS clients accept"),
    "backup_max_age_hours": _l(26.0, "hours", "§5.1 'Full backup (daily, 02:00 UTC)'",
                               "the newest backup older than a day plus slack for a slow dump"),
    # -- timeouts: a check must end even when its target hangs -----------------------------------
    "http_timeout_s": _l(5.0, "s", "DESIGN: HTTP calls have timeouts",
                         "each HTTP request (and Redis command) of a check"),
    "db_connect_timeout_s": _l(5, "s", "DESIGN: database sessions have connect timeouts",
                               "a PostgreSQL connection attempt; longer counts as timed out",
                               "connect_timeout_s"),
    "db_statement_timeout_ms": _l(10_000, "ms", "DESIGN: database sessions have statement "
                                  "timeouts", "each statement of a diagnostic session"),
    "db_lock_timeout_ms": _l(2_000, "ms", "a diagnostic queued behind a long ALTER or VACUUM "
                             "FULL gives up instead of joining the queue",
                             "lock wait of every diagnostic session (postgres.session)"),
    "month_statement_timeout_ms": _l(300_000, "ms", "§8.1 monthly: the access queries read "
                                     "the whole month", "statement timeout of the monthly "
                                     "report's queries"),
    "hung_confirm_s": _l(2.0, "s", "a live server answers a bare hello (malformed request "
                         "line, SSLRequest) at once", "silence this long after a timeout "
                         "marks the endpoint hung; the run skips it from then on"),
    "command_timeout_s": _l(60.0, "s", "DESIGN: every command has a timeout; a status or log "
                            "command answers in seconds", "status_command, logs_command and "
                            "restart_command each"),
    "command_output_lines": _l(10, "lines", "enough of a failed command's output to see why "
                               "(the error is usually last), short enough to read in a "
                               "finding", "kept of a failed change command's output"),
    "prometheus_timeout_s": _l(10.0, "s", "a range query over a week answers in well under a "
                               "second on a healthy Prometheus", "each Prometheus API request"),
    "promtool_timeout_s": _l(30.0, "s", "promtool checks a rules file in well under a second",
                             "`promtool check rules` / `test rules` in alert review"),
    "tool_probe_timeout_s": _l(10, "s", "pg_config and --version answer at once",
                               "asking a local PostgreSQL binary where it lives or its version"),
    "tcp_probe_timeout_s": _l(3.0, "s", "a TCP handshake in one region takes milliseconds",
                              "one TCP connect of the network dashboard's probes"),
    "cell_timeout_s": _l(600, "s", "DESIGN: a runbook ends; the longest cell samples for "
                         "minutes (memory-leak window_s up to 14400 sets its own)",
                         "one notebook cell (FRAISEQL_RB_CELL_TIMEOUT overrides)"),
    "dask_scheduler_timeout_s": _l(5.0, "s", "a scheduler on the network answers in well "
                                   "under a second; FRAISEQL_RB_DASK_TIMEOUT overrides",
                                   "fleet runs: connecting to the Dask scheduler"),
    "fleet_task_poll_s": _l(1.0, "s", "a Dask task's child run is checked this often for its "
                            "end or a stop event: fast enough for Ctrl-C, cheap for the worker",
                            "fleet runs on Dask: a task's polling interval"),
    "site_index_runs": _l(10_000, "runs", "every run at the scale the site is built for "
                          "(5,000 runs, about 4 MB); a year of a fleet's daily runs would "
                          "make one page of 100 MB, so older runs are on one page per month",
                          "the report site's index: the newest runs it lists"),
    "kernel_start_attempts": _l(2, "attempts", "a kernel that dies or stays silent while "
                                "starting on a loaded machine starts the next time; no cell "
                                "ran, so nothing is repeated", "kernel starts before a run "
                                "fails as unknown"),
    "interrupt_grace_s": _l(10.0, "s", "a cell that honours KeyboardInterrupt stops within a "
                            "second or two", "after Ctrl-C or SIGTERM, how long the kernel has "
                            "to stop its cell before the run is stopped at once"),
    # -- FraiseQL v2 defaults (reference/fraiseql-v2-interface.md) -------------------------------
    "v2_default_pool_max": _l(20, "connections", "FraiseQL v2 [database] pool_max_size default",
                              "the pool size assumed when neither admin API nor config says"),
    "oidc_default_ttl_s": _l(300, "s", "FraiseQL v2 [auth] jwks_cache_ttl_secs default",
                             "how long the server keeps JWKS keys when the config is silent"),
    # -- sampling windows of the incident playbooks ------------------------------------------------
    "metrics_window_s": _l(15.0, "s", "Prometheus' default scrape interval: one new sample",
                           "two /metrics scrapes (and database counters) this far apart",
                           "high-error-rate:window_s", "high-query-latency:window_s",
                           "alert-review:window_s"),
    "prometheus_scrape_interval_s": _l(15.0, "s", "Prometheus' own default scrape_interval",
                                       "assumed when the job's interval cannot be read"),
    "prometheus_scrapes_per_window": _l(4, "scrape intervals", "a rate over fewer scrapes "
                                        "rests on one or two samples",
                                        "a Prometheus rate window spans at least this many"),
    # -- §9.2 dashboards ---------------------------------------------------------------------------
    "dashboard_min_rate_window_s": _l(900, "s", "an imported history has one point per 5 "
                                      "minutes: rate() needs two per window, and 15 minutes "
                                      "outlasts the `for:` of §3.2's latency and pool alerts",
                                      "shortest rate() window of a dashboard's range queries"),
    "dashboard_sample_interval_s": _l(5.0, "s", "long enough for counters to move on a live "
                                      "server", "direct samples: seconds between the two "
                                      "/metrics scrapes when there is no Prometheus",
                                      "sample_interval_s"),
    "history_coverage_min": _l(0.9, "fraction of the range", "a gap of a tenth is visible on "
                               "the plot", "a Prometheus history covering less of the range "
                               "is reported as short"),
    "cache_min_lookups": _l(10, "lookups per window", "a ratio over fewer lookups is noise",
                            "cache hit ratio judged only from this many lookups"),
    "network_probes": _l(5, "probes", "a median over five rides out one slow handshake",
                         "TCP connects per destination on the network dashboard"),
    "capacity_samples": _l(3, "samples", "three points show a direction",
                           "direct samples of connections and memory for capacity planning"),
    "plan_underestimate_factor": _l(10.0, "× estimated rows", "§4.1 step 4 EXPLAIN ANALYZE: "
                                    "an estimate off by 10× misleads the planner's join "
                                    "choice", "a plan node returning this many times its "
                                    "estimated rows is flagged"),
    # -- §4.2 High Error Rate --------------------------------------------------------------------
    "error_ratio.warning": _l(0.01, "fraction of requests", "a healthy service stays below 1 %",
                              "share of failing GraphQL requests that is a warning",
                              "error_ratio_warning"),
    "error_ratio.critical": _l(0.05, "fraction of requests", "the shipped HighErrorRatio alert "
                               "(leads to this playbook): > 5 % of GraphQL queries failing",
                               "share of failing GraphQL requests that is critical",
                               "error_ratio_critical"),
    "error_min_count": _l(3, "errors", "fewer failures in a window are noise",
                          "errors (and rollbacks) needed before any cause is called"),
    "error_concentration_share": _l(0.8, "fraction of errors", "§4.2 step 2 'most affected "
                                    "query'", "'most' of the per-operation errors"),
    "error_few_operations": _l(3, "operations", "§4.2 step 3 'block problematic queries'",
                               "'one or a few' operations hold the errors"),
    "error_minority_traffic": _l(0.6, "fraction of requests", "other busy operations still "
                                 "work", "the failing operations carry at most this share"),
    "error_rollback_share": _l(0.05, "rollbacks per transaction", "rollbacks beyond the usual "
                               "few", "rollback share in the window that counts as rising"),
    # -- §4.1 High Query Latency -------------------------------------------------------------------
    "slow_statement_ms": _l(1000.0, "ms", "a statement averaging a second eats half the "
                            "§6.1 2-s budget", "mean statement time in the window that is slow",
                            "slow_statement_ms"),
    "lock_wait_s.warning": _l(1.0, "s", "a second of lock wait is visible to users",
                              "a lock wait this long is a warning", "lock_wait_warning_s"),
    "lock_wait_s.critical": _l(5.0, "s", "5 s is §3.2's P99 line by itself",
                               "a lock wait this long is critical", "lock_wait_critical_s"),
    "network_rtt_ms.warning": _l(20.0, "ms", "§4.1 step 3 'mtr to database': in one data "
                                 "centre well under 1 ms, across zones 1-2 ms; 20 ms is another "
                                 "region or a congested path", "median TCP connect time that "
                                 "is a warning", "network_warning_ms"),
    "network_rtt_ms.critical": _l(100.0, "ms", "100 ms added to every statement",
                                  "median TCP connect time that is critical",
                                  "network_critical_ms"),
    "complexity_warning": _l(100.0, "cost units per query", "§4.1 root cause 'Complex query'",
                             "mean estimated cost per query that is a warning",
                             "complexity_warning"),
    "explain_cost_high": _l(100_000.0, "planner cost", "§4.1 step 4 EXPLAIN: a large scan or "
                            "join", "an EXPLAINed statement costing this much is complex"),
    # -- §4.1 Memory Leak (and §3.2 MemoryLeakSuspected) -------------------------------------------
    "memory_leak_rss_bytes": _l(7_000_000_000, "bytes", "§3.2 MemoryLeakSuspected: "
                                "process_resident_memory_bytes > 7_000_000_000",
                                "resident memory of the server that is the limit",
                                _P("threshold_gb", per=1e9)),
    "memory_window_s": _l(20.0, "s", "sees fast leaks (about 1 GB/h); a slow one needs 900+",
                          "how long the resident memory is sampled", "memory-leak:window_s"),
    "memory_interval_s": _l(2.0, "s", "ten samples in the default window",
                            "seconds between memory samples", "memory-leak:interval_s"),
    "memory_min_growth_mb_per_hour": _l(50.0, "MB/h", "§4.1 'Memory growing over time': "
                                        "slower is allocator noise over a short window",
                                        "trend growth below this is not called a leak",
                                        "min_growth_mb_per_hour"),
    "memory_critical_hours": _l(24.0, "hours", "§4.1 step 5 'Restart service if critical'",
                                "critical (restart advised) when the limit is this close",
                                "critical_hours"),
    "memory_min_r2": _l(0.6, "r²", "below this the samples are not a trend",
                        "least-squares fit quality needed to call growth"),
    "memory_min_window_growth_bytes": _l(4 * 2**20, "bytes", "allocator noise",
                                         "less growth across the window is not a leak"),
    "memory_min_window_growth_share": _l(0.01, "fraction of RSS", "allocator noise",
                                         "... nor less than this share of the resident set"),
    "memory_min_connection_growth": _l(3, "connections", "§4.1 root cause 'Unclosed "
                                       "connections'", "connections gained over the window "
                                       "that count as growing"),
    "memory_min_cache_growth": _l(50, "entries", "§4.1 root cause 'Circular references in "
                                  "cache'", "cache entries gained over the window ..."),
    "memory_min_cache_growth_share": _l(0.1, "fraction of entries", "§4.1 root cause "
                                        "'Circular references in cache'",
                                        "... and at least this much more than at the start"),
    "long_transaction_s": _l(60.0, "s", "§4.1 root cause 'Long-running transactions'",
                             "transactions open longer than this are long-running",
                             "long_transaction_s"),
    "large_result_rows": _l(10_000, "rows per call", "§4.1 root cause 'Large query results'",
                            "more rows per call than this is a large result",
                            "large_result_rows"),
    "restart_wait_s": _l(30.0, "s", "§4.2 Service Down step 5 'Wait 30s for health checks'",
                         "how long to wait for health after a restart", "restart_wait_s"),
    "recent_changes_hours": _l(24.0, "hours", "§4.2 Service Down step 6c 'Review recent "
                               "changes'", "how far back recent changes are looked for",
                               "recent_hours"),
    # -- §9.1 connection pool exhaustion -----------------------------------------------------------
    "idle_in_transaction_s": _l(60.0, "s", "§9.1 Connection Pool Exhaustion: a session idle "
                                "in transaction this long holds a connection for nothing",
                                "idle in transaction longer than this: suspect, and "
                                "terminated with execute=True", "idle_threshold_s"),
    "long_query_s": _l(30.0, "s", "FraiseQL v2 pool_timeout_secs (30): a statement this long "
                       "makes waiting requests fail", "statements running longer than this "
                       "are long-running", "long_query_s"),
    "pool_observe_s": _l(5.0, "s", "a leak grows between two readings, a burst does not",
                         "seconds between two readings of the sessions", "observe_s"),
    "terminate_verify_s": _l(5.0, "s", "pg_terminate_backend signals; the backend leaves soon",
                             "how long terminated sessions may take to leave "
                             "pg_stat_activity"),
    # -- §4.1 Authentication Failures --------------------------------------------------------------
    "auth_window_hours": _l(1.0, "hours", "§4.1 'Spike in auth failures': the span an alert or "
                            "a user report points at", "the spike window: the last N hours",
                            "auth-failures:window_hours"),
    "auth_baseline_windows": _l(24, "windows", "the preceding day window by window: covers "
                                "the diurnal swing", "windows of the same length before it "
                                "for the baseline", "baseline_windows"),
    "auth_spike_factor": _l(5.0, "× baseline mean", "§4.1 'Spike': far above the baseline",
                            "a spike is at least this many times the baseline's mean ...",
                            "spike_factor"),
    "auth_min_failures": _l(20, "failures", "3 failures against a mean of 0.4 is no spike",
                            "... and at least this many failures in the window",
                            "min_failures"),
    "auth_ip_min_failures": _l(10, "failures", "§4.1 step 5 'Scale up if under attack'",
                               "an address with this many failures is a source to name"),
    "auth_few_ips": _l(5, "addresses", "a credential attack comes from few addresses",
                       "'concentrated': at most this many such addresses ..."),
    "auth_concentration": _l(0.5, "fraction of failures", "a credential attack comes from few "
                             "addresses", "... make at least this share of the failures"),
    "auth_rate_sample_s": _l(10.0, "s", "§4.1 step 4 'Monitor rate limiting metrics'",
                             "seconds between the two /metrics scrapes of rate limiting",
                             "rate_sample_s"),
    # -- §5.2 disaster recovery -------------------------------------------------------------------
    "failover_rpo_s": _l(300, "s", "§5.2 'Recovery Point Objective (RPO): 5 minutes' "
                         "(Tier 2)", "replica lag beyond this loses more than the objective",
                         "rpo_seconds"),
    "dr_tier1_rto_s": _l(900, "s", "§5.2 'Tier 1 (Critical): RTO 15min, RPO 1min'",
                         "tier 1: a restore slower than this misses the RTO"),
    "dr_tier1_rpo_s": _l(60, "s", "§5.2 'Tier 1 (Critical): RTO 15min, RPO 1min'",
                         "tier 1: losing more committed work than this misses the RPO"),
    "dr_tier2_rto_s": _l(3600, "s", "§5.2 'Tier 2 (High): RTO 1hr, RPO 5min'",
                         "tier 2: a restore slower than this misses the RTO"),
    "dr_tier2_rpo_s": _l(300, "s", "§5.2 'Tier 2 (High): RTO 1hr, RPO 5min'",
                         "tier 2: losing more committed work than this misses the RPO"),
    "dr_tier3_rto_s": _l(14400, "s", "§5.2 'Tier 3 (Medium): RTO 4hr, RPO 1hr'",
                         "tier 3: a restore slower than this misses the RTO"),
    "dr_tier3_rpo_s": _l(3600, "s", "§5.2 'Tier 3 (Medium): RTO 4hr, RPO 1hr'",
                         "tier 3: losing more committed work than this misses the RPO"),
    "dr_tier4_rto_s": _l(86400, "s", "§5.2 'Tier 4 (Low): RTO 24hr, RPO 24hr'",
                         "tier 4: a restore slower than this misses the RTO"),
    "dr_tier4_rpo_s": _l(86400, "s", "§5.2 'Tier 4 (Low): RTO 24hr, RPO 24hr'",
                         "tier 4: losing more committed work than this misses the RPO"),
    "dr_default_tier": _l(2, "tier", "§5.2 'RTO: 1 hour, RPO: 5 minutes' is Tier 2",
                          "the tier a DR runbook judges against unless told", "tier"),
    "dr_scratch_space_factor": _l(1.5, "× the base backup's size", "a restore replays WAL "
                                  "into pg_wal beside the restored files (up to max_wal_size)",
                                  "the DR drill starts only with this much free scratch space"),
    "dr_server_start_wait_s": _l(30, "s", "§4.2 Service Down 'Wait 30s for health checks'",
                                 "how long the DR drill's stand-in server on the restored "
                                 "database has to answer /health"),
    "maximum_lag_bytes": _l(1024 * 1024, "bytes of WAL", "Patroni's maximum_lag_on_failover "
                            "(default 1 MiB)", "a replica further behind than this is never "
                            "promoted", "maximum_lag_bytes"),
    "dump_retention_days": _l(30, "days", "§5.1 'find /backups -name fraiseql-*.sql -mtime "
                              "+30 -delete'", "dumps older than this are deleted (only with "
                              "execute=True)", "dump_retention_days"),
    "config_retention_days": _l(90, "days", "§5.1 'find /backups -name config-*.tar.gz "
                                "-mtime +90 -delete'", "config tarballs older than this are "
                                "deleted (only with execute=True)", "config_retention_days"),
    "promote_wait_s": _l(60, "s", "PostgreSQL's pg_promote(wait => true) default "
                         "wait_seconds", "failover: how long the promotion waits for the "
                         "replica to leave recovery"),
    "config_backup_max_age_hours": _l(1.5, "hours", "§5.1 'Backup configuration (hourly)'",
                                      "the newest config tarball older than an hour plus "
                                      "slack for a late cron run"),
    "wal_ready_age_s": _l(60, "s", "§5.1 'WAL archiving (continuous)': archive_command runs "
                          "within seconds of a segment closing", "a WAL segment waiting this "
                          "long for archive_command (a .ready file) is a warning"),
    "scratch_start_timeout_s": _l(60, "s", "a fresh cluster starts in seconds; a restored one "
                                  "replays WAL first", "a scratch cluster's initdb and start "
                                  "(four times this for initdb)"),
    "restore_timeout_s": _l(3600, "s", "§5.2 Tier 2 RTO of an hour: a test restore slower "
                            "than that misses it anyway", "one test restore (pg_restore or "
                            "psql) into a scratch cluster"),
    "verify_statement_timeout_ms": _l(600_000, "ms", "count(*) and md5 of whole tables read "
                                      "every row", "statement timeout of backup-verification's "
                                      "counts and checksums on the source"),
    "replica_caught_up_bytes": _l(1024 * 1024, "bytes of WAL", "WAL in flight on a streaming "
                                  "replica", "a replica this close to the primary is caught "
                                  "up whatever its time lag"),
    "replica_delay_s.warning": _l(
        150, "s", "half the §5.2 RPO of 5 minutes; check_postgres hot_standby_delay "
        "--warning='150 seconds' (peers.md)", "a replica this far behind the primary's "
        "commits (or with replay paused): warning"),
    "replica_delay_s.critical": _l(
        300, "s", "§5.2 'RPO: 5 minutes'; check_postgres hot_standby_delay "
        "--critical='300 seconds'", "a replica this far behind loses more than the RPO on "
        "failover: critical"),
    # -- storage: bloat and the buffer cache, as check_postgres grades them -------------------
    "bloat_ratio.warning": _l(
        1.5, "× expected size", "check_postgres bloat anchor '50% and 1 MB': it compares "
        "100 × (pages / expected pages) with the percent, so its 50 % flags any table with "
        "1 MB wasted; we ask 50 % more than expected ('150% and 1 MB' in its form)",
        "a table or index this many times the size its statistics need ..."),
    "bloat_ratio.critical": _l(
        2.0, "× expected size", "check_postgres bloat anchor '200% and 5 MB'",
        "a table or index this many times the size its statistics need ..."),
    "bloat_wasted_bytes.warning": _l(
        1024 * 1024, "bytes", "check_postgres bloat anchor '50% and 1 MB'",
        "... and wasting more than this: warning"),
    "bloat_wasted_bytes.critical": _l(
        5 * 1024 * 1024, "bytes", "check_postgres bloat anchor '200% and 5 MB'",
        "... and wasting more than this: critical"),
    "buffer_hit_ratio_critical": _l(
        0.5, "ratio", "check_postgres hitratio --critical='50%': half the blocks come from "
        "disk", "a database's shared-buffer hit ratio below this is critical (below "
        "cache_hit_ratio_min a warning)"),
    # -- §8.1 security reviews -------------------------------------------------------------
    "review_window_hours": _l(24, "hours", "§8.1 daily: timestamp > NOW() - INTERVAL "
                              "'24 hours'", "the daily review's window",
                              "daily-security-review:window_hours"),
    "review_baseline_days": _l(7, "days", "a week of the same hours: every weekday once",
                               "previous days the daily counts are compared with",
                               "baseline_days"),
    "review_sigma": _l(3.0, "standard deviations", "§8.1 daily counts, against their own history",
                       "flagged above mean + this many standard deviations ...", "sigma"),
    "review_min_count": _l(20, "events", "a quiet history has a tiny standard deviation",
                           "... and only from this many events", "min_count"),
    "rate_limit_growth": _l(2.0, "× previous week", "§8.1 weekly rate-limit review",
                            "rate-limit events more than this times the previous week ..."),
    "rate_limit_min_count": _l(50, "events", "a handful doubling is no trend",
                               "... from at least this many (total or one user)"),
    "work_start_hour": _l(8, "hour (UTC)", "§8.1 monthly 'Access logs review': access "
                          "outside working time", "working hours start (inclusive)",
                          "work_start_hour"),
    "work_end_hour": _l(18, "hour (UTC)", "§8.1 monthly 'Access logs review': access "
                        "outside working time", "working hours end (exclusive)",
                        "work_end_hour"),
    "work_days": _l("Mon-Fri", "ISO weekdays", "§8.1 monthly 'Access logs review': access "
                    "outside working time", "working days", "work_days"),
    "top_n": _l(10, "rows", "enough to act on, short enough to read",
                "addresses, users, statements listed", "top_n"),
    # -- §7.2 database maintenance (database-maintenance) -------------------------------------
    "maintenance_dead_tuples_base": _l(
        50, "dead tuples", "PostgreSQL's autovacuum_vacuum_threshold default: autovacuum's own "
        "rule is 50 + 20 % of the table's rows", "a table is vacuumed when its dead tuples "
        "exceed this ...", "dead_tuples_base"),
    "maintenance_dead_tuples_scale": _l(
        0.2, "fraction of the table's rows", "PostgreSQL's autovacuum_vacuum_scale_factor "
        "default", "... plus this share of its rows (reltuples)", "dead_tuples_scale"),
    "maintenance_analyze_base": _l(
        50, "modified rows", "PostgreSQL's autovacuum_analyze_threshold default",
        "a table is analyzed when the rows changed since its last ANALYZE exceed this ..."),
    "maintenance_analyze_scale": _l(
        0.1, "fraction of the table's rows", "PostgreSQL's autovacuum_analyze_scale_factor "
        "default", "... plus this share of its rows (or it was never analyzed)"),
    "maintenance_lock_timeout_ms": _l(
        5_000, "ms", "§7.2's statements must never queue behind a long transaction: a "
        "waiting ACCESS EXCLUSIVE request blocks every later reader of the table",
        "each maintenance statement gives up waiting for its lock after this and is skipped",
        "database-maintenance:lock_timeout_ms"),
    "maintenance_vacuum_full_max_bytes": _l(
        1024**3, "bytes", "VACUUM FULL locks readers and writers out while it copies the "
        "table (tens of seconds per GB); a larger table belongs to pg_repack",
        "monthly: VACUUM FULL is proposed only for tables (with indexes) up to this size",
        _P("vacuum_full_max_mb", per=1024**2)),
    "maintenance_rewrite_space_factor": _l(
        2.0, "× the relation's size", "VACUUM FULL and REINDEX write a new copy beside the "
        "old one, and as much WAL again", "a rewrite runs only with this much free space on "
        "the data directory's filesystem"),
    "maintenance_statement_timeout_ms": _l(
        300_000, "ms", "a maintenance statement longer than this needs a window of its own; "
        "the cell ends at cell_timeout_s", "statement timeout of each maintenance statement"),
    "maintenance_stats_wait_s": _l(
        5.0, "s", "a VACUUM's counts reach pg_stat_user_tables when it ends; the reading "
        "session's snapshot may lag a moment", "verification polls the statistics this long "
        "for the statements' effect"),
    # -- §2.2 step 2 migrations (schema-migration) ----------------------------------------------
    "migration_lock_timeout_ms": _l(
        5_000, "ms", "a migration's ALTER queued behind a long transaction blocks every later "
        "query on the table; confiture sets no lock_timeout of its own",
        "lock_timeout of every session confiture opens: a migration statement gives up "
        "waiting for a table lock after this", "schema-migration:lock_timeout_ms"),
    "migration_timeout_s": _l(
        600.0, "s", "DESIGN: every command has a timeout; a migration longer than this needs "
        "a window of its own", "confiture migrate up/down is stopped after this",
        "migration_timeout_s"),
    # -- §7.1 patching (patch-upgrade) ----------------------------------------------------------
    "patch_sla_critical_hours": _l(24, "hours", "§7.1 'Critical Patches: Within 24 hours'",
                                   "a critical patch installed later than this after its "
                                   "release is overdue"),
    "patch_sla_security_days": _l(7, "days", "§7.1 'Security Patches: Within 7 days'",
                                  "a security patch installed later than this is overdue"),
    "patch_sla_regular_days": _l(31, "days", "§7.1 'Regular Updates: Monthly maintenance "
                                 "window': a monthly window comes at most 31 days after any "
                                 "release, so a regular patch waits for at most one window",
                                 "a regular update installed later than this is overdue"),
    "upgrade_health_wait_s": _l(60, "s", "§4.2's 30 s for health after a restart, twice: a new "
                                "release may also migrate caches and warm its pool on start",
                                "how long the upgrade (and the rollback) waits for /health to "
                                "answer healthy", "patch-upgrade:health_wait_s"),
    "upgrade_timeout_s": _l(600, "s", "§7.1 step 3 schedules 15 minutes (02:00-02:15 UTC): "
                            "10 for the upgrade leaves 5 to verify and roll back", "an "
                            "upgrade_command or rollback_command still running after this is "
                            "stopped and counts as failed", "patch-upgrade:upgrade_timeout_s"),
    # -- §6.1 horizontal scaling (scale-out) -----------------------------------------------------
    "scale_health_wait_s": _l(30.0, "s", "§6.1 step 2 'Verify health'; §4.2 'Wait 30s for "
                              "health checks'", "how long a new instance has to answer "
                              "/health before it is removed again", "scale-out:health_wait_s"),
    # -- §6.2 read replicas (read-replica) ------------------------------------------------------
    "replica_space_factor": _l(1.5, "× the primary's databases", "pg_basebackup -X stream "
                               "copies every database and the WAL written meanwhile; a standby "
                               "then keeps up to max_wal_size of WAL", "a standby is made only "
                               "with this much free space for its data directory"),
    "replica_basebackup_timeout_s": _l(3600, "s", "§5.2 Tier 2 RTO of an hour: a copy slower "
                                       "than that belongs in a maintenance window of its own",
                                       "pg_basebackup of a new standby is stopped after this"),
    "replica_start_timeout_s": _l(60, "s", "a new standby replays only the WAL of its copy "
                                  "before it accepts reads", "pg_ctl start -w of a new standby"),
    "replica_streaming_wait_s": _l(60.0, "s", "a standby connects to the primary within "
                                   "seconds of its start; a minute allows for the WAL written "
                                   "during the copy", "how long a new standby has to stream "
                                   "and catch up before its verification fails",
                                   "read-replica:streaming_wait_s"),
}


def _pair(name: str) -> Threshold:
    warning, critical = CATALOGUE[f"{name}.warning"], CATALOGUE[f"{name}.critical"]
    return Threshold(warning.value, critical.value,  # type: ignore[arg-type]
                     warning.unit, f"warning: {warning.source}; critical: {critical.source}")


def _number(key: str) -> float:
    number = CATALOGUE[key].value
    if not isinstance(number, (int, float)):
        raise TypeError(f"threshold {key} is {number!r}, not a number")
    return number


# -- the names code imports (derived; tests/test_thresholds.py checks each against CATALOGUE) --

RESPONSE_TIME_MS = _pair("response_time_ms")
POOL_OF_MAX_CONNECTIONS = _pair("pool_of_max_connections")
POSTGRES_MIN_VERSION = _pair("postgres_min_version")
CPU_USED = _pair("cpu_used")
MEMORY_USED = _pair("memory_used")
DISK_USED = _pair("disk_used")
HOST_CPUS = _pair("host_cpus")
HOST_MEMORY_GB = _pair("host_memory_gb")
CERT_EXPIRY_DAYS = _pair("cert_expiry_days")
ERROR_RATIO = _pair("error_ratio")
LOCK_WAIT_S = _pair("lock_wait_s")
NETWORK_RTT_MS = _pair("network_rtt_ms")

CPU_SUSTAINED_MIN = _number("cpu_sustained_min")
CACHE_HIT_RATIO_MIN = _number("cache_hit_ratio_min")
POOL_ACTIVE_SHARE_MAX = _number("pool_active_share_max")
DB_ERRORS_PER_S_MAX = _number("db_errors_per_s_max")
CAPACITY_HORIZON = str(CATALOGUE["capacity_horizon"].value)
REDIS_MIN_VERSION: tuple[int, ...] = CATALOGUE["redis_min_version"].value  # type: ignore[assignment]
TLS_MIN_VERSION = str(CATALOGUE["tls_min_version"].value)
RSA_MIN_BITS = int(_number("rsa_min_bits"))
EC_MIN_BITS = int(_number("ec_min_bits"))
BACKUP_MAX_AGE_HOURS = _number("backup_max_age_hours")
HTTP_TIMEOUT_S = _number("http_timeout_s")
DB_CONNECT_TIMEOUT_S = int(_number("db_connect_timeout_s"))
DB_STATEMENT_TIMEOUT_MS = int(_number("db_statement_timeout_ms"))
DB_LOCK_TIMEOUT_MS = int(_number("db_lock_timeout_ms"))
MONTH_STATEMENT_TIMEOUT_MS = int(_number("month_statement_timeout_ms"))
HUNG_CONFIRM_S = _number("hung_confirm_s")
COMMAND_TIMEOUT_S = _number("command_timeout_s")
COMMAND_OUTPUT_LINES = int(_number("command_output_lines"))
PROMETHEUS_TIMEOUT_S = _number("prometheus_timeout_s")
PROMTOOL_TIMEOUT_S = _number("promtool_timeout_s")
TOOL_PROBE_TIMEOUT_S = _number("tool_probe_timeout_s")
TCP_PROBE_TIMEOUT_S = _number("tcp_probe_timeout_s")
CELL_TIMEOUT_S = int(_number("cell_timeout_s"))
KERNEL_START_ATTEMPTS = int(_number("kernel_start_attempts"))
DASK_SCHEDULER_TIMEOUT_S = _number("dask_scheduler_timeout_s")
FLEET_TASK_POLL_S = _number("fleet_task_poll_s")
SITE_INDEX_RUNS = int(_number("site_index_runs"))
INTERRUPT_GRACE_S = _number("interrupt_grace_s")
DASHBOARD_MIN_RATE_WINDOW_S = int(_number("dashboard_min_rate_window_s"))
DASHBOARD_SAMPLE_INTERVAL_S = _number("dashboard_sample_interval_s")
HISTORY_COVERAGE_MIN = _number("history_coverage_min")
CACHE_MIN_LOOKUPS = int(_number("cache_min_lookups"))
NETWORK_PROBES = int(_number("network_probes"))
CAPACITY_SAMPLES = int(_number("capacity_samples"))
PLAN_UNDERESTIMATE_FACTOR = _number("plan_underestimate_factor")
V2_DEFAULT_POOL_MAX = int(_number("v2_default_pool_max"))
OIDC_DEFAULT_TTL_S = _number("oidc_default_ttl_s")
METRICS_WINDOW_S = _number("metrics_window_s")
PROMETHEUS_SCRAPE_INTERVAL_S = _number("prometheus_scrape_interval_s")
PROMETHEUS_SCRAPES_PER_WINDOW = int(_number("prometheus_scrapes_per_window"))
ERROR_MIN_COUNT = int(_number("error_min_count"))
ERROR_CONCENTRATION_SHARE = _number("error_concentration_share")
ERROR_FEW_OPERATIONS = int(_number("error_few_operations"))
ERROR_MINORITY_TRAFFIC = _number("error_minority_traffic")
ERROR_ROLLBACK_SHARE = _number("error_rollback_share")
SLOW_STATEMENT_MS = _number("slow_statement_ms")
COMPLEXITY_WARNING = _number("complexity_warning")
EXPLAIN_COST_HIGH = _number("explain_cost_high")
MEMORY_LEAK_RSS_BYTES = int(_number("memory_leak_rss_bytes"))
MEMORY_WINDOW_S = _number("memory_window_s")
MEMORY_INTERVAL_S = _number("memory_interval_s")
MEMORY_MIN_GROWTH_MB_PER_HOUR = _number("memory_min_growth_mb_per_hour")
MEMORY_CRITICAL_HOURS = _number("memory_critical_hours")
MEMORY_MIN_R2 = _number("memory_min_r2")
MEMORY_MIN_WINDOW_GROWTH_BYTES = int(_number("memory_min_window_growth_bytes"))
MEMORY_MIN_WINDOW_GROWTH_SHARE = _number("memory_min_window_growth_share")
MEMORY_MIN_CONNECTION_GROWTH = int(_number("memory_min_connection_growth"))
MEMORY_MIN_CACHE_GROWTH = int(_number("memory_min_cache_growth"))
MEMORY_MIN_CACHE_GROWTH_SHARE = _number("memory_min_cache_growth_share")
LONG_TRANSACTION_S = _number("long_transaction_s")
LARGE_RESULT_ROWS = int(_number("large_result_rows"))
RESTART_WAIT_S = _number("restart_wait_s")
RECENT_CHANGES_HOURS = _number("recent_changes_hours")
IDLE_IN_TRANSACTION_S = _number("idle_in_transaction_s")
LONG_QUERY_S = _number("long_query_s")
POOL_OBSERVE_S = _number("pool_observe_s")
TERMINATE_VERIFY_S = _number("terminate_verify_s")
AUTH_WINDOW_HOURS = _number("auth_window_hours")
AUTH_BASELINE_WINDOWS = int(_number("auth_baseline_windows"))
AUTH_SPIKE_FACTOR = _number("auth_spike_factor")
AUTH_MIN_FAILURES = int(_number("auth_min_failures"))
AUTH_IP_MIN_FAILURES = int(_number("auth_ip_min_failures"))
AUTH_FEW_IPS = int(_number("auth_few_ips"))
AUTH_CONCENTRATION = _number("auth_concentration")
AUTH_RATE_SAMPLE_S = _number("auth_rate_sample_s")
FAILOVER_RPO_S = _number("failover_rpo_s")
REPLICA_CAUGHT_UP_BYTES = int(_number("replica_caught_up_bytes"))


@dataclass(frozen=True)
class Tier:
    """One §5.2 recovery tier: the objectives a restore or a failover is judged against."""

    number: int
    rto_s: float
    rpo_s: float


DR_TIER1_RTO_S = _number("dr_tier1_rto_s")
DR_TIER1_RPO_S = _number("dr_tier1_rpo_s")
DR_TIER2_RTO_S = _number("dr_tier2_rto_s")
DR_TIER2_RPO_S = _number("dr_tier2_rpo_s")
DR_TIER3_RTO_S = _number("dr_tier3_rto_s")
DR_TIER3_RPO_S = _number("dr_tier3_rpo_s")
DR_TIER4_RTO_S = _number("dr_tier4_rto_s")
DR_TIER4_RPO_S = _number("dr_tier4_rpo_s")
DR_TIERS = {1: Tier(1, DR_TIER1_RTO_S, DR_TIER1_RPO_S), 2: Tier(2, DR_TIER2_RTO_S, DR_TIER2_RPO_S),
            3: Tier(3, DR_TIER3_RTO_S, DR_TIER3_RPO_S), 4: Tier(4, DR_TIER4_RTO_S, DR_TIER4_RPO_S)}
DR_DEFAULT_TIER = int(_number("dr_default_tier"))
MAXIMUM_LAG_BYTES = int(_number("maximum_lag_bytes"))
DUMP_RETENTION_DAYS = int(_number("dump_retention_days"))
CONFIG_RETENTION_DAYS = int(_number("config_retention_days"))
DR_SCRATCH_SPACE_FACTOR = _number("dr_scratch_space_factor")
DR_SERVER_START_WAIT_S = _number("dr_server_start_wait_s")
PROMOTE_WAIT_S = int(_number("promote_wait_s"))
CONFIG_BACKUP_MAX_AGE_HOURS = _number("config_backup_max_age_hours")
WAL_READY_AGE_S = _number("wal_ready_age_s")
SCRATCH_START_TIMEOUT_S = _number("scratch_start_timeout_s")
RESTORE_TIMEOUT_S = _number("restore_timeout_s")
VERIFY_STATEMENT_TIMEOUT_MS = int(_number("verify_statement_timeout_ms"))
REPLICA_DELAY_S = _pair("replica_delay_s")
BLOAT_RATIO = _pair("bloat_ratio")
BLOAT_WASTED_BYTES = _pair("bloat_wasted_bytes")
BUFFER_HIT_RATIO_CRITICAL = _number("buffer_hit_ratio_critical")
REVIEW_WINDOW_HOURS = _number("review_window_hours")
REVIEW_BASELINE_DAYS = int(_number("review_baseline_days"))
REVIEW_SIGMA = _number("review_sigma")
REVIEW_MIN_COUNT = int(_number("review_min_count"))
RATE_LIMIT_GROWTH = _number("rate_limit_growth")
RATE_LIMIT_MIN_COUNT = int(_number("rate_limit_min_count"))
WORK_START_HOUR = int(_number("work_start_hour"))
WORK_END_HOUR = int(_number("work_end_hour"))
WORK_DAYS = str(CATALOGUE["work_days"].value)
TOP_N = int(_number("top_n"))
# §7.2 database maintenance
MAINTENANCE_DEAD_TUPLES_BASE = int(_number("maintenance_dead_tuples_base"))
MAINTENANCE_DEAD_TUPLES_SCALE = _number("maintenance_dead_tuples_scale")
MAINTENANCE_ANALYZE_BASE = int(_number("maintenance_analyze_base"))
MAINTENANCE_ANALYZE_SCALE = _number("maintenance_analyze_scale")
MAINTENANCE_LOCK_TIMEOUT_MS = int(_number("maintenance_lock_timeout_ms"))
MAINTENANCE_VACUUM_FULL_MAX_BYTES = int(_number("maintenance_vacuum_full_max_bytes"))
MAINTENANCE_REWRITE_SPACE_FACTOR = _number("maintenance_rewrite_space_factor")
MAINTENANCE_STATEMENT_TIMEOUT_MS = int(_number("maintenance_statement_timeout_ms"))
MAINTENANCE_STATS_WAIT_S = _number("maintenance_stats_wait_s")
# §2.2 step 2 migrations
MIGRATION_LOCK_TIMEOUT_MS = int(_number("migration_lock_timeout_ms"))
MIGRATION_TIMEOUT_S = _number("migration_timeout_s")
# §7.1 patching
PATCH_SLA_CRITICAL_HOURS = _number("patch_sla_critical_hours")
PATCH_SLA_SECURITY_DAYS = _number("patch_sla_security_days")
PATCH_SLA_REGULAR_DAYS = _number("patch_sla_regular_days")
UPGRADE_HEALTH_WAIT_S = _number("upgrade_health_wait_s")
UPGRADE_TIMEOUT_S = _number("upgrade_timeout_s")
# §6.1 horizontal scaling
SCALE_HEALTH_WAIT_S = _number("scale_health_wait_s")
# §6.2 read replicas
REPLICA_SPACE_FACTOR = _number("replica_space_factor")
REPLICA_BASEBACKUP_TIMEOUT_S = _number("replica_basebackup_timeout_s")
REPLICA_START_TIMEOUT_S = _number("replica_start_timeout_s")
REPLICA_STREAMING_WAIT_S = _number("replica_streaming_wait_s")

# The five §6.1 signals by name, for dashboards that walk all of them.
SCALE_UP = {
    "cpu": CPU_USED,
    "memory": MEMORY_USED,
    "connections": POOL_OF_MAX_CONNECTIONS,
    "latency_p95": RESPONSE_TIME_MS,
    "disk": DISK_USED,
}


# -- notebook parameters and README ------------------------------------------------------------

def carried_by(runbook: str, parameter: str) -> tuple[str, Parameter] | None:
    """The catalogue entry a runbook's parameter carries (its key and how), or None."""
    for key, limit in CATALOGUE.items():
        for p in limit.parameters:
            if p.name == parameter and p.runbook in (None, runbook):
                return key, p
    return None


def notebook_default(key: str, parameter: Parameter) -> Value:
    """What a notebook parameter carrying `key` must default to."""
    number = CATALOGUE[key].value
    if parameter.per == 1 or not isinstance(number, (int, float)):
        return number
    return number / parameter.per


def _shown(value: Value) -> str:
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, tuple):
        return ".".join(map(str, value))
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1e6:
        value = int(value)
    return f"{value:_}" if abs(value) >= 10_000 else str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_table() -> str:
    """README's table of the catalogue (markdown), one row per entry."""
    lines = ["| threshold | value | unit | what it limits | source | notebook parameters |",
             "|---|---|---|---|---|---|"]
    for key, limit in CATALOGUE.items():
        params = ", ".join(p.describe() for p in limit.parameters) or "—"
        lines.append(f"| `{key}` | {_shown(limit.value)} | {_cell(limit.unit)} | "
                     f"{_cell(limit.doc)} | {_cell(limit.source)} | {params} |")
    return "\n".join(lines) + "\n"
