"""PostgreSQL's `EXPLAIN (FORMAT JSON)` read as a tree, and drawn as the text a person reads.

The high-query-latency playbook (§4.1 step 4) runs `EXPLAIN (FORMAT JSON)` (with `ANALYZE,
BUFFERS` only when it may run the query) and reads the numbers from the tree: the top node's
estimated cost and rows, the actual rows and times when the query ran, every sequential scan,
and the nodes that returned far more rows than estimated. Nothing is parsed out of text.

The responder still sees the familiar plan: `Plan.lines()` renders the tree the way
`EXPLAIN`'s own text format does (node names such as `Hash Left Join` or `HashAggregate`,
`  ->  ` indentation, `(cost=... rows=... width=...)`, `(actual time=...)`, conditions, sort
and hash details, `Buffers:`, planning and execution times). Plans of the common nodes come
out as PostgreSQL (up to 17) prints them; the rarer per-node details are shown as `Key: value`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fraiseql_rb.core import thresholds

UNDERESTIMATE_FACTOR = thresholds.PLAN_UNDERESTIMATE_FACTOR  # rows returned ÷ estimated

# The "Node Type" of a join gives the text's name stem; the join type is appended to it.
_JOIN_STEM = {"Nested Loop": "Nested Loop", "Hash Join": "Hash", "Merge Join": "Merge"}
_AGG_NAME = {"Plain": "Aggregate", "Sorted": "GroupAggregate", "Hashed": "HashAggregate",
             "Mixed": "MixedAggregate"}
_SETOP_NAME = {"Sorted": "SetOp", "Hashed": "HashSetOp"}
_OBJECT_KEYS = ("Relation Name", "Function Name", "Table Function Name", "CTE Name",
                "Tuplestore Name")
# Keys drawn in the node's header line (or as its structure), never as detail lines.
_HEADER_KEYS = frozenset({
    "Node Type", "Strategy", "Partial Mode", "Parallel Aware", "Async Capable", "Operation",
    "Join Type", "Command", "Custom Plan Provider", "Scan Direction", "Index Name", "Schema",
    "Alias", *_OBJECT_KEYS, "Startup Cost", "Total Cost", "Plan Rows", "Plan Width",
    "Actual Startup Time", "Actual Total Time", "Actual Rows", "Actual Loops",
    "Parent Relationship", "Subplan Name", "Plans", "Inner Unique",
})
_BUFFER_KINDS = (("Shared", "shared", ("Hit", "Read", "Dirtied", "Written")),
                 ("Local", "local", ("Hit", "Read", "Dirtied", "Written")),
                 ("Temp", "temp", ("Read", "Written")))
_BUFFER_KEYS = frozenset(f"{kind} {what} Blocks" for kind, _, whats in _BUFFER_KINDS
                         for what in whats)
_SORT_KEYS = ("Sort Method", "Sort Space Used", "Sort Space Type")
_HASH_KEYS = ("Hash Buckets", "Original Hash Buckets", "Hash Batches", "Original Hash Batches",
              "Peak Memory Usage")
_HASHAGG_KEYS = ("Planned Partitions", "HashAgg Batches", "Peak Memory Usage", "Disk Usage")
_MEMOIZE_KEYS = ("Cache Hits", "Cache Misses", "Cache Evictions", "Cache Overflows",
                 "Peak Memory Usage")
_HEAP_KEYS = ("Exact Heap Blocks", "Lossy Heap Blocks")
_SKIP_ZERO = re.compile(r"^(Rows Removed by .*|Subplans Removed)$")
_SIMPLE_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_$]*$")


def quote(name: str) -> str:
    """An identifier as PostgreSQL prints it (reserved words aside)."""
    return name if _SIMPLE_IDENTIFIER.match(name) else '"' + name.replace('"', '""') + '"'


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value(v)}" for k, v in value.items())
    if isinstance(value, bool):
        return "true" if value else "false"
    return _num(value)


def walk(node: dict[str, Any], depth: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """Every node of the tree with its depth, in the order EXPLAIN prints them."""
    yield depth, node
    for child in node.get("Plans") or []:
        yield from walk(child, depth + 1)


def label(node: dict[str, Any]) -> str:
    """The node's name as the text format prints it: `Index Scan using ix on tb_user u`,
    `Hash Left Join`, `Partial HashAggregate`, `Parallel Seq Scan on t`..."""
    kind = str(node.get("Node Type", "?"))
    name = kind
    if kind == "Aggregate":
        name = _AGG_NAME.get(node.get("Strategy"), kind)
        if node.get("Partial Mode") in ("Partial", "Finalize"):
            name = f"{node['Partial Mode']} {name}"
    elif kind == "SetOp":
        name = _SETOP_NAME.get(node.get("Strategy"), kind)
    elif kind == "ModifyTable":
        name = str(node.get("Operation", kind))
    elif kind == "Foreign Scan" and node.get("Operation", "Select") != "Select":
        name = f"Foreign {node['Operation']}"
    elif kind in _JOIN_STEM:
        name = _JOIN_STEM[kind]
    text = (("Parallel " if node.get("Parallel Aware") else "")
            + ("Async " if node.get("Async Capable") else "") + name)
    if kind == "Custom Scan" and node.get("Custom Plan Provider"):
        text += f" ({node['Custom Plan Provider']})"
    if kind in ("Index Scan", "Index Only Scan"):
        if node.get("Scan Direction") == "Backward":
            text += " Backward"
        if node.get("Index Name"):
            text += f" using {quote(node['Index Name'])}"
    elif kind == "Bitmap Index Scan" and node.get("Index Name"):
        text += f" on {quote(node['Index Name'])}"
    if "Alias" in node:
        obj = next((node[k] for k in _OBJECT_KEYS if k in node), None)
        text += " on"
        if obj is not None:
            text += (f" {quote(node['Schema'])}.{quote(obj)}" if node.get("Schema")
                     else f" {quote(obj)}")
        if obj is None or node["Alias"] != obj:
            text += f" {quote(node['Alias'])}"
    if kind in _JOIN_STEM:
        join = node.get("Join Type", "Inner")
        if join != "Inner":
            text += f" {join} Join"
        elif kind != "Nested Loop":
            text += " Join"
    if kind == "SetOp" and node.get("Command"):
        text += f" {node['Command']}"
    return text


def _header(node: dict[str, Any], analyzed: bool) -> str:
    text = label(node)
    if "Total Cost" in node:
        text += (f"  (cost={node.get('Startup Cost', 0):.2f}..{node['Total Cost']:.2f} "
                 f"rows={node.get('Plan Rows', 0):.0f} width={node.get('Plan Width', 0)})")
    if analyzed:
        loops = node.get("Actual Loops")
        if not loops:
            text += " (never executed)"
        elif "Actual Total Time" in node:
            text += (f" (actual time={node['Actual Startup Time']:.3f}.."
                     f"{node['Actual Total Time']:.3f} rows={node.get('Actual Rows', 0):.0f} "
                     f"loops={loops:.0f})")
        else:
            text += f" (actual rows={node.get('Actual Rows', 0):.0f} loops={loops:.0f})"
    return text


def _buffers(holder: dict[str, Any]) -> str | None:
    parts = []
    for kind, word, whats in _BUFFER_KINDS:
        counts = [f"{what.lower()}={_num(holder[key])}" for what in whats
                  if (holder.get(key := f"{kind} {what} Blocks") or 0) > 0]
        if counts:
            parts.append(f"{word} {' '.join(counts)}")
    return "Buffers: " + ", ".join(parts) if parts else None


def _io_timings(holder: dict[str, Any]) -> str | None:
    times = [(k, v) for k, v in holder.items() if "I/O" in k and isinstance(v, int | float)]
    if not any(v for _, v in times):
        return None
    return "I/O Timings: " + ", ".join(f"{k.replace(' Time', '').lower()}={v:.3f}"
                                       for k, v in times if v)


def _details(node: dict[str, Any], analyzed: bool, kind: str | None = None) -> list[str]:
    """The node's detail lines, in the order PostgreSQL emits its properties (`kind`: the
    node type, for a worker's share of a node)."""
    out: list[str] = []
    done: set[str] = set()
    kind = kind or node.get("Node Type")
    for key, value in node.items():
        if key in _HEADER_KEYS or key in done:
            continue
        if key in _BUFFER_KEYS:
            done |= _BUFFER_KEYS
            if (line := _buffers(node)) is not None:
                out.append(line)
        elif "I/O" in key:
            done |= {k for k in node if "I/O" in k}
            if (line := _io_timings(node)) is not None:
                out.append(line)
        elif key in _SORT_KEYS:
            done.update(_SORT_KEYS)
            line = f"Sort Method: {node.get('Sort Method')}"
            if "Sort Space Used" in node:
                line += f"  {node.get('Sort Space Type', 'Memory')}: {node['Sort Space Used']}kB"
            out.append(line)
        elif kind == "Hash" and key in _HASH_KEYS:
            done.update(_HASH_KEYS)
            buckets, batches = node.get("Hash Buckets"), node.get("Hash Batches")
            ob, obat = node.get("Original Hash Buckets", buckets), node.get(
                "Original Hash Batches", batches)
            if ob != buckets or obat != batches:
                line = (f"Buckets: {buckets} (originally {ob})  Batches: {batches} "
                        f"(originally {obat})")
            else:
                line = f"Buckets: {buckets}  Batches: {batches}"
            out.append(f"{line}  Memory Usage: {node.get('Peak Memory Usage', 0)}kB")
        elif kind == "Aggregate" and key in _HASHAGG_KEYS:
            done.update(_HASHAGG_KEYS)
            parts = []
            if node.get("Planned Partitions"):
                parts.append(f"Planned Partitions: {node['Planned Partitions']}")
            if analyzed and "HashAgg Batches" in node:
                parts.append(f"Batches: {node['HashAgg Batches']}  Memory Usage: "
                             f"{node.get('Peak Memory Usage', 0)}kB")
                if node["HashAgg Batches"] > 1:
                    parts.append(f"Disk Usage: {node.get('Disk Usage', 0)}kB")
            if parts:
                out.append("  ".join(parts))
        elif kind == "Memoize" and key in _MEMOIZE_KEYS:
            done.update(_MEMOIZE_KEYS)
            out.append(f"Hits: {node.get('Cache Hits', 0)}  Misses: {node.get('Cache Misses', 0)}"
                       f"  Evictions: {node.get('Cache Evictions', 0)}  Overflows: "
                       f"{node.get('Cache Overflows', 0)}  Memory Usage: "
                       f"{node.get('Peak Memory Usage', 0)}kB")
        elif key in _HEAP_KEYS:
            done.update(_HEAP_KEYS)
            parts = [f"{k.split()[0].lower()}={node[k]}" for k in _HEAP_KEYS if node.get(k)]
            if parts:
                out.append("Heap Blocks: " + " ".join(parts))
        elif key == "Workers" and isinstance(value, list):
            for worker in value:
                if isinstance(worker, dict):
                    rest = {k: v for k, v in worker.items() if k != "Worker Number"}
                    out.append(f"Worker {worker.get('Worker Number', '?')}:  "
                               + "  ".join(_details(rest, analyzed, kind)))
        elif isinstance(value, bool):
            if value:
                out.append(f"{key}: true")
        elif value is None or (_SKIP_ZERO.match(key) and not value):
            continue
        else:
            out.append(f"{key}: {_value(value)}")
    return out


