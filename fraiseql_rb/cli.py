"""`fraiseql-rb`: the command line. Every failure is one line on stderr and a documented code.

Exit codes (DESIGN.md): 0 ok, 1 warning, 2 critical, 3 unknown, 64 usage error.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from fraiseql_rb import __version__
from fraiseql_rb.core import paths, secrets
from fraiseql_rb.core.errors import EXIT_UNKNOWN, EXIT_USAGE, RunbookError, UsageError

# nbformat validates with jsonschema, whose optional IRI format checker builds rfc3987-syntax's
# grammars when it is imported: 1.6 s of CPU at the start of every command that reads a
# notebook, for formats nbformat's schema never uses. Our command does without that checker
# (jsonschema skips it on ImportError); kernels and other programs are not affected.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage; our contract says 64, with one line."""

    def error(self, message: str) -> NoReturn:
        print(f"fraiseql-rb: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _parameter_pairs(values: list[list[str]] | None) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for name, value in values or []:
        pairs[name] = value
    return pairs


def _show_warnings(caught: list[warnings.WarningMessage]) -> None:
    """A renamed `-p` (runbooks.DeprecatedParameter) is one line on stderr; any other warning
    is shown as Python would have shown it."""
    from fraiseql_rb.core import runbooks

    for warning in caught:
        if issubclass(warning.category, runbooks.DeprecatedParameter):
            print(f"fraiseql-rb: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename,
                                 warning.lineno)


def cmd_list(args: argparse.Namespace) -> int:
    from fraiseql_rb.core import runbooks

    found = runbooks.discover()
    if not found:
        print(f"no runbooks found under {paths.notebooks_dir()}", file=sys.stderr)
        return EXIT_UNKNOWN
    for rb in sorted(found.values(), key=lambda r: (runbooks.SECTIONS.index(r.section), r.name)):
        print(f"{rb.name}  [{rb.section}]  {rb.purpose}")
        if rb.requires:
            print(f"    requires: {', '.join(rb.requires)} (inventory keys)")
        for p in rb.parameters.values():
            constraint = f"  [{p.constraint.text}]" if p.constraint else ""
            help_text = f"  # {p.help}" if p.help else ""
            print(f"    {p.name}: {p.type} = {p.default!r}{constraint}{help_text}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from fraiseql_rb.core import report, runbooks
    from fraiseql_rb.runner import execute as runner

    if args.targets or args.all_targets:
        from fraiseql_rb.runner import fleet

        return fleet.main(args)
    if args.jobs is not None or args.dask_scheduler:
        raise UsageError("--jobs and --dask-scheduler need --targets or --all-targets")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", runbooks.DeprecatedParameter)
        request = runner.prepare(
            args.runbook, target=args.target, inventory_path=args.inventory,
            overrides=_parameter_pairs(args.parameter), incident_id=args.incident_id,
            output_dir=args.output_dir,
        )
    _show_warnings(caught)  # not after a usage error: that is one line, naming both names
    if args.notify:  # notify_env/notify_file URLs that apprise cannot read: exit 64 now
        from fraiseql_rb.runner import notify

        notify.check(request)
    if not args.quiet:  # which file and target: a stray $FRAISEQL_RB_INVENTORY shows at once
        print(f"fraiseql-rb: inventory {request.inventory_path}, target {request.target}",
              file=sys.stderr)
    result = runner.execute(request, progress=not args.quiet)
    print(f"status: {result.status}")
    for line in report.terminal_summary(result.findings):  # root cause, next step, criticals
        print(line)
    if args.notify:
        notify.after_run(request, result, args.notify)  # a failed send never fails the run
    print(result.artifact_dir)  # the contract: the last line of stdout
    return result.exit_code


def cmd_site(args: argparse.Namespace) -> int:
    from fraiseql_rb.site import build

    return build.main(Path(args.output_dir), Path(args.site_dir) if args.site_dir else None,
                      serve=args.serve, port=args.port)


def cmd_validate_config(args: argparse.Namespace) -> int:
    from fraiseql_rb.checks import config

    return config.main_validate(args.file, max_connections=args.max_connections,
                                instances=args.instances)


def cmd_lint_alerts(args: argparse.Namespace) -> int:
    from fraiseql_rb.checks import alert_rules

    exported = (alert_rules.exported_from_target(args.target, args.inventory)
                if args.target else None)
    return alert_rules.main_lint(args.rules_file, exported, sys.stdout)


def cmd_sandbox(args: argparse.Namespace) -> int:
    directory = Path(args.dir) if args.dir else paths.sandbox_dir()
    if args.sandbox_command == "service":
        # the inventory's status/logs/restart commands: keep them quick, import little
        from .sandbox import server

        return server.service(directory, args.action, args.values, lines=args.lines)
    if args.sandbox_command == "node":
        from .sandbox import replica

        print(replica.control(directory, args.node, args.action))
        return 0
    from .sandbox import manager

    if args.sandbox_command == "up":
        info = manager.up(directory, audit_events=args.audit_events, seed=args.seed,
                          replica=not args.no_replica, server_version=args.server_version,
                          scale=args.scale)
        print(info.inventory)
        return 0
    if args.sandbox_command == "down":
        manager.down(directory, purge=args.purge)
        print(f"sandbox in {directory} {'removed' if args.purge else 'stopped'}")
        return 0
    if args.sandbox_command == "status":
        report = manager.status(directory)
        for line in report.lines():
            print(line)
        return 0 if report.healthy else 1
    if args.sandbox_command == "fault":
        print(manager.inject(directory, args.name))
        return 0
    if args.sandbox_command == "heal":
        print(manager.heal(directory, args.name))
        return 0
    raise AssertionError(args.sandbox_command)


def cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    return demo.main(Path(args.dir) if args.dir else paths.sandbox_dir(),
                     Path(args.output_dir), keep=args.keep)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fraiseql-rb", description="Executable runbooks for FraiseQL.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="every runbook with its section, purpose and parameters")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="execute a runbook with papermill and write its artifacts")
    p.add_argument("runbook", help="runbook name, e.g. service-health")
    p.add_argument("--target", help="inventory target (default: the notebook's)")
    p.add_argument("--inventory", help="inventory file (default: $FRAISEQL_RB_INVENTORY, "
                   "./fraiseql-rb.toml, then the sandbox's)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="set a notebook parameter (checked against its declared type)")
    p.add_argument("--incident-id", help="incident reference, added to the artifact path")
    p.add_argument("--output-dir", default=str(paths.DEFAULT_OUTPUT_DIR),
                   help="where dated artifacts go (default: ./reports)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress on stderr (steps, findings, waits)")
    p.add_argument("--notify", choices=["always", "problems"],
                   help="send the verdict to the target's apprise URLs (notify, notify_env, "
                   "notify_file): after every run, or only when it is not ok")
    fleet = p.add_mutually_exclusive_group()
    fleet.add_argument("--targets", help="run against each of these inventory targets "
                       "(comma-separated) and write a fleet summary")
    fleet.add_argument("--all-targets", action="store_true",
                       help="run against every target of the inventory")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="fleet runs: N at a time in local worker processes (default: 1)")
    p.add_argument("--dask-scheduler", metavar="ADDR",
                   help="fleet runs: one task per target on this Dask distributed scheduler "
                   "(default: $DASK_SCHEDULER_ADDRESS when set)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("site", help="build the static report site (index, incidents, "
                       "trends) from the reports directory")
    p.add_argument("--output-dir", default=str(paths.DEFAULT_OUTPUT_DIR),
                   help="the reports directory to read (default: ./reports)")
    p.add_argument("--site-dir", help="where the site is written (default: OUTPUT_DIR/site)")
    p.add_argument("--serve", action="store_true", help="then serve it on localhost to preview")
    p.add_argument("--port", type=int, default=8765, help="--serve's port (default: 8765)")
    p.set_defaults(func=cmd_site)

    p = sub.add_parser("validate-config", help="validate a FraiseQL config file (runbook "
                       "§1.2 format, v2 server config or fraiseql.toml)")
    p.add_argument("file", help="the config file")
    p.add_argument("--max-connections", type=int,
                   help="PostgreSQL max_connections, to check the pool size against")
    p.add_argument("--instances", type=int, default=1,
                   help="instances sharing the database (default 1)")
    p.set_defaults(func=cmd_validate_config)

    p = sub.add_parser("lint-alerts", help="check Prometheus alert rules against the metrics "
                       "FraiseQL really exports")
    p.add_argument("rules_file", help="a rules file, or a bare YAML list of rules")
    p.add_argument("--target", help="scrape this target for the names it exports (default: "
                   "the catalog of real v2 names)")
    p.add_argument("--inventory", help="inventory file")
    p.set_defaults(func=cmd_lint_alerts)

    p = sub.add_parser("sandbox", help="the local drill environment")
    p.add_argument("--dir", help=f"sandbox directory (default: {paths.sandbox_dir()})")
    # `--dir` also after the subcommand (`sandbox up --dir DIR`, as DESIGN writes it)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--dir", default=argparse.SUPPRESS, help="sandbox directory")
    ssub = p.add_subparsers(dest="sandbox_command", required=True, parser_class=_Parser)
    up = ssub.add_parser("up", parents=[where],
                         help="build and start the sandbox; prints its inventory path")
    up.add_argument("--audit-events", type=int, default=20_000,
                    help="audit events to generate over 30 days (default 20000)")
    up.add_argument("--seed", type=int, default=42, help="seed for generated data")
    up.add_argument("--server-version", default=None, metavar="V",
                    help="the FraiseQL release the stand-in emulates: 2.9 (or 2.9.x), 2.14.1, "
                    "main or foreign (default: main, or the release the sandbox records)")
    up.add_argument("--no-replica", action="store_true",
                    help="a primary alone, without the streaming replica")
    up.add_argument("--scale", type=int, default=1, metavar="N",
                    help="multiply the generated data (audit events, users, posts) by N, "
                    "e.g. to measure how restore time grows (default 1)")
    dn = ssub.add_parser("down", parents=[where], help="stop everything the sandbox runs")
    dn.add_argument("--purge", action="store_true", help="also delete the sandbox directory")
    ssub.add_parser("status", parents=[where], help="what runs, where")
    for verb in ("fault", "heal"):
        f = ssub.add_parser(verb, parents=[where],
                            help=f"{verb} a drill fault (see `sandbox status`)")
        f.add_argument("name")
    svc = ssub.add_parser("service", parents=[where],
                          help="control the stand-in server, as systemctl would "
                          "(used by the inventory's restart/status/logs commands)")
    svc.add_argument("action", choices=["start", "stop", "restart", "status", "logs",
                                        "upgrade", "rollback", "scale"])
    svc.add_argument("values", nargs="*", metavar="VALUE",
                     help="upgrade/rollback: the release; scale: out, or in and the "
                     "instance URL")
    svc.add_argument("--lines", type=int, default=50, help="log lines to show")
    nd = ssub.add_parser("node", parents=[where],
                         help="start or stop one PostgreSQL node (the inventory's "
                         "replica_*_command keys, for failover drills)")
    nd.add_argument("node", choices=["primary", "replica"])
    nd.add_argument("action", choices=["start", "stop"])
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser("demo", help="bring the sandbox up and run every runbook against it")
    p.add_argument("--dir", help="sandbox directory")
    p.add_argument("--output-dir", default=str(paths.DEFAULT_OUTPUT_DIR))
    p.add_argument("--keep", action="store_true", help="leave the sandbox running afterwards")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except RunbookError as exc:
        print(f"fraiseql-rb: {secrets.mask(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `fraiseql-rb list | head`: the reader left, nothing to say
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("fraiseql-rb: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the contract is one line, never a traceback
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"fraiseql-rb: {type(exc).__name__}: {secrets.mask(text)}", file=sys.stderr)
        return EXIT_UNKNOWN


if __name__ == "__main__":
    sys.exit(main())
