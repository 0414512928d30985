"""Column expressions built mostly as SQL text in Python, so that few of them cross to the JVM one by one.

The generator's expressions are large (a random number is a hash, a weighted choice a CASE tree of them): built
with `pyspark.sql.functions`, every literal, operator and function is a py4j call, some 30,000 of them for one
`generate`, seconds before Spark runs anything. `Expr` mirrors the part of the Column API the generator uses and
renders Spark SQL for shallow expressions, parsed once each (`F.expr`); past MAX_DEPTH levels of nesting it
combines the parsed parts as Columns instead, because Spark's SQL parser caches a prediction state per nesting
context it meets: whole deep expressions as text cost more time and memory (hundreds of MB retained) to parse
than the calls they save. A part used twice is parsed once and shared, as a Column would be.

The text keeps each Column operation's meaning: doubles are `D` literals (a bare `1.0` would be a decimal),
integers int or bigint as `F.lit` types them, strings escaped, every operation parenthesised, functions by
their SQL names (`ln`, `power`, `map`, `named_struct`), which `F.call_function` resolves the same way.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

from pyspark.sql import Column
from pyspark.sql import functions as F

MAX_DEPTH = 10
_TYPES = {"long": "BIGINT", "int": "INT", "double": "DOUBLE", "string": "STRING", "boolean": "BOOLEAN"}
_OPERATORS: dict[str, Callable[[Column, Column], Column]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "%": operator.mod,
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "=": operator.eq,
    "!=": operator.ne, "AND": operator.and_, "OR": operator.or_,
    "&": Column.bitwiseAND, "^": Column.bitwiseXOR,
}  # fmt: skip


class Expr:
    """An expression as SQL text (`sql`, nested `depth` levels) or, past MAX_DEPTH, a Column built from such
    parts; Python operators and methods build larger ones, as on a Column."""

    __slots__ = ("sql", "depth", "_column")

    def __init__(self, sql: str | None, depth: int = 0, column: Column | None = None):
        self.sql, self.depth, self._column = sql, depth, column

    @property
    def column(self) -> Column:
        if self._column is None:
            self._column = F.expr(self.sql)
        return self._column

    def alias(self, name: str) -> Column:
        return self.column.alias(name)

    def __bool__(self):
        raise TypeError("an Expr has no truth value: use & | ~ and when(), as with a Column")

    def _op(self, op: str, other, reverse: bool = False) -> Expr:
        a, b = (_operand(other), self) if reverse else (self, _operand(other))
        return _build(lambda x, y: f"({x} {op} {y})", _OPERATORS[op], a, b)

    def __add__(self, o): return self._op("+", o)
    def __radd__(self, o): return self._op("+", o, True)
    def __sub__(self, o): return self._op("-", o)
    def __rsub__(self, o): return self._op("-", o, True)
    def __mul__(self, o): return self._op("*", o)
    def __rmul__(self, o): return self._op("*", o, True)
    def __truediv__(self, o): return self._op("/", o)
    def __rtruediv__(self, o): return self._op("/", o, True)
    def __mod__(self, o): return self._op("%", o)
    def __lt__(self, o): return self._op("<", o)
    def __le__(self, o): return self._op("<=", o)
    def __gt__(self, o): return self._op(">", o)
    def __ge__(self, o): return self._op(">=", o)
    def __eq__(self, o): return self._op("=", o)  # type: ignore[override]
    def __ne__(self, o): return self._op("!=", o)  # type: ignore[override]
    def __and__(self, o): return self._op("AND", o)
    def __or__(self, o): return self._op("OR", o)
    def __invert__(self): return _build(lambda x: f"(NOT {x})", operator.invert, self)
    def __neg__(self): return _build(lambda x: f"(- {x})", operator.neg, self)
    def __getitem__(self, key): return _build(lambda x, k: f"{x}[{k}]", operator.getitem, self, _operand(key))

    __hash__ = None  # type: ignore[assignment]  # == builds an expression

    def bitwiseAND(self, o): return self._op("&", o)
    def bitwiseXOR(self, o): return self._op("^", o)
    def isNull(self): return _build(lambda x: f"({x} IS NULL)", Column.isNull, self)
    def isNotNull(self): return _build(lambda x: f"({x} IS NOT NULL)", Column.isNotNull, self)

    def cast(self, to: str) -> Expr:
        return _build(lambda x: f"CAST({x} AS {_TYPES.get(to, to)})", lambda c: c.cast(to), self)

    def isin(self, *values) -> Expr:
        if len(values) == 1 and isinstance(values[0], (list, tuple, set)):
            values = tuple(values[0])
        if not values:
            raise ValueError("isin() of no values")
        listed = ", ".join(map(render, values))
        return _build(lambda x: f"({x} IN ({listed}))", lambda c: c.isin(*values), self)


def _build(text: Callable[..., str], build: Callable[..., Column], *operands: Expr) -> Expr:
    """`text` of the operands' SQL while it stays within MAX_DEPTH, else `build` of their Columns."""
    depth = 1 + max(o.depth for o in operands)
    if depth <= MAX_DEPTH and all(o.sql is not None for o in operands):
        return Expr(text(*[o.sql for o in operands]), depth)
    return Expr(None, column=build(*[o.column for o in operands]))


