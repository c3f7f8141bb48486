"""A tiny ClassAd expression evaluator (enough for submit files and constraints)."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any


class _Undefined:
    def __repr__(self) -> str:
        return "undefined"


UNDEFINED: Any = _Undefined()

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<num>\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+|\d+(?:[eE][-+]?\d+)?)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<id>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<op>=\?=|=!=|==|!=|<=|>=|&&|\|\||[-+*/%<>!()?:,])
)""",
    re.VERBOSE,
)


class ClassAdError(ValueError):
    """Raised for expressions the evaluator cannot parse."""


def tokenize(text: str) -> list[tuple[str, str]]:
    """Split a ClassAd expression into (kind, text) tokens."""
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ClassAdError(f"cannot parse expression near {text[pos:]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def _num(v: Any) -> Any:
    return (
        v
        if isinstance(v, (int, float)) and not isinstance(v, bool)
        else (int(v) if isinstance(v, bool) else UNDEFINED)
    )


_FUNCS: dict[str, Callable[..., Any]] = {
    "floor": lambda x: UNDEFINED if _num(x) is UNDEFINED else int(math.floor(x)),
    "ceiling": lambda x: UNDEFINED if _num(x) is UNDEFINED else int(math.ceil(x)),
    "ceil": lambda x: UNDEFINED if _num(x) is UNDEFINED else int(math.ceil(x)),
    "round": lambda x: UNDEFINED if _num(x) is UNDEFINED else int(round(x)),
    "int": lambda x: (
        UNDEFINED if _num(x) is UNDEFINED and not isinstance(x, str) else int(float(x))
    ),
    "real": lambda x: UNDEFINED if _num(x) is UNDEFINED and not isinstance(x, str) else float(x),
    "string": lambda x: x if isinstance(x, str) else str(x),
    "ifthenelse": lambda c, a, b: a if c is True or (c not in (False, UNDEFINED) and c) else b,
    "isundefined": lambda x: x is UNDEFINED,
    "time": lambda: int(time.time()),
    "min": lambda *a: min(a),
    "max": lambda *a: max(a),
    "quantize": lambda a, b: int(math.ceil(a / b) * b),
    "strcat": lambda *a: "".join(str(x) for x in a),
    "toupper": lambda s: str(s).upper(),
    "tolower": lambda s: str(s).lower(),
    "size": lambda s: len(s),
}


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], lookup: Callable[[str], Any]) -> None:
        self.toks = tokens
        self.i = 0
        self.lookup = lookup

    def peek(self) -> str | None:
        return self.toks[self.i][1] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        if self.i >= len(self.toks):
            raise ClassAdError("unexpected end of expression")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expr(self) -> Any:
        cond = self.binary(0)
        if self.peek() == "?":
            self.take()
            a = self.expr()
            if self.take()[1] != ":":
                raise ClassAdError("expected ':'")
            b = self.expr()
            return a if cond is True else b
        return cond

    LEVELS = (
        ("||",),
        ("&&",),
        ("==", "!=", "=?=", "=!="),
        ("<", ">", "<=", ">="),
        ("+", "-"),
        ("*", "/", "%"),
    )

    def binary(self, level: int) -> Any:
        if level == len(self.LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek() in self.LEVELS[level]:
            op = self.take()[1]
            right = self.binary(level + 1)
            left = _apply(op, left, right)
        return left

    def unary(self) -> Any:
        tok = self.peek()
        if tok in ("!", "-", "+"):
            self.take()
            v = self.unary()
            if tok == "!":
                return UNDEFINED if v is UNDEFINED else not v
            if _num(v) is UNDEFINED:
                return UNDEFINED
            return -v if tok == "-" else v
        return self.primary()

    def primary(self) -> Any:
        kind, text = self.take()
        if kind == "num":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "str":
            return json.loads(text)
        if text == "(":
            v = self.expr()
            if self.take()[1] != ")":
                raise ClassAdError("expected ')'")
            return v
        if kind == "id":
            low = text.lower()
            if self.peek() == "(":
                self.take()
                args = []
                while self.peek() != ")":
                    args.append(self.expr())
                    if self.peek() == ",":
                        self.take()
                self.take()
                fn = _FUNCS.get(low)
                if fn is None:
                    raise ClassAdError(f"unknown function {text}")
                try:
                    return fn(*args)
                except (TypeError, ValueError, ZeroDivisionError):
                    return UNDEFINED
            if low in ("true", "false"):
                return low == "true"
            if low in ("undefined", "error"):
                return UNDEFINED
            return self.lookup(re.sub(r"^(my|target)\.", "", text, flags=re.I))
        raise ClassAdError(f"unexpected {text!r}")


def _apply(op: str, a: Any, b: Any) -> Any:
    if op == "=?=":
        return type(a) is type(b) and a == b
    if op == "=!=":
        return not (type(a) is type(b) and a == b)
    if op == "||":
        return (
            True if a is True or b is True else (UNDEFINED if UNDEFINED in (a, b) else bool(a or b))
        )
    if op == "&&":
        return (
            False
            if a is False or b is False
            else (UNDEFINED if UNDEFINED in (a, b) else bool(a and b))
        )
    if a is UNDEFINED or b is UNDEFINED:
        return UNDEFINED
    if isinstance(a, str) and isinstance(b, str) and op in ("==", "!="):
        return (a.lower() == b.lower()) == (op == "==")
    try:
        if op == "==":
            return a == b
        if op == "!=":
            return a != b
        if op == "<":
            return a < b
        if op == ">":
            return a > b
        if op == "<=":
            return a <= b
        if op == ">=":
            return a >= b
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return a // b if isinstance(a, int) and isinstance(b, int) else a / b
        if op == "%":
            return a % b
    except (TypeError, ZeroDivisionError):
        return UNDEFINED
    raise ClassAdError(op)


def evaluate(expression: str, ad: Mapping[str, Any], _depth: int = 0) -> Any:
    """Evaluate ``expression`` against ``ad`` (attribute names are case-insensitive).

    Values of ``ad`` that are :class:`Expr` are evaluated recursively.
    """
    lowered = {k.lower(): v for k, v in ad.items()}

    def lookup(name: str) -> Any:
        value = lowered.get(name.lower(), UNDEFINED)
        if isinstance(value, Expr):
            if _depth > 20:
                return UNDEFINED
            return evaluate(value.text, ad, _depth + 1)
        return value

    parser = _Parser(tokenize(expression), lookup)
    value = parser.expr()
    if parser.i != len(parser.toks):
        raise ClassAdError(f"trailing input in {expression!r}")
    return value


class Expr:
    """An unevaluated ClassAd expression stored in an ad."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def literal(text: str) -> Any:
    """Python value of a literal ClassAd expression, else an :class:`Expr`."""
    text = text.strip()
    try:
        toks = tokenize(text)
    except ClassAdError:
        return Expr(text)
    if (
        len(toks) == 1
        and toks[0][0] in ("num", "str")
        or (len(toks) == 2 and toks[0][1] == "-" and toks[1][0] == "num")
    ):
        return evaluate(text, {})
    if len(toks) == 1 and toks[0][1].lower() in ("true", "false"):
        return toks[0][1].lower() == "true"
    return Expr(text)


def unparse(value: Any) -> str:
    """ClassAd (``-long``) text of a value."""
    if value is UNDEFINED or value is None:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Expr):
        return value.text
    return str(value)


def autoformat(value: Any) -> str:
    """``-af`` text of a value (strings unquoted)."""
    if isinstance(value, str):
        return value
    return unparse(value)


def to_json(value: Any) -> Any:
    """``-json`` value (expressions become ``\\/Expr(...)\\/`` strings)."""
    if value is UNDEFINED or value is None:
        return None
    if isinstance(value, Expr):
        return f"/Expr({value.text})/"
    return value
