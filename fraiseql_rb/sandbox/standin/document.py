"""Reading a GraphQL request document: graphql-core parses it, the stand-in's rules follow.

graphql-core (the Python port of graphql-js) does the lexing and parsing, so syntax is
GraphQL's own and syntax errors carry graphql-core's messages ("Syntax Error: Expected Name,
found <EOF>.") at the offending character. On top of that the stand-in keeps its own, smaller
rules:

- executable documents only: a type-system definition is answered as the syntax error a
  query-only parser gives (``Unexpected Name 'type'.``) at that definition;
- no empty selection sets (``{}``): the syntax error graphql-core 3.2 gives, also on 3.3,
  whose parser accepts them by default;
- no fragments: a fragment definition, spread or inline fragment is a validation error,
  "Fragments are not supported by this server.", at the first one in the document;
- one operation, chosen by ``operationName`` with graphql-js's messages.

Everything after parsing works on graphql-core's AST (``FieldNode`` and friends); the helpers
here read what the planner needs from it: response keys, argument values with variables
substituted, ``@skip``/``@include``, variable defaults and the query cost.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Self

from graphql import GraphQLSyntaxError, parse
from graphql.language import (
    BREAK,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    Node,
    OperationDefinitionNode,
    SelectionSetNode,
    ValueNode,
    Visitor,
    visit,
)
from graphql.pyutils import Undefined
from graphql.utilities import value_from_ast_untyped

__all__ = [
    "DocumentError",
    "FieldNode",
    "OperationDefinitionNode",
    "QuerySyntaxError",
    "QueryValidationError",
    "arguments",
    "fields_of",
    "location",
    "operation_cost",
    "parse_operation",
    "response_key",
    "skipped",
    "value",
    "with_variable_defaults",
]


_LINE_BREAK = re.compile(r"\r\n|[\n\r]")  # GraphQL's line terminators


class DocumentError(Exception):
    """A document the stand-in refuses, with the 1-based location GraphQL errors carry."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.line, self.column = line, column

    @classmethod
    def at(cls, message: str, node: Node) -> Self:
        """The error located at `node`'s first token, as GraphQL error locations are."""
        return cls(message, *location(node))


class QuerySyntaxError(DocumentError):
    """The document does not parse (a PARSE_ERROR); the message starts "Syntax Error: "."""


class QueryValidationError(DocumentError):
    """A well-formed document the stand-in cannot answer (unknown field, bad argument, ...)."""


def location(node: Node) -> tuple[int | None, int | None]:
    """1-based (line, column) of the node's first token; (None, None) when it has no location."""
    loc = node.loc
    if loc is None:
        return None, None
    return loc.start_token.line, loc.start_token.column


def parse_operation(query: str, operation_name: str | None) -> OperationDefinitionNode:
    """Parse `query` and return the operation to run.

    Raises QuerySyntaxError (a PARSE_ERROR) or QueryValidationError (a VALIDATION_ERROR).
    """
    try:
        document = parse(query)
    except GraphQLSyntaxError as exc:
        # The location comes from the offset: graphql-core 3.2's get_location misplaces an
        # error at the start of a line (it reports the end of the line before).
        position = exc.positions[0] if exc.positions else 0
        raise QuerySyntaxError(exc.message, *_line_column(query, position)) from None
    operations = _executable_operations(document)
    if operation_name:
        for op in operations:
            if op.name is not None and op.name.value == operation_name:
                return op
        raise QueryValidationError(f'Unknown operation named "{operation_name}".')
    if len(operations) > 1:
        raise QueryValidationError(
            "Must provide operation name if query contains multiple operations.")
    return operations[0]


def _executable_operations(document: DocumentNode) -> list[OperationDefinitionNode]:
    """The document's operations, after refusing what the stand-in does not serve.

    Definitions are checked in source order, so the first offending one is the one reported.
    """
    operations: list[OperationDefinitionNode] = []
    for definition in document.definitions:
        if isinstance(definition, FragmentDefinitionNode):
            raise _no_fragments(definition)
        if not isinstance(definition, OperationDefinitionNode):
            raise _unexpected_definition(definition)
        finder = _FirstUnsupported()
        visit(definition, finder)
        if isinstance(finder.found, SelectionSetNode):
            raise _empty_selection_set(finder.found)
        if finder.found is not None:
            raise _no_fragments(finder.found)
        operations.append(definition)
    return operations


