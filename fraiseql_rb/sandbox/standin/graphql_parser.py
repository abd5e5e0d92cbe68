"""A small GraphQL front end: enough of the language for the probes and queries runbooks
send. Executable documents only; fragments are refused with a validation error.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class GraphQLSyntaxError(Exception):
    """A document that does not parse; carries the 1-based location of the offending token."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.line, self.column = line, column


class GraphQLValidationError(Exception):
    """A well-formed document the schema cannot answer (unknown field, bad argument, ...)."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.line, self.column = line, column


@dataclass(frozen=True)
class Var:
    """A ``$variable`` reference inside an argument value."""

    name: str


@dataclass(frozen=True)
class EnumValue:
    """A bare enum literal (kept distinct from strings, as GraphQL does)."""

    value: str


@dataclass
class Field:
    """One selected field, its arguments, directives and sub-selection."""

    name: str
    alias: str | None
    args: dict[str, Any]
    directives: list[tuple[str, dict[str, Any]]]
    selections: list[Field] | None
    line: int
    column: int

    @property
    def key(self) -> str:
        return self.alias or self.name


@dataclass
class Operation:
    """An executable operation of a document."""

    kind: str
    name: str | None
    variables: dict[str, tuple[str, Any]]
    selections: list[Field]


_TOKEN_RE = re.compile(
    r"""
    (?P<skip>[\s,\ufeff]+|\#[^\n\r]*)
  | (?P<spread>\.\.\.)
  | (?P<punct>[!$&():=@\[\]{}|])
  | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
  | (?P<block>\"\"\"(?:\\\"\"\"|[^"]|"(?!""))*\"\"\")
  | (?P<string>"(?:[^"\\\n\r]|\\.)*")
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    value: str
    pos: int


class _Parser:
    """Recursive-descent parser for executable GraphQL documents (no fragments)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\n|\r", source)]
        self.tokens = list(self._tokenize())
        self.i = 0

    def _where(self, pos: int) -> tuple[int, int]:
        line = bisect_right(self._line_starts, pos)
        return line, pos - self._line_starts[line - 1] + 1

    def _error(self, message: str, pos: int) -> GraphQLSyntaxError:
        line, col = self._where(pos)
        return GraphQLSyntaxError(f"Syntax Error: {message}", line, col)

    def _tokenize(self) -> Iterator[_Token]:
        pos, n = 0, len(self.source)
        while pos < n:
            m = _TOKEN_RE.match(self.source, pos)
            if not m:
                raise self._error(f"Unexpected character {self.source[pos]!r}.", pos)
            kind = m.lastgroup or ""
            if kind != "skip":
                yield _Token(kind, m.group(), pos)
            pos = m.end()
        yield _Token("eof", "", n)

    def _peek(self) -> _Token:
        return self.tokens[self.i]

    def _next(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    @staticmethod
    def _describe(tok: _Token) -> str:
        return "<EOF>" if tok.kind == "eof" else f'"{tok.value}"'

    def _is(self, value: str) -> bool:
        tok = self._peek()
        return tok.kind in ("punct", "spread") and tok.value == value

    def _expect(self, value: str) -> _Token:
        tok = self._next()
        if tok.kind not in ("punct", "spread") or tok.value != value:
            raise self._error(f'Expected "{value}", found {self._describe(tok)}.', tok.pos)
        return tok

    def _name(self) -> _Token:
        tok = self._next()
        if tok.kind != "name":
            raise self._error(f"Expected Name, found {self._describe(tok)}.", tok.pos)
        return tok

    def parse(self) -> list[Operation]:
        ops: list[Operation] = []
        while self._peek().kind != "eof":
            tok = self._peek()
            if self._is("{"):
                ops.append(Operation("query", None, {}, self._selection_set()))
            elif tok.kind == "name" and tok.value in ("query", "mutation", "subscription"):
                ops.append(self._operation())
            elif tok.kind == "name" and tok.value == "fragment":
                line, col = self._where(tok.pos)
                raise GraphQLValidationError("Fragments are not supported by this server.",
                                             line, col)
            else:
                raise self._error(f"Unexpected {self._describe(tok)}.", tok.pos)
        if not ops:
            raise self._error("Unexpected <EOF>.", len(self.source))
        return ops

    def _operation(self) -> Operation:
        kind = self._next().value
        name = self._name().value if self._peek().kind == "name" else None
        variables: dict[str, tuple[str, Any]] = {}
        if self._is("("):
            self._next()
            while not self._is(")"):
                self._expect("$")
                var = self._name().value
                self._expect(":")
                type_ref = self._type_ref()
                default = None
                if self._is("="):
                    self._next()
                    default = self._value(const=True)
                self._directives()
                variables[var] = (type_ref, default)
            self._next()
        self._directives()
        return Operation(kind, name, variables, self._selection_set())

    def _type_ref(self) -> str:
        if self._is("["):
            self._next()
            inner = self._type_ref()
            self._expect("]")
            text = f"[{inner}]"
        else:
            text = self._name().value
        if self._is("!"):
            self._next()
            text += "!"
        return text

    def _selection_set(self) -> list[Field]:
        self._expect("{")
        fields: list[Field] = []
        while not self._is("}"):
            tok = self._peek()
            if tok.kind == "spread":
                line, col = self._where(tok.pos)
                raise GraphQLValidationError("Fragments are not supported by this server.",
                                             line, col)
            if tok.kind == "eof":
                raise self._error("Expected Name, found <EOF>.", tok.pos)
            fields.append(self._field())
        if not fields:
            raise self._error('Expected Name, found "}".', self._peek().pos)
        self._next()
        return fields

    def _field(self) -> Field:
        first = self._name()
        alias, name = None, first
        if self._is(":"):
            self._next()
            alias, name = first.value, self._name()
        args = self._arguments(const=False)
        directives = self._directives()
        selections = self._selection_set() if self._is("{") else None
        line, col = self._where(name.pos)
        return Field(name.value, alias, args, directives, selections, line, col)

    def _arguments(self, const: bool) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self._is("("):
            self._next()
            while not self._is(")"):
                key = self._name().value
                self._expect(":")
                args[key] = self._value(const)
            self._next()
        return args

    def _directives(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        while self._is("@"):
            self._next()
            out.append((self._name().value, self._arguments(const=False)))
        return out

    def _value(self, const: bool) -> Any:
        tok = self._next()
        if tok.kind == "punct" and tok.value == "$" and not const:
            return Var(self._name().value)
        if tok.kind == "punct" and tok.value == "[":
            items = []
            while not self._is("]"):
                items.append(self._value(const))
            self._next()
            return items
        if tok.kind == "punct" and tok.value == "{":
            obj = {}
            while not self._is("}"):
                key = self._name().value
                self._expect(":")
                obj[key] = self._value(const)
            self._next()
            return obj
        if tok.kind == "number":
            return float(tok.value) if any(c in tok.value for c in ".eE") else int(tok.value)
        if tok.kind == "string":
            try:
                return json.loads(tok.value)
            except ValueError:
                raise self._error("Invalid string literal.", tok.pos) from None
        if tok.kind == "block":
            return tok.value[3:-3].replace('\\"""', '"""').strip("\n")
        if tok.kind == "name":
            return {"true": True, "false": False, "null": None}.get(tok.value,
                                                                     EnumValue(tok.value))
        raise self._error(f"Unexpected {self._describe(tok)}.", tok.pos)


def parse_document(source: str) -> list[Operation]:
    """Parse a GraphQL document; raises GraphQLSyntaxError or GraphQLValidationError."""
    return _Parser(source).parse()
