"""Scan conditions written as expressions (rules.yaml ``kind: expr``), compiled to DuckDB SQL.

A trader writes ``rsi_14 < 30 and close > sma_200`` instead of asking for a new scan kind.
The text is parsed here by a small recursive-descent parser (never ``eval``), type-checked
(a condition where a condition is needed, a number where a number is), and compiled to SQL
over each (symbol, timeframe) series ordered by ``bar_index``. The SQL goes to dbt through
the ``scans`` var, so the signal still has one definition: ``macros/signals.sql``'s
``expr_scan`` runs it.

Language: numbers; the columns of ``intermediate.int_indicators`` in ``COLUMNS``; ``+ - * /``;
``< <= > >= == !=``; ``and or not``; parentheses; lookbacks ``x[k]`` (k bars back, ``[0]`` is
the current bar, a negative k would read the future and is refused); ``highest(x, n)``,
``lowest(x, n)``, ``sma(x, n)`` over the current and n-1 previous bars (NULL until n bars with
a value exist, so a short history never fires); ``abs(x)``; ``crosses_above(a, b)`` /
``crosses_below(a, b)`` = ``a[1] <= b[1] and a > b`` (mirrored).

Lookbacks are pushed down to the columns (``(a + b)[1]`` is ``a[1] + b[1]``, and
``highest(x, n)[1]`` is a window one bar further back), so most expressions need one window
level. A window over something that is itself windowed (``sma(close - close[1], 5)``) cannot
nest in SQL: its argument becomes a column of an earlier layer (``Compiled.layers``), a CTE
each, in order.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field

# intermediate.int_indicators columns an expression may read (dbt_project/models/intermediate/
# _intermediate.yml); all numeric except cpr_narrow, a condition
COLUMNS: dict[str, str] = {
    **{c: "num" for c in (
        "open", "high", "low", "close", "volume", "sma_20", "sma_50", "sma_200", "ema_12",
        "ema_26", "rsi_14", "macd", "macd_signal", "macd_hist", "bb_upper", "bb_middle",
        "bb_lower", "atr_14", "volume_avg_20", "cpr_pivot", "cpr_bc", "cpr_tc", "cpr_width_pct",
    )},
    "cpr_narrow": "bool",
}
# name -> (argument names, shown in arity errors)
FUNCTIONS: dict[str, tuple[str, ...]] = {
    "highest": ("x", "n"), "lowest": ("x", "n"), "sma": ("x", "n"), "abs": ("x",),
    "crosses_above": ("a", "b"), "crosses_below": ("a", "b"),
}
WINDOW_AGG = {"highest": "max", "lowest": "min", "sma": "avg"}
MAX_BARS = 5000  # longest window or lookback: the same bound as a scan's lookback param
SERIES = "partition by symbol, timeframe order by bar_index"
CMP_SQL = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "==": "=", "!=": "<>"}
KEYWORDS = {"and", "or", "not"}


class ExprError(ValueError):
    """An expression that cannot be used; ``col`` is the 1-based column the problem starts at."""

    def __init__(self, col: int, message: str):
        super().__init__(f"col {col}: {message}")
        self.col = col
        self.message = message


# --- tokens -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Token:
    kind: str  # num, name, op, end
    text: str
    col: int  # 1-based


_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op><=|>=|==|!=|[-+*/<>()\[\],=]))"
)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            tokens.append(Token("end", "", pos + 1))
            return tokens
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            ch = text[pos]
            hint = " (expressions have no strings)" if ch in "'\"" else ""
            raise ExprError(pos + 1, f"unexpected character {ch!r}{hint}")
        kind = m.lastgroup or "op"
        start = m.start(kind)
        if kind == "op" and m.group(kind) == "=":
            raise ExprError(start + 1, "'=' is not a comparison: write == (or != for not equal)")
        tokens.append(Token(kind, m.group(kind), start + 1))
        pos = m.end()


# --- syntax tree --------------------------------------------------------------------------

@dataclass
class Node:
    op: str  # num, col, neg, arith, cmp, and, or, not, call, shift
    col: int  # where the node's text starts (1-based)
    end: int  # one past where it ends (1-based, exclusive)
    args: list[Node] = field(default_factory=list)
    value: object = None  # number, column or function name, operator, lookback


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def _tok_end(self, t: Token) -> int:
        return t.col + len(t.text)

    def fail(self, expected: str) -> ExprError:
        t = self.tok
        got = "the end of the expression" if t.kind == "end" else repr(t.text)
        return ExprError(t.col, f"expected {expected}, got {got}")

    def expect(self, text: str, expected: str | None = None) -> Token:
        if self.tok.text != text or self.tok.kind == "num":
            raise self.fail(expected or repr(text))
        return self.take()

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise ExprError(1, "is empty: write a condition such as rsi_14 < 30")
        node = self.or_expr()
        if self.tok.kind != "end":
            raise self.fail("an operator (and, or, a comparison, + - * /) or the end")
        return node

    def _binary(self, ops: set[str], sub, op_kind: str | None = None) -> Node:
        left = sub()
        while self.tok.text in ops and self.tok.kind in ("op", "name"):
            op = self.take().text
            right = sub()
            kind = op_kind or op
            left = Node(kind, left.col, right.end, [left, right], op)
        return left

    def or_expr(self) -> Node:
        return self._binary({"or"}, self.and_expr)

    def and_expr(self) -> Node:
        return self._binary({"and"}, self.not_expr)

    def not_expr(self) -> Node:
        if self.tok.kind == "name" and self.tok.text == "not":
            t = self.take()
            x = self.not_expr()
            return Node("not", t.col, x.end, [x])
        return self.comparison()

    def comparison(self) -> Node:
        left = self.additive()
        if self.tok.text in CMP_SQL and self.tok.kind == "op":
            op = self.take().text
            right = self.additive()
            if self.tok.text in CMP_SQL and self.tok.kind == "op":
                raise ExprError(self.tok.col, "comparisons do not chain: write a < b and b < c")
            return Node("cmp", left.col, right.end, [left, right], op)
        return left

    def additive(self) -> Node:
        return self._binary({"+", "-"}, self.term, "arith")

    def term(self) -> Node:
        return self._binary({"*", "/"}, self.unary, "arith")

    def unary(self) -> Node:
        if self.tok.kind == "op" and self.tok.text in ("-", "+"):
            t = self.take()
            x = self.unary()
            return x if t.text == "+" else Node("neg", t.col, x.end, [x])
        return self.postfix()

    def postfix(self) -> Node:
        node = self.primary()
        while self.tok.kind == "op" and self.tok.text == "[":
            self.take()
            if self.tok.kind == "op" and self.tok.text == "-":
                raise ExprError(self.tok.col, "a negative lookback reads a future bar (look-ahead): "
                                              "use [0] for the current bar or [k] for k bars back")
            t = self.tok
            if t.kind != "num" or not t.text.isdigit():
                raise ExprError(t.col, f"a lookback is a whole number of bars >= 0, e.g. close[1]; "
                                       f"got {t.text or 'nothing'!r}")
            self.take()
            k = int(t.text)
            if k > MAX_BARS:
                raise ExprError(t.col, f"lookback {k} is longer than {MAX_BARS} bars")
            close = self.expect("]", "']' to close the lookback")
            node = Node("shift", node.col, self._tok_end(close), [node], k)
        return node

    def primary(self) -> Node:
        t = self.tok
        if t.kind == "num":
            self.take()
            if not math.isfinite(float(t.text)):
                raise ExprError(t.col, f"number {t.text} is too large")
            return Node("num", t.col, self._tok_end(t), value=float(t.text))
        if t.kind == "op" and t.text == "(":
            self.take()
            inner = self.or_expr()
            close = self.expect(")", f"')' to close the '(' at col {t.col}")
            return Node(inner.op, t.col, self._tok_end(close), inner.args, inner.value)
        if t.kind == "name" and t.text not in KEYWORDS:
            self.take()
            if self.tok.kind == "op" and self.tok.text == "(":
                return self.call(t)
            if t.text not in COLUMNS:
                raise ExprError(t.col, f"unknown column {t.text!r}{_suggest(t.text, COLUMNS)}")
            return Node("col", t.col, self._tok_end(t), value=t.text)
        raise self.fail("a number, a column, a function or '('")

    def call(self, name: Token) -> Node:
        if name.text not in FUNCTIONS:
            raise ExprError(name.col, f"unknown function {name.text!r}{_suggest(name.text, FUNCTIONS)} "
                                      f"(functions: {', '.join(FUNCTIONS)})")
        self.take()  # (
        args: list[Node] = []
        if not (self.tok.kind == "op" and self.tok.text == ")"):
            args.append(self.or_expr())
            while self.tok.kind == "op" and self.tok.text == ",":
                self.take()
                args.append(self.or_expr())
        close = self.expect(")", f"',' or ')' in {name.text}()")
        want = FUNCTIONS[name.text]
        if len(args) != len(want):
            raise ExprError(name.col, f"{name.text}() takes {len(want)} argument{'s' if len(want) > 1 else ''} "
                                      f"({', '.join(want)}), got {len(args)}")
        return Node("call", name.col, self._tok_end(close), args, name.text)


def _suggest(word: str, known) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse(text: str) -> Node:
    """The syntax tree of ``text``; ExprError (with its column) for anything malformed."""
    return _Parser(text).parse()


# --- types --------------------------------------------------------------------------------

def _snippet(text: str, node: Node) -> str:
    s = " ".join(text[node.col - 1:node.end - 1].split())
    return s if len(s) <= 40 else s[:37] + "..."


def check(text: str, node: Node) -> str:
    """'num' or 'bool' for ``node``; ExprError where a number and a condition are mixed up."""

    def want(n: Node, typ: str, role: str) -> None:
        got = check(text, n)
        if got != typ:
            what = "a number" if typ == "num" else "a condition (true/false)"
            is_ = "a condition" if got == "bool" else "a number"
            raise ExprError(n.col, f"{role} needs {what}, but {_snippet(text, n)!r} is {is_}")

    op = node.op
    if op == "num":
        return "num"
    if op == "col":
        return COLUMNS[str(node.value)]
    if op == "shift":
        return check(text, node.args[0])
    if op == "neg":
        want(node.args[0], "num", "'-'")
        return "num"
    if op == "arith":
        for a in node.args:
            want(a, "num", f"{node.value!r}")
        return "num"
    if op == "cmp":
        for a in node.args:
            want(a, "num", f"{node.value!r}")
        return "bool"
    if op in ("and", "or", "not"):
        for a in node.args:
            want(a, "bool", f"{op!r}")
        return "bool"
    name = str(node.value)
    if name in WINDOW_AGG:
        x, n = node.args
        want(x, "num", f"{name}()")
        if n.op != "num" or not float(n.value).is_integer() or not 1 <= float(n.value) <= MAX_BARS:  # type: ignore[arg-type]
            raise ExprError(n.col, f"{name}() window n must be a whole number of bars from 1 to {MAX_BARS}, "
                                   f"got {_snippet(text, n)!r}")
        return "num"
    for a in node.args:
        want(a, "num", f"{name}()")
    return "bool" if name.startswith("crosses_") else "num"


def lookback(node: Node) -> int:
    """How many bars before the current one ``node`` reads (the incremental context it needs)."""
    inner = max((lookback(a) for a in node.args), default=0)
    if node.op == "shift":
        return inner + int(node.value)  # type: ignore[call-overload]
    if node.op == "call" and node.value in WINDOW_AGG:
        return lookback(node.args[0]) + int(node.args[1].value) - 1  # type: ignore[arg-type]
    if node.op == "call" and str(node.value).startswith("crosses_"):
        return inner + 1
    return inner


# --- SQL ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Sql:
    text: str
    level: int = 0  # highest layer whose columns it reads (0: int_indicators)
    windowed: bool = False  # holds a window function: cannot go inside another one


@dataclass
class Compiled:
    """An expression scan ready for SQL: ``layers`` (lists of [column, sql], each a CTE over the
    previous one, starting from the int_indicators rows), then ``when_sql`` and ``score_sql``
    over the last; ``lookback`` bars of history before a bar are enough to evaluate it."""

    when_sql: str
    score_sql: str
    layers: list[list[list[str]]]
    lookback: int


class _Compiler:
    def __init__(self) -> None:
        self.columns: dict[str, tuple[str, int]] = {}  # sql -> (name, layer)

    def materialize(self, arg: _Sql) -> _Sql:
        layer = arg.level + 1
        if arg.text not in self.columns:
            self.columns[arg.text] = (f"expr_c{len(self.columns) + 1}", layer)
        return _Sql(self.columns[arg.text][0], layer)

    def layers(self) -> list[list[list[str]]]:
        depth = max((lv for _, lv in self.columns.values()), default=0)
        return [[[name, sql] for sql, (name, lv) in self.columns.items() if lv == d] for d in range(1, depth + 1)]

    def sql(self, node: Node, shift: int = 0) -> _Sql:
        op = node.op
        if op == "num":
            return _Sql(f"({node.value!r}::DOUBLE)")
        if op == "col":
            if shift == 0:
                return _Sql(str(node.value))
            return _Sql(f"lag({node.value}, {shift}) over ({SERIES})", windowed=True)
        if op == "shift":
            return self.sql(node.args[0], shift + int(node.value))  # type: ignore[call-overload]
        args = [self.sql(a, shift) for a in node.args] if not (op == "call" and node.value in WINDOW_AGG) else []
        level = max((a.level for a in args), default=0)
        windowed = any(a.windowed for a in args)
        if op == "neg":
            return _Sql(f"(- {args[0].text})", level, windowed)
        if op == "arith":
            return _Sql(f"({args[0].text} {node.value} {args[1].text})", level, windowed)
        if op == "cmp":
            return _Sql(f"({args[0].text} {CMP_SQL[str(node.value)]} {args[1].text})", level, windowed)
        if op in ("and", "or"):
            return _Sql(f"({args[0].text} {op} {args[1].text})", level, windowed)
        if op == "not":
            return _Sql(f"(not {args[0].text})", level, windowed)
        name = str(node.value)
        if name == "abs":
            return _Sql(f"abs({args[0].text})", level, windowed)
        if name.startswith("crosses_"):
            a1, b1 = (self.sql(a, shift + 1) for a in node.args)
            a0, b0 = args
            cmp = ">" if name == "crosses_above" else "<"
            back = "<=" if name == "crosses_above" else ">="
            return _Sql(f"(({a1.text} {back} {b1.text}) and ({a0.text} {cmp} {b0.text}))",
                        max(level, a1.level, b1.level), True)
        x = self.sql(node.args[0])
        if x.windowed:
            x = self.materialize(x)
        n = int(node.args[1].value)  # type: ignore[arg-type]
        frame = f"({SERIES} rows between {n - 1 + shift} preceding and {shift} preceding)"
        return _Sql(f"(case when count({x.text}) over {frame} = {n} "
                    f"then {WINDOW_AGG[name]}({x.text}) over {frame} end)", x.level, True)


def compile_scan(when: str, score: str | None = None) -> Compiled:
    """Parse, type-check and compile a scan's ``when`` (a condition) and ``score`` (a number,
    default 1). ExprError messages start with the field: ``when: col 9: unknown column 'rsi'``."""
    trees: dict[str, Node] = {}
    for fld, text, typ in (("when", when, "bool"), ("score", score, "num")):
        if text is None:
            continue
        try:
            tree = parse(text)
            got = check(text, tree)
            if got != typ:
                what = "a condition (true/false), e.g. rsi_14 < 30" if typ == "bool" else "a number, e.g. rsi_14 / 10"
                raise ExprError(tree.col, f"must be {what}, but {_snippet(text, tree)!r} is "
                                          f"{'a number' if got == 'num' else 'a condition'}")
        except ExprError as exc:
            raise FieldError(fld, exc) from None
        trees[fld] = tree
    comp = _Compiler()
    when_sql = comp.sql(trees["when"])
    score_sql = comp.sql(trees["score"]) if "score" in trees else _Sql("(1.0::DOUBLE)")
    return Compiled(
        when_sql=when_sql.text,
        score_sql=score_sql.text,
        layers=comp.layers(),
        lookback=max(lookback(t) for t in trees.values()),
    )


class FieldError(ExprError):
    """An ExprError in one field of a scan (``when`` or ``score``)."""

    def __init__(self, fld: str, exc: ExprError):
        ValueError.__init__(self, f"{fld}: col {exc.col}: {exc.message}")
        self.col = exc.col
        self.message = exc.message
        self.field = fld


def select_sql(compiled: Compiled, source: str) -> str:
    """A query over ``source`` (rows of int_indicators' shape) adding ``fired`` and ``score``:
    what ``expr_scan`` in macros/signals.sql builds, for running a compiled scan directly."""
    ctes = [f"expr_l0 as (select * from {source})"]
    for i, layer in enumerate(compiled.layers, start=1):
        cols = ", ".join(f"{sql} as {name}" for name, sql in layer)
        ctes.append(f"expr_l{i} as (select *, {cols} from expr_l{i - 1})")
    last = f"expr_l{len(compiled.layers)}"
    return (f"with {', '.join(ctes)} select *, {compiled.when_sql} as fired, "
            f"{compiled.score_sql} as score from {last}")
