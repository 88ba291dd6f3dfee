"""The audience rule language: a tokenizer, a recursive-descent parser and a type checker that
compile a rule into a closure over a profile. No `eval`, no attribute access, no user-defined
anything: only the names and functions in `VARIABLES` and `FUNCTIONS`, with literal
arguments, checked when the rule file is loaded, so a bad rule never reaches the stream.

    rule       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := operand [("==" | "!=" | "<" | "<=" | ">" | ">=") operand]
    operand    := NUMBER | STRING | "true" | "false" | NAME | call | "(" or ")"
    call       := NAME "(" [arg ("," arg)*] ")"        arg := [NAME "="] (NUMBER | STRING)
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streams.profiles import Profile, SignalsConfig
from streams.rule_names import FUNCTIONS, REQUIRED, VARIABLES

MAX_RULE_CHARS = 2000
MAX_TOKENS = 400
MAX_DEPTH = 20
MAX_NUMBER = 1e12
MAX_STRING = 256

Compiled = Callable[[Profile, int], Any]  # (profile, now_ms) -> value


class RuleError(ValueError):
    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"position {position}: {message}")
        self.position = position
        self.reason = message


@dataclass(frozen=True)
class Token:
    kind: str  # num, str, name, op, punct, end
    text: str
    position: int  # 1-based column
    value: Any = None


_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<num>\d+(?:\.\d+)?(?![\w.]))
      | (?P<str>"[^"\\\x00-\x1f]*")
      | (?P<name>[a-z_][a-z0-9_]{0,63}(?![\w]))
      | (?P<op>==|!=|<=|>=|<|>)
      | (?P<punct>[(),=])""",
    re.VERBOSE,
)


def tokenize(text: str) -> list[Token]:
    if len(text) > MAX_RULE_CHARS:
        raise RuleError(f"rule longer than {MAX_RULE_CHARS} characters", 1)
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise RuleError(f"unexpected character {text[pos]!r}", pos + 1)
        kind, chunk = match.lastgroup or "", match.group()
        if kind != "space":
            value: Any = None
            if kind == "num":
                value = float(chunk)
                if len(chunk) > 20 or value > MAX_NUMBER:
                    raise RuleError(f"number {chunk} larger than {MAX_NUMBER:.0e}", pos + 1)
            elif kind == "str":
                value = chunk[1:-1]
                if len(value) > MAX_STRING:
                    raise RuleError(f"string longer than {MAX_STRING} characters", pos + 1)
            tokens.append(Token(kind, chunk, pos + 1, value))
            if len(tokens) > MAX_TOKENS:
                raise RuleError(f"rule has more than {MAX_TOKENS} tokens", pos + 1)
        pos = match.end()
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


_COMPARE = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_TYPE_NAMES = {float: "number", str: "string", bool: "boolean"}


