"""Schemathesis hooks for Proctor's API document.

One thing only: how to generate values of `format: cron`, the one string the document
cannot state as a regular expression (a grammar of fields with ranges, steps, lists and
names). Everything else the fuzzer generates from the document alone.
"""

from hypothesis import strategies as st

import schemathesis

# (lowest, highest) of each field, seconds first.
FIELDS = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]


@st.composite
def field(draw, low, high):
    kind = draw(st.sampled_from(["any", "step", "value", "range", "list"]))
    if kind == "any":
        return "*"
    if kind == "step":
        return f"*/{draw(st.integers(1, high - low + 1))}"
    if kind == "value":
        return str(draw(st.integers(low, high)))
    if kind == "range":
        a = draw(st.integers(low, high))
        b = draw(st.integers(a, high))
        return f"{a}-{b}"
    values = draw(st.lists(st.integers(low, high), min_size=2, max_size=4, unique=True))
    return ",".join(str(v) for v in sorted(values))


@st.composite
def cron(draw):
    kind = draw(st.sampled_from(["six", "five", "descriptor", "every"]))
    if kind == "descriptor":
        return draw(st.sampled_from(["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"]))
    if kind == "every":
        hours, minutes, seconds = draw(st.tuples(st.integers(0, 48), st.integers(0, 59), st.integers(1, 59)))
        return "@every " + (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + f"{seconds}s"
    fields = FIELDS if kind == "six" else FIELDS[1:]
    return " ".join(draw(field(low, high)) for low, high in fields)


schemathesis.openapi.format("cron", cron())
