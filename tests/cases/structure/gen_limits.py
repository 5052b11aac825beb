#!/usr/bin/env python3
"""Generates limits.json, limits_nodes.json and limits_lists.json (CLI.md §3 limits).

Expectations are derived from CLI.md §3: root group is depth 1, each nested group adds 1 (legacy:
the converted root OR is depth 1); nodes = every group and leaf of the (converted) tree; regex
pattern length is counted in bytes; time_value & co. at most 1,000,000; total_periods at most 1,000;
strings at most 64 KiB; list values at most 100,000 elements.
Run: python3 gen_limits.py (from this directory)."""
import json, os

HERE = os.path.dirname(os.path.abspath(__file__))
NOW = "2024-06-15T12:00:00Z"
LEAF = {"type": "person", "key": "a", "value": "1"}
PERSONS = [{"id": "yes", "distinct_ids": ["d_yes"], "properties": {"a": "1"}},
           {"id": "no", "distinct_ids": ["d_no"], "properties": {"a": "2"}}]


def case(name, why, cohorts, expect=None, error_kinds=None, persons=PERSONS, events=None):
    d = {"name": name, "why": why, "now": NOW, "cohorts": cohorts, "persons": persons}
    if events is not None:
        d["events"] = events
    if expect is not None:
        d["expect"] = expect
    if error_kinds is not None:
        d["error_kinds"] = error_kinds
    return d


def nest(depth, inner=LEAF):
    """depth groups, the innermost holding the leaf; the outermost (root) is depth 1."""
    node = {"type": "AND", "values": [inner]}
    for i in range(depth - 1):
        node = {"type": "OR" if i % 2 == 0 else "AND", "values": [node]}
    return node


def coh(id, root):
    return {"id": id, "filters": {"properties": root}}


def legacy_nested(groups_in_properties):
    """legacy cohort: root OR (depth 1) over one group whose properties is a chain of nested groups."""
    return {"id": 1, "groups": [{"properties": nest(groups_in_properties)}]}


EVENTS = [{"distinct_id": "d_yes", "event": "login", "timestamp": "2024-06-10T12:00:00Z"}]


def beh(**kw):
    d = {"type": "behavioral", "key": "login", "event_type": "events"}
    d.update(kw)
    return coh(1, {"type": "AND", "values": [d]})