def _operand(value) -> Expr:
    """An operand: a Python value is a literal (a string too), as in Column operators and `F.when`."""
    return value if isinstance(value, Expr) else lit(value)


def render(value) -> str:
    """SQL for a Python literal, typed as `F.lit` types it (a negative number in parentheses)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        text = f"{value}" if -(2**31) <= value < 2**31 else f"{value}L"
        return f"({text})" if value < 0 else text
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"no SQL literal for {value!r}")
        return f"({value!r}D)" if value < 0 else f"{value!r}D"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if value is None:
        return "NULL"
    raise TypeError(f"no SQL literal for {type(value).__name__} {value!r}")


class _Leaf(Expr):
    """A literal or a column: its Column is `F.lit` / `F.col` of it, so that with MAX_DEPTH 0 no text is parsed."""

    __slots__ = ("make",)

    def __init__(self, sql: str, make: Callable[[], Column]):
        super().__init__(sql)
        self.make = make

    @property
    def column(self) -> Column:
        if self._column is None:
            self._column = self.make()
        return self._column


def lit(value) -> Expr:
    return _Leaf(render(value), lambda: F.lit(value))


def col(name: str) -> Expr:
    return _Leaf(".".join(f"`{part}`" for part in name.split(".")), lambda: F.col(name))


def _arg(value) -> Expr:
    """A function argument: a name is a column, as in `pyspark.sql.functions`."""
    return col(value) if isinstance(value, str) else _operand(value)


def _fn(name: str, *args) -> Expr:
    return _build(lambda *xs: f"{name}({', '.join(xs)})", lambda *cs: F.call_function(name, *cs), *map(_arg, args))


class _When(Expr):
    """CASE WHEN ... [ELSE ...] END, as `F.when(...).when(...).otherwise(...)`."""

    __slots__ = ("cases", "default")

    def __init__(self, cases: tuple[tuple[Expr, Expr], ...], default: Expr | None = None):
        self.cases, self.default = cases, default
        parts = [e for case in cases for e in case] + ([default] if default is not None else [])
        depth = 1 + max(p.depth for p in parts)
        sql = None
        if depth <= MAX_DEPTH and all(p.sql is not None for p in parts):
            sql = "CASE " + " ".join(f"WHEN {c.sql} THEN {v.sql}" for c, v in cases)
            sql += (f" ELSE {default.sql}" if default is not None else "") + " END"
        super().__init__(sql, depth)

    @property
    def column(self) -> Column:
        if self._column is None and self.sql is None:
            (c0, v0), *rest = self.cases
            out = F.when(c0.column, v0.column)
            for c, v in rest:
                out = out.when(c.column, v.column)
            self._column = out if self.default is None else out.otherwise(self.default.column)
        return super().column

    def when(self, condition, value) -> _When:
        return _When((*self.cases, (_operand(condition), _operand(value))))

    def otherwise(self, value) -> Expr:
        return _When(self.cases, _operand(value))


def when(condition, value) -> _When:
    return _When(((_operand(condition), _operand(value)),))


def xxhash64(*cols): return _fn("xxhash64", *cols)
def shiftrightunsigned(c, n: int): return _fn("shiftrightunsigned", c, lit(n))
def shiftright(c, n: int): return _fn("shiftright", c, lit(n))
def sqrt(c): return _fn("sqrt", c)
def log(c): return _fn("ln", c)  # F.log(x): the natural log
def cos(c): return _fn("cos", c)
def exp(c): return _fn("exp", c)
def floor(c): return _fn("floor", c)
def round(c): return _fn("round", c, lit(0))  # noqa: A001
def pow(a, b): return _fn("power", a, b)  # noqa: A001
def pmod(a, b): return _fn("pmod", a, b)
def least(*cols): return _fn("least", *cols)
def greatest(*cols): return _fn("greatest", *cols)
def coalesce(*cols): return _fn("coalesce", *cols)
def concat(*cols): return _fn("concat", *cols)
def array(*cols): return _fn("array", *cols)
def create_map(*cols): return _fn("map", *cols)
def element_at(c, index): return _fn("element_at", c, index)
def size(c): return _fn("size", c)
def hex(c): return _fn("hex", c)  # noqa: A001
def lower(c): return _fn("lower", c)
def lpad(c, n: int, pad: str): return _fn("lpad", c, lit(n), lit(pad))
def timestamp_micros(c): return _fn("timestamp_micros", c)
def unix_micros(c): return _fn("unix_micros", c)
def explode(c): return _fn("explode", c)


def struct(**fields) -> Expr:
    return _fn("named_struct", *[x for name, value in fields.items() for x in (lit(name), value)])


def filter(c, predicate: Callable[[Expr], Expr]) -> Expr:  # noqa: A001
    """`filter(array, x -> predicate(x))`, always as a Column (a lambda's variable is not SQL text here)."""
    return Expr(None, column=F.filter(_arg(c).column, lambda x: predicate(Expr(None, column=x)).column))


def with_columns(df, **cols):
    """`df` with columns added as one stage (Exprs or Columns): later stages refer to them by name, so each is
    computed once per row."""
    return df.select("*", *[column(value).alias(name) for name, value in cols.items()])


def column(value) -> Column:
    """A Column for an Expr (parsed once) or a Column."""
    return value.column if isinstance(value, Expr) else value
