"""No SQL is built from values: every value goes to PostgreSQL as a `$n` parameter.

The test reads the source of every package and finds each call that runs SQL. A statement
that is not one string literal may be assembled only from module constants (column lists,
table names, `$n` placeholders); any other piece must be in `REVIEWED`, with the reason it
carries no value. A new f-string, `%` or `.format` in a statement fails here until someone
reads it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("runtime", "actors", "supervisors", "serve")

# asyncpg's statement-taking methods, and rayvisor's helpers that hand their statement on
RUNS_SQL = {
    "execute",
    "executemany",
    "fetch",
    "fetchrow",
    "fetchval",
    "prepare",
    "cursor",
    "copy_from_query",
    "fetch_page",
    "fetchrow_with_events",
    "_psql",
}
# names a statement may be built from: module constants, and the placeholder helpers
CONSTANT = re.compile(r"^_?[A-Z][A-Z0-9_]*$")
HELPERS = {"len", "range", "_placeholders"}

REVIEWED: dict[tuple[str, str], str] = {
    # fetch_page: callers' conditions are literals holding `{}` where `$n` goes; the
    # values themselves are appended to `args`
    ("runtime/store/_tx.py", "select"): "a literal SELECT from each caller",
    ("runtime/store/_tx.py", "' AND '.join(where)"): "conditions with `$n` placeholders",
    ("runtime/store/_tx.py", "sql"): "passed through from callers, which are checked here",
    ("runtime/store/agents.py", "' AND '.join(where)"): "literal conditions with `$n`",
    ("runtime/store/supervision.py", "' AND '.join(where)"): "literal conditions with `$n`",
    ("runtime/store/retention.py", "statement"): "a parameter of `run`, whose callers pass "
    "statements built from the _BY_TIME/_BY_KEY table constants",
    ("runtime/store/tasks.py", "', '.join(sets)"): "`column = $n`, the column checked "
    "against _UPDATABLE first",
    ("runtime/store/migrations.py", "migration.sql"): "a migration file shipped in the package",
    ("serve/app.py", "secrets_key"): "not SQL: a key in Ray's internal KV",
    ("runtime/worker_env.py", "os.environ.get(KEY_ENV)"): "not SQL: Ray's internal KV",
}


def _dynamic_parts(node: ast.expr) -> list[ast.expr]:
    """The pieces of a statement expression that are not string literals."""
    if isinstance(node, ast.Constant):
        return []
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
    if isinstance(node, ast.BinOp):
        return _dynamic_parts(node.left) + _dynamic_parts(node.right)
    if isinstance(node, ast.IfExp):
        return _dynamic_parts(node.body) + _dynamic_parts(node.orelse)
    return [node]


def _from_constants(part: ast.expr) -> bool:
    if isinstance(part, ast.Call) and getattr(part.func, "id", None) == "len":
        return True  # a number: `${len(args)}`
    bound = {
        target.id
        for comp in ast.walk(part)
        if isinstance(comp, ast.comprehension)
        for target in ast.walk(comp.target)
        if isinstance(target, ast.Name)
    }
    names = {n.id for n in ast.walk(part) if isinstance(n, ast.Name)} - bound
    return all(CONSTANT.match(name) or name in HELPERS for name in names)


def _statement(call: ast.Call) -> ast.expr | None:
    """The statement argument: the first, or the second for helpers taking `conn` first."""
    name = call.func.attr if isinstance(call.func, ast.Attribute) else call.func.id  # type: ignore[attr-defined]
    index = 1 if name in {"fetch_page", "fetchrow_with_events", "_psql"} else 0
    return call.args[index] if len(call.args) > index else None


def _assignments(function: ast.AST) -> dict[str, list[ast.expr]]:
    """What each local name of `function` is assigned (`=`, `+=`, annotated)."""
    values: dict[str, list[ast.expr]] = {}
    for node in ast.walk(function):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor)):
            targets = [node.target]  # `sql += ...`; `for table, keep in _TABLES.items()`
        else:
            continue
        value = node.iter if isinstance(node, (ast.For, ast.AsyncFor)) else node.value
        if value is None:  # `x: int` declares, assigns nothing
            continue
        for target in targets:
            if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):  # a, b = x, y
                for one, its in zip(target.elts, value.elts, strict=False):
                    if isinstance(one, ast.Name):
                        values.setdefault(one.id, []).append(its)
                continue
            for name in ast.walk(target):
                if isinstance(name, ast.Name):
                    values.setdefault(name.id, []).append(value)  # type: ignore[arg-type]
    return values


def _unsafe_parts(statement: ast.expr, local: dict[str, list[ast.expr]]) -> list[ast.expr]:
    """The pieces of `statement` not made of constants, following local string variables
    (`sql = f"..."; sql += f"..."`) to what they were assigned."""
    unsafe, seen = [], set()
    pending = _dynamic_parts(statement)
    while pending:
        part = pending.pop()
        if _from_constants(part):
            continue
        if isinstance(part, ast.Name) and part.id in local and part.id not in seen:
            seen.add(part.id)
            for value in local[part.id]:
                pending.extend(_dynamic_parts(value))
            continue
        unsafe.append(part)
    return unsafe


def dynamic_sql() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ast.parse(path.read_text(), str(path))
            local_of: dict[int, dict[str, list[ast.expr]]] = {}
            for function in ast.walk(module):  # outer first: an inner function's calls win
                if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    local = _assignments(function)
                    local_of.update({id(node): local for node in ast.walk(function)})
            for call in ast.walk(module):
                if not isinstance(call, ast.Call):
                    continue
                name = getattr(call.func, "attr", None) or getattr(call.func, "id", None)
                if name not in RUNS_SQL or (statement := _statement(call)) is None:
                    continue
                for part in _unsafe_parts(statement, local_of.get(id(call), {})):
                    found.add((str(path.relative_to(ROOT)), ast.unparse(part)))
    return found


def test_no_statement_is_built_from_values() -> None:
    unreviewed = sorted(dynamic_sql() - REVIEWED.keys())
    assert not unreviewed, (
        "SQL built from something other than constants; pass values as $n parameters, "
        f"or review the piece and add it to REVIEWED: {unreviewed}"
    )


def test_the_check_sees_a_value_in_an_f_string(tmp_path: Path) -> None:
    """The scanner itself: a value interpolated into a statement is caught."""
    source = (
        "async def bad(conn, name):\n"
        "    await conn.fetch(f\"SELECT * FROM t WHERE name = '{name}'\")\n"
        "    await conn.execute('DELETE FROM t WHERE id = %s' % name)\n"
        "    await conn.fetchval('SELECT {}'.format(name))\n"
        "    await conn.fetch(f'SELECT {C} FROM t WHERE a = $1', name)\n"
        "    sql = f'SELECT * FROM t WHERE a = {name}'\n"
        "    await conn.fetch(sql)\n"
    )
    function = ast.parse(source).body[0]
    calls = [c for c in ast.walk(function) if isinstance(c, ast.Call)]
    flagged = [
        ast.unparse(part)
        for call in calls
        if getattr(call.func, "attr", None) in RUNS_SQL
        for part in _unsafe_parts(call.args[0], _assignments(function))
    ]
    assert flagged == ["name", "name", "'SELECT {}'.format(name)", "name"]


def test_reviewed_pieces_still_exist() -> None:
    """A stale entry would let the same text back in unread somewhere else in the file."""
    assert not REVIEWED.keys() - dynamic_sql()
