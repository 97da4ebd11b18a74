"""Values that used to break a call or lose data (found by a hostile review; each test
failed before its fix): a call never fails because of what a row holds, and nothing is
silently changed."""

from __future__ import annotations

import json

import httpx

from rustvani_trio.tools._pg_values import MAX_JSON_DEPTH, load_json

from .helpers import Caller


def _row(out: object) -> dict[str, object]:
    raw = getattr(out, "raw", None)
    assert isinstance(raw, dict), getattr(out, "summary", out)
    return dict(zip([c["name"] for c in raw["columns"]], raw["rows"][0], strict=True))


def _sendable(out: object) -> None:
    """The summary goes to the model in an HTTP request, the raw result to a UI as UTF-8."""
    httpx.Request("POST", "http://127.0.0.1/v1", json={"content": getattr(out, "summary", "")})
    json.dumps(getattr(out, "raw", None), ensure_ascii=False, allow_nan=False).encode()


async def test_times_python_cannot_hold_come_out_as_postgres_text(reader: Caller) -> None:
    out = await reader(
        "pg_query",
        query="SELECT '24:00:00'::time AS t, '24:00:00+02'::timetz AS tz, "
        "ARRAY['24:00'::time, '13:00'] AS ta, '13:14:15.5'::time AS ok",
    )
    assert _row(out) == {
        "t": "24:00:00",
        "tz": "24:00:00+02",
        "ta": ["24:00:00", "13:00:00"],
        "ok": "13:14:15.500000",
    }


async def test_json_numbers_a_double_cannot_hold_stay_exact(reader: Caller) -> None:
    out = await reader(
        "pg_query",
        query="""SELECT '[1e400, 0.1, 2.50, 12345678901234567.89, -0.0, 7]'::json AS j,
                 '{"p": 1.000000000000000000001}'::jsonb AS jb,
                 ('[1' || repeat('0', 5000) || ']')::jsonb AS huge""",
    )
    row = _row(out)
    assert row["j"] == ["1e400", 0.1, 2.5, "12345678901234567.89", -0.0, 7]
    assert row["jb"] == {"p": "1.000000000000000000001"}
    assert row["huge"] == ["1" + "0" * 5000]
    _sendable(out)


async def test_json_a_request_could_not_carry_comes_out_as_its_text(reader: Caller) -> None:
    """A lone surrogate (valid in ``json``) broke the next LLM request (no UTF-8 encoder
    takes it); JSON nested 800 deep raised RecursionError out of the call."""
    deep = "[" * 800 + "]" * 800
    out = await reader(
        "pg_query",
        query=f"""SELECT '{{"a": "\\ud800 ok"}}'::json AS lone, '{deep}'::jsonb AS deep,
                  '{{"b": "\\ud83d\\ude00"}}'::json AS pair""",
    )
    row = _row(out)
    assert row["lone"] == '{"a": "\\ud800 ok"}'  # the JSON text, exact and encodable
    assert row["deep"] == deep  # as text
    assert row["pair"] == {"b": "😀"}  # a proper pair is a character like any other
    _sendable(out)
    assert load_json("[" * (MAX_JSON_DEPTH + 2) + "]" * (MAX_JSON_DEPTH + 2)).startswith("[[")
    nested = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert isinstance(load_json(nested), list)


async def test_refine_compares_fixed_length_types_at_their_length(reader: Caller) -> None:
    """``char(4)`` and ``bit(3)`` values were cast to ``character`` / ``bit``, which mean
    char(1) / bit(1): 'ab' became 'a' and B'101' became B'1', and the filter matched
    nothing, silently."""
    base = await reader(
        "pg_query",
        query="SELECT * FROM (VALUES ('ab'::char(4), B'101'::bit(3), ARRAY['xy'::char(3)]), "
        "('cd', B'011', ARRAY['zz'::char(3)])) AS v(c, b, ca)",
    )
    rs = base.summary.split(":")[0].split()[-1]
    for column, value in (("c", "ab"), ("b", "101"), ("ca", ["xy"])):
        op = "contains" if column == "ca" else "="
        out = await reader(
            "pg_refine", result_set_id=rs, filters=[{"column": column, "op": op, "value": value}]
        )
        assert len(out.raw["rows"]) == 1, (column, out.summary)  # type: ignore[index]
    listed = await reader(
        "pg_refine", result_set_id=rs, filters=[{"column": "c", "op": "in", "value": ["ab"]}]
    )
    assert len(listed.raw["rows"]) == 1, listed.summary  # type: ignore[index]
