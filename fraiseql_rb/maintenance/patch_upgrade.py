"""Runbook §7.1 "Patching Schedule": install a FraiseQL release, prove it works, and roll it
back by itself when it does not.

§7.1 gives the SLA (critical patches within 24 hours, security patches within 7 days, regular
updates in the monthly window) and a script: test in staging, write the change down, schedule
downtime, `systemctl stop fraiseql`, `cp -r /etc/fraiseql /backups/config-pre-update`,
`docker pull` + `docker run` the new version, `curl /health`, `systemctl start fraiseql`. Its
rollback is one line ("Immediate restart with previous version"). Here:

- pre-checks: the running version against the target (the same: nothing to do; older: a
  downgrade; another minor or major: not a patch), the SLA from `severity` and `released_at`
  (overdue is a warning: patch now), the service healthy now and reading through PostgreSQL
  (a failing service is never upgraded: the verification could not tell the new release's
  fault from the old one's), the inventory's commands, a tarball of the config with its
  SHA-256 (§7.1 step 5) and a fresh dump of the database;
- the change (execute=True; not confirm-gated: it puts itself back when it fails): the
  target's `upgrade_command` with `{version}`. Stopping the old server and starting the new
  one (§7.1 steps 4, 6 and 8) are that command's job, as `docker pull && docker run` or a
  package upgrade with its unit restart would be;
- verification: /health reports the target version (VERSION_RULE), the service-health checks
  pass (health, readiness, `{ __typename }`, a read through PostgreSQL) and every instance
  answers on one version and schema (deployment-verification's checks);
- rollback, automatically, when the verification fails or a failed upgrade_command left the
  server changed: the config restored from the tarball (its checksum verified first), the
  target's `rollback_command` with `{version}` = the version running before, and that version
  verified healthy again. The change record says `rolled-back`, or `rollback-failed`
  (critical) with the manual steps.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fraiseql_rb.checks import backup, change, instances
from fraiseql_rb.checks import service as service_checks
from fraiseql_rb.core import releases, secrets, thresholds
from fraiseql_rb.core.context import RunContext, check
from fraiseql_rb.core.findings import PHASE_CHECK, Finding, Status
from fraiseql_rb.targets import service

SEVERITIES = ("critical", "security", "regular")
VERSION_RULE = ("the /health version equals the target, or has the target's release number "
                "and a build suffix (2.15.0 accepts 2.15.0-standin; X.Y means X.Y.0); `main` "
                "names no number, so only health and reads verify it")
# Every pre-check the gate reads: one failed or unmeasured stops the upgrade.
PRECHECKS = ("service.health", "graphql.data_path", "patch.versions", "patch.baseline",
             "patch.commands", "patch.config_backup", "backup.fresh_dump")
_PASSING = (Status.OK, Status.INFO)


# -- the decisions (pure) ----------------------------------------------------------------------

def sla_window(severity: str) -> timedelta:
    """§7.1's time to install a patch of `severity` after its release."""
    windows = {"critical": timedelta(hours=thresholds.PATCH_SLA_CRITICAL_HOURS),
               "security": timedelta(days=thresholds.PATCH_SLA_SECURITY_DAYS),
               "regular": timedelta(days=thresholds.PATCH_SLA_REGULAR_DAYS)}
    if severity not in windows:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    return windows[severity]


@dataclass(frozen=True)
class Sla:
    """When a patch published at `released_at` is due, and how much time is left at `now`
    (negative: overdue by that much)."""

    severity: str
    released_at: datetime
    due_at: datetime
    remaining: timedelta

    @property
    def overdue(self) -> bool:
        return self.remaining < timedelta(0)


def patch_sla(severity: str, released_at: datetime | str, now: datetime) -> Sla:
    """The SLA of one patch: due `sla_window(severity)` after `released_at`."""
    released = parse_time(released_at)
    due = released + sla_window(severity)
    return Sla(severity, released, due, due - now.astimezone(UTC))