def _no_fragments(node: Node) -> QueryValidationError:
    return QueryValidationError.at("Fragments are not supported by this server.", node)


def _unexpected_definition(definition: Node) -> QuerySyntaxError:
    """A type-system definition, refused as a parser of executable documents refuses it."""
    assert definition.loc is not None
    token = definition.loc.start_token
    return QuerySyntaxError(f"Syntax Error: Unexpected {token.kind.value} '{token.value}'.",
                            token.line, token.column)


def _empty_selection_set(node: SelectionSetNode) -> QuerySyntaxError:
    """``{}``: "Expected Name" at the closing brace, as a parser requiring a selection says."""
    assert node.loc is not None
    brace = node.loc.end_token
    return QuerySyntaxError("Syntax Error: Expected Name, found '}'.", brace.line, brace.column)


def _line_column(text: str, position: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset."""
    line, line_start = 1, 0
    for match in _LINE_BREAK.finditer(text, 0, position):
        line, line_start = line + 1, match.end()
    return line, position - line_start + 1


class _FirstUnsupported(Visitor):
    """Stops at the first empty selection set, fragment spread or inline fragment (a visit
    enters nodes in source order, so the first one found is the first in the document)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: Node | None = None

    def enter_selection_set(self, node: SelectionSetNode, *_: Any) -> Any:
        if node.selections:
            return None
        self.found = node
        return BREAK

    def enter_fragment_spread(self, node: FragmentSpreadNode, *_: Any) -> Any:
        self.found = node
        return BREAK

    def enter_inline_fragment(self, node: InlineFragmentNode, *_: Any) -> Any:
        self.found = node
        return BREAK


class _FieldCounter(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def enter_field(self, *_: Any) -> None:
        self.count += 1


def operation_cost(operation: OperationDefinitionNode) -> int:
    """The stand-in's cost estimate: one per selected field, at any depth, skipped or not.

    The real server weighs pagination too; this is what ``fraiseql_graphql_queries_cost_total``
    adds up.
    """
    counter = _FieldCounter()
    visit(operation.selection_set, counter)
    return counter.count


def fields_of(selection_set: SelectionSetNode | None) -> list[FieldNode] | None:
    """The fields of a selection set, None for a leaf (fragments were refused when parsing)."""
    if selection_set is None:
        return None
    return [s for s in selection_set.selections if isinstance(s, FieldNode)]


def response_key(field: FieldNode) -> str:
    """Where a field's value goes in ``data``: its alias, else its name."""
    return (field.alias or field.name).value


def value(node: ValueNode | None, variables: Mapping[str, Any] | None) -> Any:
    """A literal or ``$variable`` as a Python value; an unset variable reads as None."""
    if node is None:
        return None
    result = value_from_ast_untyped(node, dict(variables) if variables else None)
    return None if result is Undefined else result


def arguments(field: FieldNode, variables: Mapping[str, Any]) -> dict[str, Any]:
    """The field's arguments with variables substituted (a repeated argument: the last wins)."""
    return {arg.name.value: value(arg.value, variables) for arg in field.arguments or ()}


def skipped(field: FieldNode, variables: Mapping[str, Any]) -> bool:
    """``@skip(if: true)`` or ``@include(if: false)``, literal or from a variable."""
    for directive in field.directives or ():
        name = directive.name.value
        cond = next((value(a.value, variables) for a in reversed(directive.arguments or ())
                     if a.name.value == "if"), None)
        if (name == "skip" and cond is True) or (name == "include" and cond is False):
            return True
    return False


def with_variable_defaults(operation: OperationDefinitionNode,
                           provided: Mapping[str, Any]) -> dict[str, Any]:
    """The request's variables plus the operation's non-null defaults for those not given."""
    defaults = {d.variable.name.value: value(d.default_value, None)
                for d in operation.variable_definitions or ()}
    out = dict(provided)
    for name, default in defaults.items():
        if name not in out and default is not None:
            out[name] = default
    return out