class _Parser:
    def __init__(self, text: str, cfg: SignalsConfig) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0
        self.cfg = cfg

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self, kind: str, text: str | None = None) -> Token:
        tok = self.tok
        if tok.kind != kind or (text is not None and tok.text != text):
            wanted = repr(text) if text else kind
            got = repr(tok.text) if tok.kind != "end" else "end of rule"
            raise RuleError(f"expected {wanted}, found {got}", tok.position)
        self.i += 1
        return tok

    def at(self, kind: str, text: str) -> bool:
        return self.tok.kind == kind and self.tok.text == text

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise RuleError(f"nested deeper than {MAX_DEPTH}", self.tok.position)

    def rule(self) -> Compiled:
        fn = self.boolean()
        self.take("end")
        return fn

    def boolean(self) -> Compiled:
        return self.need_bool(self.operand_of(self.parse_or))

    def parse_or(self) -> tuple[Compiled, type]:
        parts = [self.operand_of(self.parse_and)]
        while self.at("name", "or"):
            self.i += 1
            parts.append(self.operand_of(self.parse_and))
        if len(parts) == 1:
            return parts[0][0], parts[0][1]
        fns = [self.need_bool(p) for p in parts]
        return (lambda p, now: any(f(p, now) for f in fns)), bool

    def parse_and(self) -> tuple[Compiled, type]:
        parts = [self.operand_of(self.parse_not)]
        while self.at("name", "and"):
            self.i += 1
            parts.append(self.operand_of(self.parse_not))
        if len(parts) == 1:
            return parts[0][0], parts[0][1]
        fns = [self.need_bool(p) for p in parts]
        return (lambda p, now: all(f(p, now) for f in fns)), bool

    def operand_of(self, parse: Callable[[], tuple[Compiled, type]]) -> tuple[Compiled, type, int]:
        position = self.tok.position
        fn, kind = parse()
        return fn, kind, position

    @staticmethod
    def need_bool(part: tuple[Compiled, type, int]) -> Compiled:
        fn, kind, position = part
        if kind is not bool:
            raise RuleError(f"expected a condition, found a {_TYPE_NAMES[kind]}", position)
        return fn

    def parse_not(self) -> tuple[Compiled, type]:
        if self.at("name", "not"):
            self.nest()
            self.i += 1
            inner = self.need_bool(self.operand_of(self.parse_not))
            self.depth -= 1
            return (lambda p, now: not inner(p, now)), bool
        return self.comparison()

    def comparison(self) -> tuple[Compiled, type]:
        left, lkind = self.operand()
        if self.tok.kind != "op":
            return left, lkind
        op = self.take("op")
        right, rkind = self.operand()
        if lkind is not rkind:
            raise RuleError(
                f"cannot compare a {_TYPE_NAMES[lkind]} with a {_TYPE_NAMES[rkind]}", op.position
            )
        if lkind is not float and op.text not in ("==", "!="):
            raise RuleError(f"{op.text!r} needs numbers", op.position)
        compare = _COMPARE[op.text]
        return (lambda p, now: compare(left(p, now), right(p, now))), bool

    def operand(self) -> tuple[Compiled, type]:
        tok = self.tok
        if tok.kind in ("num", "str"):
            self.i += 1
            value = tok.value
            return (lambda p, now: value), (float if tok.kind == "num" else str)
        if tok.kind == "punct" and tok.text == "(":
            self.nest()
            self.i += 1
            inner = self.parse_or()
            self.take("punct", ")")
            self.depth -= 1
            return inner
        if tok.kind != "name" or tok.text in ("and", "or", "not"):
            got = repr(tok.text) if tok.kind != "end" else "end of rule"
            raise RuleError(f"expected a value, found {got}", tok.position)
        self.i += 1
        if tok.text in ("true", "false"):
            const = tok.text == "true"
            return (lambda p, now: const), bool
        if self.at("punct", "("):
            return self.call(tok)
        if tok.text not in VARIABLES:
            raise RuleError(f"unknown name {tok.text!r}", tok.position)
        kind, get = VARIABLES[tok.text]
        cfg = self.cfg
        return (lambda p, now: get(p, now, cfg)), kind

    def call(self, name: Token) -> tuple[Compiled, type]:
        if name.text not in FUNCTIONS:
            raise RuleError(f"unknown function {name.text!r}", name.position)
        params, result, impl = FUNCTIONS[name.text]
        self.take("punct", "(")
        args: dict[str, Any] = {}
        order = list(params)
        while not self.at("punct", ")"):
            if args:
                self.take("punct", ",")
            key = None
            if self.tok.kind == "name" and self.tokens[self.i + 1].text == "=":
                key = self.take("name")
                self.take("punct", "=")
            value = self.tok
            if value.kind not in ("num", "str"):
                raise RuleError("function arguments must be numbers or strings", value.position)
            self.i += 1
            pname = key.text if key else (order[len(args)] if len(args) < len(order) else "")
            where = key.position if key else value.position
            if pname not in params:
                raise RuleError(
                    f"{name.text}() has no parameter {pname or '#' + str(len(args) + 1)}", where
                )
            if pname in args:
                raise RuleError(f"{name.text}(): {pname} given twice", where)
            want = params[pname][0]
            if (want is float) != (value.kind == "num"):
                raise RuleError(f"{name.text}(): {pname} must be a {_TYPE_NAMES[want]}", where)
            args[pname] = value.value
        self.take("punct", ")")
        for pname, (_, default) in params.items():
            if pname not in args:
                if default is REQUIRED:
                    raise RuleError(f"{name.text}() needs {pname}", name.position)
                args[pname] = default
        if "days" in args and not (
            1 <= args["days"] <= self.cfg.window_days and args["days"] == int(args["days"])
        ):
            raise RuleError(
                f"{name.text}(): days must be a whole number from 1 to {self.cfg.window_days}"
                " (TRACKPIPE_SIGNALS_WINDOW_DAYS)",
                name.position,
            )
        if "n" in args and not 1 <= args["n"] <= 100:
            raise RuleError(f"{name.text}(): n must be from 1 to 100", name.position)
        cfg = self.cfg
        return (lambda p, now: impl(p, now, cfg, args)), result


def compile_rule(text: str, cfg: SignalsConfig) -> Compiled:
    """A rule's text → a function (profile, now_ms) → bool; RuleError when it is invalid."""
    return _Parser(text, cfg).rule()