limits = [
    case("nesting depth 32 is accepted", "CLI 3: depth limit 32, root is depth 1",
         [coh(1, nest(32))], expect={"1": ["yes"]}),
    case("nesting depth 33 is invalid_filter", "CLI 3: depth 33 > 32",
         [coh(1, nest(33))], error_kinds=["invalid_filter"]),
    case("legacy nesting depth 32 is accepted",
         "CLI 3: legacy converted root OR is depth 1; properties chain of 31 groups -> depth 32",
         [legacy_nested(31)], expect={"1": ["yes"]}),
    case("legacy nesting depth 33 is invalid_filter",
         "CLI 3: converted root OR depth 1 + 32 nested groups = 33",
         [legacy_nested(32)], error_kinds=["invalid_filter"]),
    case("depth limit is per cohort and reported per cohort",
         "CLI 3: limit is per cohort tree; cohort 2 at 33 fails, cohort 1 at 32 is fine",
         [coh(1, nest(32)), coh(2, nest(33)), coh(3, nest(40))], error_kinds=["invalid_filter", "invalid_filter"]),
    case("regex pattern of 10,000 bytes is accepted", "CLI 3: regex pattern length limit 10,000 bytes",
         [coh(1, {"type": "AND", "values": [{"type": "person", "key": "a", "value": "a" * 10000, "operator": "regex"}]}),
          coh(2, {"type": "AND", "values": [{"type": "person", "key": "a", "value": "é" * 5000, "operator": "regex"}]})],
         persons=[{"id": "long", "properties": {"a": "x" + "a" * 10000 + "y"}},
                  {"id": "short", "properties": {"a": "a" * 9999}},
                  {"id": "accent", "properties": {"a": "é" * 5000}}],
         expect={"1": ["long"], "2": ["accent"]}),
    case("regex pattern of 10,001 bytes is invalid_filter", "CLI 3: pattern longer than 10,000 bytes",
         [coh(1, {"type": "AND", "values": [{"type": "person", "key": "a", "value": "a" * 10001, "operator": "regex"}]})],
         error_kinds=["invalid_filter"]),
    case("regex length counts bytes, not characters",
         "CLI 3: 5,000 'é' plus 'a' is 5,001 characters but 10,001 bytes",
         [coh(1, {"type": "AND", "values": [{"type": "person", "key": "a", "value": "é" * 5000 + "a", "operator": "not_regex"}]})],
         error_kinds=["invalid_filter"]),
    case("time_value 1,000,000 is accepted", "CLI 3: time_value limit 1,000,000; C.2 bound before year 1 is -inf",
         [beh(value="performed_event", time_value=1000000, time_interval="day")],
         events=EVENTS, expect={"1": ["yes"]}),
    case("time_value 1,000,000 years is accepted", "CLI 3 limit; C.2: a bound before year 1 is -inf, never an error",
         [beh(value="performed_event", time_value=1000000, time_interval="year")],
         events=EVENTS, expect={"1": ["yes"]}),
    case("time_value 1,000,001 is invalid_filter", "CLI 3: time_value > 1,000,000",
         [beh(value="performed_event", time_value=1000001, time_interval="minute")],
         events=EVENTS, error_kinds=["invalid_filter"]),
    case("time_value \"1000001\" as a string is invalid_filter", "A.4 integer strings accepted; CLI 3 limit applies to the value",
         [beh(value="performed_event", time_value="1000001", time_interval="hour")],
         events=EVENTS, error_kinds=["invalid_filter"]),
    case("seq_time_value 1,000,001 is invalid_filter",
         "CLI 3: seq_time_value > 1,000,000 (seq 1,000,001 minutes is shorter than 1,000 years, so only the limit fails)",
         [beh(value="stopped_performing_event", time_value=1000, time_interval="year", seq_time_value=1000001, seq_time_interval="minute")],
         events=EVENTS, error_kinds=["invalid_filter"]),
    case("operator_value 1,000,001 is invalid_filter", "CLI 3: operator_value > 1,000,000",
         [beh(value="performed_event_multiple", time_value=30, time_interval="day", operator="lte", operator_value=1000001)],
         events=EVENTS, error_kinds=["invalid_filter"]),
    case("operator_value 1,000,000 is accepted", "CLI 3 limit; C.3.2 one event, lte 1,000,000",
         [beh(value="performed_event_multiple", time_value=30, time_interval="day", operator="lte", operator_value=1000000)],
         events=EVENTS, expect={"1": ["yes"]}),
    case("total_periods 1,000 is accepted", "CLI 3: total_periods limit 1,000; C.3.7 one satisfied period",
         [beh(value="performed_event_regularly", time_value=1, time_interval="day", operator="gte", operator_value=1,
              min_periods=1, total_periods=1000)],
         events=EVENTS, expect={"1": ["yes"]}),
    case("total_periods 1,001 is invalid_filter", "CLI 3: total_periods > 1,000",
         [beh(value="performed_event_regularly", time_value=1, time_interval="day", operator="gte", operator_value=1,
              min_periods=1, total_periods=1001)],
         events=EVENTS, error_kinds=["invalid_filter"]),
    case("string of 64 KiB is accepted", "CLI 3: any string in a filter at most 64 KiB (65,536 bytes)",
         [coh(1, {"type": "AND", "values": [{"type": "person", "key": "a", "value": "z" * 65536, "operator": "is_not"}]})],
         expect={"1": ["no", "yes"]}),
    case("string over 64 KiB is invalid_filter", "CLI 3: any string in a filter over 64 KiB",
         [coh(1, {"type": "AND", "values": [{"type": "person", "key": "k" * 65537, "value": "1"}]})],
         error_kinds=["invalid_filter"]),
]

nodes = [
    case("10,000 nodes are accepted", "CLI 3: node limit 10,000 = root + 9,999 leaves",
         [coh(1, {"type": "OR", "values": [LEAF] * 9999})], expect={"1": ["yes"]}),
    case("10,001 nodes are invalid_filter", "CLI 3: root + 10,000 leaves = 10,001 nodes",
         [coh(1, {"type": "OR", "values": [LEAF] * 10000})], error_kinds=["invalid_filter"]),
]

lists = [
    case("list value of 100,000 elements is accepted", "CLI 3: elements in a list value at most 100,000",
         [coh(1, {"type": "AND", "values": [{"type": "person", "key": "a", "value": [2] * 100000, "operator": "exact"}]})],
         expect={"1": ["no"]}),
    case("list value of 100,001 elements is invalid_filter", "CLI 3: more than 100,000 elements",
         [coh(1, {"type": "AND", "values": [{"type": "person", "key": "a", "value": [2] * 100001, "operator": "in"}]})],
         error_kinds=["invalid_filter"]),
]


def write(fname, cases):
    with open(os.path.join(HERE, fname), "w") as f:
        f.write("[\n" + ",\n".join(json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in cases) + "\n]\n")


write("limits.json", limits)
write("limits_nodes.json", nodes)
write("limits_lists.json", lists)