def parse_time(value: datetime | str) -> datetime:
    """An aware UTC datetime from an ISO 8601 text with its offset (the `[timestamp]`
    parameter format); a time without an offset is refused rather than guessed."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).strip())
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{value!s} has no UTC offset")
    return moment.astimezone(UTC)


def human(delta: timedelta) -> str:
    """A duration as a person reads it (the sign dropped)."""
    return backup.human_age(abs(delta.total_seconds()))


def _normal(text: Any) -> str | None:
    return str(text).strip().removeprefix("v") if isinstance(text, str) and text.strip() else None


def version_matches(reported: Any, target: str) -> bool | None:
    """Does a /health `version` show `target` installed (VERSION_RULE)? None when it cannot
    tell: the server reports no version, or the target is `main`."""
    wanted, seen = _normal(target), _normal(reported)
    if wanted is None or wanted == "main" or seen is None:
        return None
    if seen == wanted:
        return True
    got, want = releases.parse_version(seen), releases.parse_version(wanted)
    if got is None or want is None:
        return False
    return got.core == want.core and (not want.pre or want.pre == got.pre)


def change_kind(current: Any, target: str) -> str:
    """What going from the running version to `target` is: `same`, `patch`, `minor`, `major`,
    `downgrade`, `build` (same release number, another build), `main` (no number to compare)
    or `unknown` (the server reports no version)."""
    if _normal(target) == "main":
        return "main"
    got, want = releases.parse_version(_normal(current)), releases.parse_version(_normal(target))
    if got is None or want is None:
        return "unknown"
    if version_matches(current, target):
        return "same"
    if want.core < got.core:
        return "downgrade"
    if want.core == got.core:
        return "build"
    if want.major != got.major:
        return "major"
    return "minor" if want.minor != got.minor else "patch"


# -- what earlier steps found -------------------------------------------------------------------

def _evidence(ctx: RunContext, name: str) -> dict[str, Any]:
    found = ctx.latest(name)
    return found.evidence if found is not None else {}


def needed(ctx: RunContext) -> bool:
    """patch.versions found something to install."""
    return bool(_evidence(ctx, "patch.versions").get("needed"))


def _previous(ctx: RunContext) -> str | None:
    """The version running before the change: what a rollback goes back to."""
    return _evidence(ctx, "patch.baseline").get("version")


def upgraded(ctx: RunContext) -> bool:
    """upgrade_command ran and exited 0."""
    return bool(_evidence(ctx, "patch.upgrade").get("ok"))


def _since_phase(ctx: RunContext, name: str) -> list[Finding]:
    """The findings recorded since the run last entered phase `name`."""
    found: list[Finding] = []
    for finding in reversed(ctx.log.findings):
        if finding.check == PHASE_CHECK and finding.evidence.get("phase") == name:
            return list(reversed(found))
        found.append(finding)
    return []


def _health_now(ctx: RunContext) -> dict[str, Any]:
    """One /health answer: its verdict, version and schema hash."""
    with service.client(ctx, skip_unresponsive=False) as http:
        p = service.probe(http, "GET", f"{ctx.target.fraiseql_url}/health")
    status, summary = service.health_verdict(p)
    body = p.body if isinstance(p.body, dict) else {}
    return {"healthy": status is Status.OK, "verdict": str(status), "summary": summary,
            "http_status": p.status_code, "version": body.get("version"),
            "schema_hash": body.get("schema_hash")}


# -- pre-checks ----------------------------------------------------------------------------------

@check("patch.versions")
def check_versions(ctx: RunContext, target_version: str | None) -> Finding:
    """The running version (/health) against the one to install: the same is nothing to do,
    an older one a downgrade, another major or minor release more than a patch."""
    release = service.server_release(ctx)
    current = release.reported
    evidence: dict[str, Any] = {"current": current, "target": target_version,
                                "rule": VERSION_RULE}
    if target_version is None:
        return ctx.result(Status.INFO, f"no target_version: nothing to install; the server "
                          f"runs {release.describe()}", evidence | {"kind": None,
                                                                     "needed": False},
                          "rerun with -p target_version X.Y.Z to plan the patch")
    kind = change_kind(current, target_version)
    evidence |= {"kind": kind, "needed": kind != "same"}
    move = f"{current} → {target_version}"
    if kind == "unknown":
        return ctx.result(Status.UNKNOWN, f"the server reports no version ({release.describe()}):"
                          f" the upgrade to {target_version} could not be verified by version "
                          "nor rolled back automatically (rollback_command needs the version "
                          "to go back to)", evidence, "note the running build (image tag, "
                          "package version) and upgrade by hand as §7.1 describes")
    if kind == "same":
        return ctx.result(Status.INFO, f"the server already runs {current}, which is "
                          f"{target_version}: nothing to install", evidence)
    if kind == "main":
        return ctx.result(Status.INFO, f"{current} → main: main is a branch, not a release "
                          "number, so the verification cannot compare versions; health and "
                          "reads verify it", evidence)
    if kind == "downgrade":
        return ctx.result(Status.WARNING, f"{move} is a DOWNGRADE: the target is older than "
                          "what runs", evidence, "check target_version; a downgrade is a "
                          "rollback, and may need the schema rolled back first")
    if kind == "major":
        return ctx.result(Status.WARNING, f"{move} is a major upgrade, not a patch: §7.1 is "
                          "for patches", evidence, "read the release's migration notes and "
                          "plan it as a release, with a staging run (§7.1 step 1) first")
    if kind == "minor":
        return ctx.result(Status.INFO, f"{move} is a minor upgrade, more than a patch",
                          evidence, "read the changelog for migrations (schema-migration) "
                          "before it")
    return ctx.result(Status.OK, f"{move}: a {'patch' if kind == 'patch' else 'new build'}",
                      evidence)


@check("patch.sla")
def check_sla(ctx: RunContext, severity: str, released_at: datetime | str | None,
              now: datetime | None = None) -> Finding:
    """§7.1's patching SLA: due 24 hours (critical), 7 days (security) or 31 days (regular,
    the monthly window) after the release. Overdue is a warning: patch now."""
    window = sla_window(severity)
    evidence: dict[str, Any] = {"severity": severity, "window_hours":
                                window.total_seconds() / 3600, "released_at": None}
    versions = _evidence(ctx, "patch.versions")
    if versions.get("kind") == "same":
        return ctx.result(Status.INFO, f"the patch is installed ({versions.get('current')}): "
                          "its SLA is met", evidence | {"installed": True})
    if versions.get("target") is None:
        return ctx.result(Status.INFO, "no target_version: no patch to time", evidence)
    if released_at is None:
        return ctx.result(Status.INFO, f"released_at not given: how much of the {severity} "
                          f"patch SLA ({human(window)}) is left is not known", evidence,
                          "rerun with -p released_at 2026-01-26T14:00:00Z (the advisory's "
                          "date) to measure it")
    sla = patch_sla(severity, released_at, now or datetime.now(UTC))
    evidence |= {"released_at": sla.released_at.isoformat(), "due_at": sla.due_at.isoformat(),
                 "remaining_hours": round(sla.remaining.total_seconds() / 3600, 1),
                 "overdue": sla.overdue}
    due = f"{sla.due_at:%Y-%m-%d %H:%M} UTC"
    if sla.overdue:
        return ctx.result(Status.WARNING, f"the {severity} patch is OVERDUE by "
                          f"{human(sla.remaining)} (due {due}, {human(window)} after its "
                          "release)", evidence, "patch now (-p execute true)")
    return ctx.result(Status.OK, f"{severity} patch due {due}: {human(sla.remaining)} left",
                      evidence)


@check("patch.baseline")
def check_baseline(ctx: RunContext) -> Finding:
    """What runs now, to come back to: version, schema hash, config checksum. An upgrade
    starts only from a service that is healthy and reads through PostgreSQL: on a failing one
    the verification could not tell the new release's fault from the old one's."""
    if not needed(ctx):
        return ctx.skip("no change planned: nothing to come back to")
    health, path = ctx.latest("service.health"), ctx.latest("graphql.data_path")
    config = ctx.target.get("config_path")
    evidence: dict[str, Any] = {
        "version": _evidence(ctx, "patch.versions").get("current"),
        "schema_hash": _evidence(ctx, "service.health").get("schema_hash"),
        "health": str(health.status) if health else None,
        "data_path": str(path.status) if path else None,
        "config_path": config,
        "config_sha256": (backup.sha256_of(Path(str(config)))
                          if config and Path(str(config)).is_file() else None)}
    problems = [f"{f.check}: {f.summary}" for f in (health, path)
                if f is not None and f.status not in _PASSING]
    if health is None:
        problems.append("service.health did not run")
    if problems:
        return ctx.result(Status.CRITICAL, "not upgraded: the service is not healthy now ("
                          + "; ".join(problems) + "), so a verification after the upgrade "
                          "could not tell its fault from the new release's", evidence,
                          "fix the service first (service-health, service-down), then rerun")
    reads = ("reads through PostgreSQL work" if path is not None and path.status is Status.OK
             else "no read through PostgreSQL was proved (no probe_query): the verification "
             "will rest on /health")
    return ctx.result(Status.OK, f"healthy on {evidence['version']} and {reads}: that is the "
                      "state a rollback returns to", evidence)


@check("patch.commands")
def check_commands(ctx: RunContext, target_version: str | None) -> Finding:
    """The inventory's upgrade_command (needed) and rollback_command (without it a failed
    verification needs the manual rollback), with their placeholders filled."""
    if not needed(ctx):
        return ctx.skip("no change planned")
    previous = _previous(ctx) or _evidence(ctx, "patch.versions").get("current")
    evidence: dict[str, Any] = {}
    for key, version in (("upgrade_command", target_version),
                         ("rollback_command", previous)):
        if not ctx.target.get(key):
            evidence[key] = None
            continue
        try:
            evidence[key] = change.command_text(ctx, key, {"version": version})
        except ValueError as exc:
            return ctx.result(Status.CRITICAL, str(exc), evidence,
                              f"fix {key} in the inventory: it may use {{version}} only")
    if evidence.get("upgrade_command") is None:
        return ctx.result(Status.CRITICAL, "the inventory has no upgrade_command: nothing "
                          "can install the release", evidence, "add upgrade_command (e.g. "
                          "\"deploy-fraiseql {version}\", which stops, installs and starts "
                          "it) to the target")
    if evidence.get("rollback_command") is None:
        return ctx.result(Status.WARNING, "no rollback_command: a failed verification cannot "
                          f"be rolled back automatically (to {previous})", evidence,
                          "add rollback_command (\"deploy-fraiseql {version}\") to the target")
    return ctx.result(Status.OK, f"upgrade with `{secrets.mask(evidence['upgrade_command'])}`,"
                      f" roll back with `{secrets.mask(evidence['rollback_command'])}`",
                      evidence)


def _backup_names(ctx: RunContext) -> tuple[Path, Path]:
    """The tarball and its checksum file: in backup_dir (else the run's directory), named
    as the fresh dump is (`pre-<runbook>-<UTC time>`), so §5.1's pruning of hourly
    `config-*.tar.gz` never takes it."""
    tarball = backup.pre_change_path(ctx, "-config.tar.gz")
    return tarball, tarball.with_name(tarball.name + ".sha256")


@check("patch.config_backup")
def backup_config(ctx: RunContext) -> Finding:
    """§7.1 step 5 `cp -r /etc/fraiseql /backups/config-pre-update`: the server's config file
    (config_path) in a tarball with its SHA-256 beside it (`sha256sum -c` reads it), mode
    0600 (it holds what the config holds). Written only when the change will run."""
    if not needed(ctx):
        return ctx.skip("no change planned: no backup needed")
    if blocked := change.stopping(ctx, PRECHECKS):
        return ctx.skip(f"the change will not run ({', '.join(blocked)} failed): no backup")
    config = ctx.target.get("config_path")
    if not config:
        return ctx.result(Status.CRITICAL, "no config_path in the inventory: the config "
                          "cannot be backed up (§7.1 step 5), so it could not be restored",
                          {"taken": False}, "add config_path (the server's config file) to "
                          "the target")
    source = Path(str(config))
    tarball, sums = _backup_names(ctx)
    command = (f"tar -czf {tarball} -C {source.parent} {source.name} && "
               f"sha256sum {tarball.name} > {sums.name}")
    evidence: dict[str, Any] = {"config_path": str(source), "tarball": str(tarball),
                                "sha256_file": str(sums), "command": command}
    if not ctx.execute:
        print(repr(ctx.action("config_backup", command, executed=False)))
        return ctx.result(Status.INFO, f"dry run: {source} would be saved in {tarball} with "
                          "its SHA-256", evidence | {"taken": False})
    try:
        data = source.read_bytes()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            info = tarfile.TarInfo(source.name)
            info.size, info.mode = len(data), source.stat().st_mode & 0o777
            info.mtime = int(source.stat().st_mtime)
            tar.addfile(info, io.BytesIO(data))
        _write_private(tarball, buffer.getvalue())
        digest = hashlib.sha256(buffer.getvalue()).hexdigest()
        _write_private(sums, f"{digest}  {tarball.name}\n".encode())
        intact = read_config_backup(tarball)[0] == data  # read back: it restores what it saved
    except (OSError, tarfile.TarError, ValueError) as exc:
        error = secrets.mask(str(exc))
        ctx.action("config_backup", command, executed=True, result={"ok": False,
                                                                     "error": error})
        return ctx.result(Status.CRITICAL, f"the config backup failed: {error}; the change "
                          "stops here", evidence | {"taken": False, "error": error},
                          "fix backup_dir (exists, writable, space) and rerun")
    evidence |= {"taken": intact, "sha256": digest, "bytes": tarball.stat().st_size,
                 "config_sha256": hashlib.sha256(data).hexdigest()}
    ctx.action("config_backup", command, executed=True,
               result={"ok": intact, "sha256": digest, "bytes": evidence["bytes"]})
    if not intact:
        return ctx.result(Status.CRITICAL, "the config backup does not read back as the "
                          "config: the change stops here", evidence)
    return ctx.result(Status.OK, f"config saved: {tarball.name} ({evidence['bytes']} bytes, "
                      f"sha256 {digest[:12]}…)", evidence)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def read_config_backup(tarball: Path) -> tuple[bytes, str]:
    """The config file's bytes and name from a tarball this runbook wrote, once its SHA-256
    matches the `.sha256` file beside it (ValueError otherwise: a damaged backup is never
    restored)."""
    sums = tarball.with_name(tarball.name + ".sha256")
    expected = sums.read_text().split()[0]
    actual = backup.sha256_of(tarball)
    if actual != expected:
        raise ValueError(f"{tarball.name}: sha256 {actual[:12]}… is not the recorded "
                         f"{expected[:12]}…")
    with tarfile.open(tarball, mode="r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        if len(members) != 1:
            raise ValueError(f"{tarball.name} holds {len(members)} files, not the config")
        handle = tar.extractfile(members[0])
        assert handle is not None
        return handle.read(), members[0].name


def take_dump(ctx: RunContext) -> Finding:
    """§7.1 step 5 for the data: a fresh dump before the change (backup.fresh_dump), so
    whatever the new release writes can be undone. Not taken when nothing will change."""
    if not needed(ctx):
        return backup.take_fresh_dump.skip(ctx, "no change planned: no dump needed")
    if blocked := change.stopping(ctx, PRECHECKS):
        return backup.take_fresh_dump.skip(ctx, f"the change will not run ({', '.join(blocked)}"
                                           " failed): no dump")
    versions = _evidence(ctx, "patch.versions")
    return backup.take_fresh_dump(ctx, f"patch upgrade {versions.get('current')} → "
                                  f"{versions.get('target')}")


def authorize(ctx: RunContext) -> Finding:
    """The gate: the upgrade runs only when every pre-check passed and execute=True."""
    versions = _evidence(ctx, "patch.versions")
    why = ("no target_version given" if versions.get("target") is None
           else f"{versions.get('current')} is already {versions.get('target')}")
    return change.gate(ctx, PRECHECKS, needed=needed(ctx), nothing_to_do=why)


# -- the change --------------------------------------------------------------------------------

@check("patch.upgrade")
def upgrade(ctx: RunContext, target_version: str | None,
            timeout_s: float = thresholds.UPGRADE_TIMEOUT_S) -> Finding:
    """The target's upgrade_command with {version}: it stops the old server, installs the
    release and starts it (§7.1 steps 4, 6, 8). When it fails, /health decides whether the
    server changed: it still answers healthy on the version and schema it had → nothing to
    undo, the change stops; anything else (down, another version) → the rollback runs."""
    if target_version is None or not needed(ctx):
        return ctx.skip("no change planned")
    if not change.allowed(ctx):
        recorded = change.run_command(ctx, "upgrade_command", "upgrade",
                                      values={"version": target_version}, timeout_s=timeout_s)
        shown = (f"recorded, not run: {recorded.command}" if recorded.command
                 else recorded.describe())
        return ctx.result(Status.INFO, f"{change.gate_outcome(ctx)}: {shown}",
                          recorded.evidence() | {"ok": False})
    previous = _previous(ctx)
    change.phase(ctx, "change", f"install {target_version} over {previous} with "
                 "upgrade_command")
    done = change.run_command(ctx, "upgrade_command", "upgrade",
                              values={"version": target_version}, timeout_s=timeout_s)
    evidence = done.evidence() | {"ok": done.ok, "target": target_version,
                                  "previous": previous}
    if done.ok:
        last = f": {done.output[-1]}" if done.output else ""
        return ctx.result(Status.OK, f"upgrade_command exited 0 after {done.elapsed_s:g} s"
                          f"{last}; verifying next", evidence)
    now = _health_now(ctx)
    baseline = _evidence(ctx, "patch.baseline")
    unchanged = (now["healthy"] and now["version"] == previous
                 and now["schema_hash"] == baseline.get("schema_hash"))
    evidence |= {"server_changed": not unchanged, "after": now}
    if unchanged:
        return ctx.result(Status.CRITICAL, f"the upgrade failed: {done.describe()}; the server "
                          f"still answers healthy on {previous}, so there is nothing to roll "
                          "back; the change stops here", evidence,
                          "read the command's output (evidence), fix it and rerun")
    return ctx.result(Status.CRITICAL, f"the upgrade failed: {done.describe()}; the server "
                      f"changed (/health: {now['summary']}), so the rollback to {previous} "
                      "runs next", evidence, "read the command's output (evidence); the "
                      "rollback below puts the old release back")


# -- verification ------------------------------------------------------------------------------

@check("patch.new_version")
def verify_version(ctx: RunContext, target_version: str | None,
                   wait_s: float = thresholds.UPGRADE_HEALTH_WAIT_S) -> Finding:
    """§7.1 step 7 `curl /health`, polled until healthy (up to `wait_s`), and its version
    against the target by VERSION_RULE."""
    if not upgraded(ctx) or target_version is None:
        return ctx.skip("no upgrade ran: nothing to verify")
    change.phase(ctx, "verification", f"does {target_version} run, healthy, and serve?")
    p, status, summary, waited, _ = service.wait_for_health(ctx, wait_s)
    body = p.body if isinstance(p.body, dict) else {}
    reported = body.get("version")
    match = version_matches(reported, target_version)
    evidence = {"reported": reported, "target": target_version, "matches": match,
                "rule": VERSION_RULE, "waited_s": waited, "health": str(status),
                "previous": _previous(ctx)}
    if status is not Status.OK:
        return ctx.result(Status.CRITICAL, f"not healthy {waited:g} s after the upgrade: "
                          f"{summary}", evidence)
    if match is False:
        return ctx.result(Status.CRITICAL, f"/health reports {reported}, not {target_version}:"
                          " the upgrade did not install it", evidence)
    if match is None and _normal(target_version) != "main":
        return ctx.result(Status.UNKNOWN, f"the new server reports no version: whether "
                          f"{target_version} runs cannot be verified", evidence)
    if match is None:
        return ctx.result(Status.INFO, f"healthy after {waited:g} s, reporting {reported} "
                          f"(main names no number to compare; before: {_previous(ctx)})",
                          evidence)
    return ctx.result(Status.OK, f"/health reports {reported} (target {target_version}), "
                      f"healthy after {waited:g} s", evidence)


def verify_service(ctx: RunContext) -> list[Finding]:
    """service-health's checks on the new release: /health, /readiness, `{ __typename }`
    and a read through PostgreSQL (probe_query), which only a working release answers."""
    if not upgraded(ctx):
        print("no upgrade ran: nothing to verify")
        return []
    return [service_checks.check_health(ctx), service_checks.check_readiness(ctx),
            service_checks.check_graphql(ctx), service_checks.check_data_path(ctx)]


def verify_instances(ctx: RunContext) -> list[Finding]:
    """deployment-verification's checks: every instance healthy, all on one version and
    one schema_hash (a half-finished rollout serves two APIs)."""
    if not upgraded(ctx):
        print("no upgrade ran: nothing to verify")
        return []
    table = instances.instance_table(ctx)
    return [instances.check_instances(ctx, table), instances.check_consistency(ctx, table)]


@check("patch.verification")
def verdict(ctx: RunContext) -> Finding:
    """Did the new release pass? Every verification check ok or info: anything else
    (critical, unknown, and warnings too, since it started from a healthy service) fails it,
    and the rollback follows."""
    if not upgraded(ctx):
        return ctx.skip("no upgrade ran: nothing to verify")
    checked = [f for f in _since_phase(ctx, "verification") if f.check != PHASE_CHECK]
    failed = [f for f in checked if f.status not in _PASSING]
    evidence = {"checks": [{"check": f.check, "status": str(f.status)} for f in checked],
                "failed": [f.check for f in failed], "passed": not failed}
    if not failed:
        return ctx.result(Status.OK, f"verified: {len(checked)} checks pass on the new "
                          "release", evidence)
    reasons = "; ".join(f"{f.check}: {f.summary}" for f in failed)
    then = (f"rolling back to {_previous(ctx)} automatically"
            if ctx.target.get("rollback_command") else
            "no rollback_command: roll back by hand (below)")
    return ctx.result(Status.CRITICAL, f"the new release failed its verification ({reasons}); "
                      f"{then}", evidence)


# -- rollback ----------------------------------------------------------------------------------

def _rollback_reason(ctx: RunContext) -> str | None:
    """Why a rollback is due, or None: the verification failed, or a failed
    upgrade_command left the server changed."""
    if _evidence(ctx, "patch.verification").get("passed") is False:
        return "the new release failed its verification"
    upgrade_found = _evidence(ctx, "patch.upgrade")
    if upgrade_found.get("executed") and upgrade_found.get("server_changed"):
        return "upgrade_command failed and left the server changed"
    return None


def restore_config(ctx: RunContext) -> dict[str, Any]:
    """The config from the pre-change tarball (checksum verified first), written beside the
    file and renamed over it only when it differs. Never raises: the result says."""
    backup_found = _evidence(ctx, "patch.config_backup")
    tarball, config = backup_found.get("tarball"), ctx.target.get("config_path")
    if not backup_found.get("taken") or not tarball or not config:
        return {"ok": False, "error": "no config backup was taken"}
    target = Path(str(config))
    command = f"sha256sum -c {Path(tarball).name}.sha256 && tar -xzf {tarball} -C {target.parent}"
    try:
        data, _ = read_config_backup(Path(tarball))
        changed = not target.is_file() or target.read_bytes() != data
        if changed:
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            if target.is_file():
                os.chmod(tmp, target.stat().st_mode & 0o777)
            os.replace(tmp, target)
    except (OSError, tarfile.TarError, ValueError, IndexError) as exc:
        result = {"ok": False, "error": secrets.mask(str(exc))}
    else:
        result = {"ok": True, "changed": changed,
                  "sha256": hashlib.sha256(data).hexdigest()}
    ctx.action("restore_config", command, executed=True, result=result)
    return result


@check("patch.rollback")
def rollback(ctx: RunContext, timeout_s: float = thresholds.UPGRADE_TIMEOUT_S) -> Finding:
    """§7.1's "Rollback: Immediate restart with previous version", automatically: the old
    config back from its tarball, then rollback_command with {version} = the version that ran
    before. Without rollback_command it is a critical finding with the manual steps."""
    why = _rollback_reason(ctx)
    if why is None:
        verified = _evidence(ctx, "patch.verification").get("passed")
        return ctx.skip("the new release passed its verification" if verified else
                        "no upgrade changed the server: nothing to roll back")
    previous = _previous(ctx)
    tarball = _evidence(ctx, "patch.config_backup").get("tarball")
    manual = (f"install {previous} again as upgrade_command would (§7.1 step 6 with the old "
              f"version), after restoring the config: sha256sum -c {tarball}.sha256 && tar "
              f"-xzf {tarball} -C {Path(str(ctx.target.get('config_path'))).parent}")
    if not ctx.target.get("rollback_command"):
        return ctx.result(Status.CRITICAL, f"{why}, and the inventory has no rollback_command:"
                          f" roll back by hand to {previous}", {"executed": False,
                                                                 "reason": why,
                                                                 "manual": manual},
                          manual)
    change.phase(ctx, "rollback", f"back to {previous}: {why}")
    config = restore_config(ctx)
    done = change.run_command(ctx, "rollback_command", "rollback",
                              values={"version": previous}, timeout_s=timeout_s)
    evidence = done.evidence() | {"reason": why, "previous": previous, "config": config,
                                  "ok": done.ok and config["ok"], "manual": manual}
    if not config["ok"]:
        return ctx.result(Status.CRITICAL, f"the config could not be restored "
                          f"({config['error']}); rollback_command: {done.describe()}",
                          evidence, manual)
    if not done.ok:
        return ctx.result(Status.CRITICAL, f"the rollback failed: {done.describe()}",
                          evidence, manual)
    what = "restored" if config.get("changed") else "unchanged by the upgrade (checked)"
    return ctx.result(Status.OK, f"rolled back to {previous} ({why}): config {what}, "
                      f"rollback_command exited 0 after {done.elapsed_s:g} s; verifying "
                      "next", evidence)


def _reads(ctx: RunContext) -> tuple[bool | None, str]:
    """A read through PostgreSQL (probe_query), judged as graphql.data_path judges it,
    without recording it under that name: the rollback's verification reports one verdict."""
    query = ctx.target.get("probe_query")
    if not query:
        return None, "no probe_query: reads not proved"
    sent = f"{query}\n# fraiseql-rb rollback probe {uuid.uuid4().hex}"  # past any query cache
    with service.client(ctx, skip_unresponsive=False) as http:
        p = service.graphql(http, ctx.target.fraiseql_url, sent)
    body = p.body if isinstance(p.body, dict) else {}
    data = body.get("data")
    if p.status_code == 200 and not body.get("errors") and isinstance(data, dict) and any(
            v is not None for v in data.values()):
        return True, "reads through PostgreSQL work"
    error = (body.get("errors") or [{}])[0]
    what = error.get("message") if isinstance(error, dict) else None
    return False, f"the read failed (HTTP {p.status_code}: {what or p.error or 'no data'})"


@check("patch.rollback_verification")
def verify_rollback(ctx: RunContext,
                    wait_s: float = thresholds.UPGRADE_HEALTH_WAIT_S) -> Finding:
    """The old release back: /health healthy on the version that ran before and a read
    through PostgreSQL. Back, the verification's failures are resolved by it and the run
    ends in a warning (the patch is still not installed); not back, it is critical."""
    found = ctx.latest("patch.rollback")
    if found is None or found.evidence.get("skipped") or not found.evidence.get("executed"):
        return ctx.skip("no rollback ran")
    previous = _previous(ctx)
    p, status, summary, waited, _ = service.wait_for_health(ctx, wait_s)
    body = p.body if isinstance(p.body, dict) else {}
    reads, read_summary = _reads(ctx)
    back = (status is Status.OK and version_matches(body.get("version"), str(previous))
            is True and reads is not False and found.evidence.get("config", {}).get("ok"))
    evidence = {"restored": bool(back), "version": body.get("version"), "previous": previous,
                "health": str(status), "reads": reads, "waited_s": waited}
    if not back:
        return ctx.result(Status.CRITICAL, f"the rollback to {previous} did not bring it back "
                          f"(/health: {summary}; {read_summary})", evidence,
                          found.evidence.get("manual"))
    failed = set(_evidence(ctx, "patch.verification").get("failed") or [])
    command = ctx.latest("patch.upgrade")
    if command is not None and command.status is Status.CRITICAL:
        failed.add("patch.upgrade")  # it failed but the old release is back
    resolved = tuple(sorted(failed | {"patch.verification"}))
    target = _evidence(ctx, "patch.versions").get("target")
    return ctx.result(Status.WARNING, f"rolled back: {body.get('version')} answers healthy "
                      f"again after {waited:g} s and {read_summary}; {target} is NOT "
                      "installed", evidence, "find why the new release failed (the "
                      "verification findings above, its logs) before trying again; the patch "
                      "is still due", resolves=resolved)


# -- the record --------------------------------------------------------------------------------

def what(ctx: RunContext) -> str:
    """The change in one line, for the change record."""
    versions = _evidence(ctx, "patch.versions")
    if versions.get("target") is None:
        return f"patch upgrade of {ctx.target_name}: none planned (runs {versions.get('current')})"
    return (f"patch upgrade of {ctx.target_name}: {versions.get('current')} → "
            f"{versions.get('target')}")


def outcome(ctx: RunContext) -> str | None:
    """The change record's outcome: the gate's when nothing ran, else applied, failed,
    rolled-back or rollback-failed."""
    if not change.allowed(ctx):
        return change.gate_outcome(ctx)
    back = _evidence(ctx, "patch.rollback_verification")
    if "restored" in back:
        return "rolled-back" if back["restored"] else "rollback-failed"
    if _evidence(ctx, "patch.verification").get("passed") is True:
        return "applied"
    return "failed"
