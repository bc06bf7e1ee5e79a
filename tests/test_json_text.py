"""`ledger.core.json_text` on its own, against references written here with the standard library:
a duplicated member name is found at any depth and named by its path, whatever the text around
it (colons and escapes inside strings, escaped names); the form of a text ignores whitespace,
member order and string escapes, and keeps every number's token."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.core.json_text import duplicate_name, text_form

# Names likely to collide, colons and escapes that a colon count could be fooled by.
NAMES = st.sampled_from(["a", "b", "a:", ":", "", "é", "\\", '"', "\u003a", "k\u00e9y", "amount"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from(["1.0", "1.00", "-0", "0", "1e5", "-0.0", "2.5E-3"]).map(lambda t: Number(t)),
    st.text(alphabet=st.sampled_from(["a", ":", '"', "\\", "é", "\u003a", " ", "\n"]), max_size=6),
)


class Number(str):
    """A number token written as is."""


class Members(list[tuple[str, Any]]):
    """An object as its members in order: a name may appear twice."""


def objects(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Members]:
    return st.lists(st.tuples(NAMES, children), max_size=4).map(Members)


VALUES = st.recursive(
    SCALARS, lambda children: st.lists(children, max_size=3) | objects(children), max_leaves=20
)


def write(value: Any, *, escape: bool, spaces: bool) -> str:
    """One JSON text of `value`; `escape` writes strings as ASCII escapes."""
    gap = " \n " if spaces else ""
    if isinstance(value, Number):
        return str(value)
    if isinstance(value, Members):
        inner = f",{gap}".join(
            f"{write(k, escape=escape, spaces=spaces)}{gap}:{gap}"
            f"{write(v, escape=escape, spaces=spaces)}"
            for k, v in value
        )
        return "{" + gap + inner + gap + "}"
    if isinstance(value, list):
        return "[" + f",{gap}".join(write(v, escape=escape, spaces=spaces) for v in value) + "]"
    if isinstance(value, str) and escape:
        chars = (f"\\u{ord(c):04x}" if c in ':é"\\' else json.dumps(c)[1:-1] for c in value)
        return '"' + "".join(chars) + '"'
    return json.dumps(value, ensure_ascii=False)


def first_duplicate(value: Any, path: tuple[str, ...] = ()) -> str | None:
    """The reference: the path of the first name seen twice in one object, in text order."""
    if isinstance(value, Members):
        seen: set[str] = set()
        for name, member in value:
            if name in seen:
                return ".".join((*path, name))
            seen.add(name)
            inner = first_duplicate(member, (*path, name))
            if inner is not None:
                return inner
    elif isinstance(value, list):
        for index, member in enumerate(value):
            inner = first_duplicate(member, (*path, str(index)))
            if inner is not None:
                return inner
    return None


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=VALUES, escape=st.booleans(), spaces=st.booleans())
def test_a_duplicate_is_found_at_any_depth_and_named_by_its_path(
    value: Any, escape: bool, spaces: bool
) -> None:
    text = write(value, escape=escape, spaces=spaces).encode()
    assert duplicate_name(text) == first_duplicate(value), text


@st.composite
def nested_with_one_duplicate(draw: st.DrawFn) -> tuple[Members, str]:
    """An object nested 1..9 deep (through objects and arrays) whose deepest object names one
    member twice; the expected path."""
    depth = draw(st.integers(1, 9))
    inner = Members([("x", 1), ("y", Number("1.0")), ("x", draw(SCALARS))])
    path = ["x"]
    for _ in range(depth):
        if draw(st.booleans()):
            position = draw(st.integers(0, 2))
            items: list[Any] = [0, 0, 0]
            items[position] = inner
            inner, path = Members([("list", items)]), ["list", str(position), *path]
        else:
            name = draw(NAMES)
            inner, path = Members([(name, inner), ("other:", "a:b")]), [name, *path]
    return inner, ".".join(path)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=nested_with_one_duplicate(), escape=st.booleans())
def test_a_duplicate_deep_inside_is_named(case: tuple[Members, str], escape: bool) -> None:
    value, path = case
    assert duplicate_name(write(value, escape=escape, spaces=False).encode()) == path


def test_escaped_names_and_colons_inside_strings_do_not_hide_a_duplicate() -> None:
    assert duplicate_name(b'{"amount":5,"amount":7}') == "amount"
    assert duplicate_name(b'{"a":1,"\\u0061":2}') == "a"
    # A colon written as an escape in one string, a duplicate elsewhere: equal colon counts.
    assert duplicate_name(b'{"m":{"k":"\\u003a","k":1},"x":"::"}') == "m.k"
    assert duplicate_name(b'{"a":"x:y","b":{"c":[1,{"d":":"}]}}') is None
    assert duplicate_name(b'{"transfers":[{"a":1},{"a":1,"b":2,"a":1}]}') == "transfers.1.a"
    assert duplicate_name(b"not json") is None
    assert duplicate_name(b'{"a":' * 5_000 + b"1" + b"}" * 5_000) is None  # too deep: no 500


def canonical_reference(text: str) -> Any:
    """Order-free, number-token-keeping reading of a text."""

    def pairs(items: list[tuple[str, Any]]) -> Any:
        return ("object", tuple(sorted(items, key=lambda kv: kv[0])))

    return json.loads(
        text,
        object_pairs_hook=pairs,
        parse_int=lambda t: ("number", t),
        parse_float=lambda t: ("number", t),
    )


def unique(value: Any) -> Any:
    """`value` without duplicated names (the form is asked of texts that passed that check)."""
    if isinstance(value, Members):
        seen: dict[str, Any] = {}
        for name, member in value:
            seen.setdefault(name, unique(member))
        return Members(list(seen.items()))
    if isinstance(value, list):
        return [unique(v) for v in value]
    return value


def shuffled(value: Any, data: st.DataObject) -> Any:
    if isinstance(value, Members):
        members = [(k, shuffled(v, data)) for k, v in value]
        return Members(data.draw(st.permutations(members)))
    if isinstance(value, list):
        return [shuffled(v, data) for v in value]
    return value


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=VALUES, other=VALUES, data=st.data())
def test_the_form_ignores_whitespace_order_and_escapes_and_keeps_number_tokens(
    raw: Any, other: Any, data: st.DataObject
) -> None:
    value, different = unique(raw), unique(other)
    text = write(value, escape=False, spaces=False)
    respelled = write(shuffled(value, data), escape=True, spaces=True)
    assert text_form(text.encode()) == text_form(respelled.encode())
    other_text = write(different, escape=data.draw(st.booleans()), spaces=False)
    same = canonical_reference(text) == canonical_reference(other_text)
    assert (text_form(text.encode()) == text_form(other_text.encode())) == same, (
        text,
        other_text,
    )


def test_numbers_keep_their_spelling_in_the_form() -> None:
    forms = {text_form(b'{"x":%s}' % n) for n in (b"1", b"1.0", b"1.00", b"1e0", b"-0", b"0")}
    assert len(forms) == 6
    assert text_form(b'{ "b":"\\u00e9", "a":[1.0, -0] }') == text_form(
        '{"a":[1.0,-0],"b":"é"}'.encode()
    )