def _render(node: dict[str, Any], analyzed: bool, indent: int, out: list[str]) -> None:
    # `indent` counts steps of two spaces, as PostgreSQL's own text output does
    if node.get("Subplan Name"):
        out.append("  " * indent + str(node["Subplan Name"]))
        indent += 1
    if indent:
        out.append("  " * indent + "->  " + _header(node, analyzed))
        indent += 2
    else:
        out.append(_header(node, analyzed))
    indent += 1
    out.extend("  " * indent + line for line in _details(node, analyzed))
    for child in node.get("Plans") or []:
        _render(child, analyzed, indent, out)


def _summary_lines(raw: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in raw.items():
        if key == "Plan":
            continue
        if key == "Planning" and isinstance(value, dict):
            inner = [line for line in (_buffers(value), _io_timings(value)) if line]
            if inner:
                out += ["Planning:", *("  " + line for line in inner)]
        elif key in ("Planning Time", "Execution Time") and isinstance(value, int | float):
            out.append(f"{key}: {value:.3f} ms")
        elif key == "Triggers" and isinstance(value, list):
            for t in value:
                on = f" on {t['Constraint Name']}" if t.get("Constraint Name") else ""
                out.append(f"Trigger {t.get('Trigger Name')}{on}: time={t.get('Time', 0):.3f} "
                           f"calls={t.get('Calls', 0):.0f}")
        elif key == "JIT" and isinstance(value, dict):
            out.append("JIT:")
            for k, v in value.items():
                if k == "Timing" and isinstance(v, dict):
                    v = ", ".join(f"{tk} {_timing(tv)}" for tk, tv in v.items())
                out.append(f"  {k}: {_value(v)}")
        elif value not in (None, [], {}):
            out.append(f"{key}: {_value(value)}")
    return out


def _timing(value: Any) -> str:
    if isinstance(value, dict):  # PostgreSQL 17: Generation {Deform, Total}
        return f"{value.get('Total', 0):.3f} ms"
    return f"{value:.3f} ms" if isinstance(value, int | float) else str(value)


@dataclass(frozen=True)
class Plan:
    """One `EXPLAIN (FORMAT JSON)` result: `root` is the top plan node, `raw` the whole object
    (with `Planning Time`, `Execution Time`, `Triggers`, ...)."""

    raw: dict[str, Any]

    @classmethod
    def from_json(cls, value: Any) -> Plan:
        """From the single value EXPLAIN (FORMAT JSON) returns: JSON text, or the list holding
        one object that psycopg makes of it. Raises ValueError on anything else."""
        if isinstance(value, bytes | bytearray):
            value = value.decode()
        if isinstance(value, str):
            value = json.loads(value)
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError(f"expected one plan, got {len(value)}")
            value = value[0]
        if not isinstance(value, dict) or not isinstance(value.get("Plan"), dict):
            raise ValueError("not the output of EXPLAIN (FORMAT JSON)")
        return cls(value)

    @property
    def root(self) -> dict[str, Any]:
        return self.raw["Plan"]

    @property
    def analyzed(self) -> bool:
        """Did the query run (EXPLAIN ANALYZE)?"""
        return "Actual Loops" in self.root or "Execution Time" in self.raw

    @property
    def total_cost(self) -> float | None:
        cost = self.root.get("Total Cost")
        return float(cost) if cost is not None else None

    @property
    def estimated_rows(self) -> float | None:
        return self.root.get("Plan Rows")

    @property
    def actual_rows(self) -> float | None:
        return self.root.get("Actual Rows") if self.analyzed else None

    @property
    def execution_ms(self) -> float | None:
        return self.raw.get("Execution Time")

    @property
    def planning_ms(self) -> float | None:
        return self.raw.get("Planning Time")

    def nodes(self) -> Iterator[tuple[int, dict[str, Any]]]:
        return walk(self.root)

    def node_types(self) -> list[str]:
        """The distinct `Node Type`s, in plan order."""
        return list(dict.fromkeys(str(n.get("Node Type")) for _, n in self.nodes()))

    def seq_scans(self) -> list[dict[str, Any]]:
        """Every sequential scan, costliest first: relation, estimated rows and cost, and when
        the query ran the rows it returned and the rows it read (returned + filtered out, over
        all loops)."""
        out = []
        for _, node in self.nodes():
            if node.get("Node Type") != "Seq Scan":
                continue
            row: dict[str, Any] = {
                "relation": node.get("Relation Name"), "alias": node.get("Alias"),
                "estimated_rows": node.get("Plan Rows"), "total_cost": node.get("Total Cost"),
                "filter": node.get("Filter")}
            if self.analyzed:
                loops = node.get("Actual Loops") or 0
                row["actual_rows"] = node.get("Actual Rows")
                row["rows_read"] = round((node.get("Actual Rows") or 0) * loops
                                         + (node.get("Rows Removed by Filter") or 0) * loops)
            out.append(row)
        return sorted(out, key=lambda r: -(r["total_cost"] or 0))

    def underestimates(self, factor: float = UNDERESTIMATE_FACTOR) -> list[dict[str, Any]]:
        """Nodes that returned at least `factor` times the rows (per loop) the planner expected,
        worst first; empty unless the query ran. Those are the estimates that lead to bad plans
        (a nested loop over "a few" rows that are thousands). Rows below the estimate are not
        counted: under a LIMIT or an EXISTS a node is rightly stopped early."""
        if not self.analyzed:
            return []
        out = []
        for _, node in self.nodes():
            if not node.get("Actual Loops") or "Plan Rows" not in node:
                continue
            est, act = float(node["Plan Rows"]), float(node.get("Actual Rows") or 0)
            ratio = act / max(est, 1.0)
            if ratio >= factor:
                out.append({"node": label(node), "estimated_rows": node["Plan Rows"],
                            "actual_rows": node.get("Actual Rows"), "off_by": round(ratio, 1)})
        return sorted(out, key=lambda r: -r["off_by"])

    def lines(self) -> list[str]:
        """The plan as EXPLAIN's text format shows it."""
        out: list[str] = []
        _render(self.root, self.analyzed, 0, out)
        return out + _summary_lines(self.raw)

    def text(self) -> str:
        return "\n".join(self.lines())
