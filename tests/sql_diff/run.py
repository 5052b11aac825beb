#!/usr/bin/env python3
"""Differential test of the ClickHouse SQL back end against the in-memory engine.

For every dataset — random ones made here, the data-driven cases of tests/cases/**/*.json that
expect members (not errors), and examples/data — it:
  1. asks the real CLI for the members (`cohort-engine eval … --quiet`);
  2. asks `examples/sql_dump.rs` for each cohort's SQL (`cohort_sql`) and for the dataset as rows
     of the SQL schema (timestamps parsed by the engine, static members resolved to person ids);
  3. loads the rows into chdb (embedded ClickHouse) and runs every SQL;
  4. compares member sets. Cohorts the generator refuses are skipped and counted.

Usage: tests/sql_diff/run.py [--datasets N] [--seed S] [--keep DIR] [--only NAME]
Creates tests/sql_diff/.venv with chdb on first use (idempotent). Exit status 1 on any mismatch.
"""

import argparse
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
VENV = os.path.join(HERE, ".venv")
VPY = os.path.join(VENV, "bin", "python")


def ensure_venv():
    """Re-executes under tests/sql_diff/.venv, creating it and installing chdb when needed."""
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        try:
            import chdb  # noqa: F401
            return
        except ImportError:
            subprocess.check_call([VPY, "-m", "pip", "install", "-q", "chdb"])
            os.execv(VPY, [VPY] + sys.argv)
    if not os.path.exists(VPY):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    ok = subprocess.run([VPY, "-c", "import chdb"], capture_output=True).returncode == 0
    if not ok:
        subprocess.check_call([VPY, "-m", "pip", "install", "-q", "chdb"])
    os.execv(VPY, [VPY, os.path.abspath(__file__)] + sys.argv[1:])


# ------------------------------------------------------------------------------------------------
# Random datasets

NOW = "2024-03-31T12:00:00Z"  # end of month: calendar windows clamp
NOW_S = 1711886400
DAY = 86400

STRINGS = ["pro", "Pro", "PRO", "enterprise", "free", "", "Ünïcödé", "ünïcödé", "ΟΔΥΣΣΕΥΣ",
           "οδυσσευς", "İstanbul", "i̇stanbul", "\u212aelvin", "kelvin", "a@example.com",
           "b@EXAMPLE.com", "yes", "true", "True", "FALSE", "false", "x'y\"z\\w", "line\nbreak",
           "tab\tx", "nul\u0000x", "'); DROP TABLE persons; --", "٣٤", "12", " 5", "١٢٣", "a b",
           "a\u00a0b", "é", "É", "ß", "ẞ", "Σ", "ΑΣ"]
NUMBERS = [0, 1, 5, -3, 42, 100, 18446744073709551615, -9223372036854775808, 5.0, 1e3, 1e20,
           1.5e16, 1e16, 1e15, 1e-5, 1e-6, 1.5e-7, 0.1, 123.456, -2.5, 30.0, 9007199254740993,
           1e300, 2.5e-300, 0.30000000000000004]
NUMERIC_STRINGS = ["42", "1e3", "+5", ".5", "5.", "-1.5", "007", "1e400", "inf", "NaN", "0x10",
                   "5 ", "1_000", "30", "29.999", "1E2", "-0", "1e-400", "99999999999999999999"]
DATES = ["2024-03-01", "2024-03-31T12:00:00Z", "2024-03-31T11:59:59.999999Z",
         "2024-03-31 12:00", "2024-02-29T12:00:00+02:00", "2024-02-30", "2024-03-31T12:00:60Z",
         "2023-12-31t23:59:59.123456789z", "2024-03-30T12:00:00-05:30", "2024-03-31T12:00:00+0200",
         "1711886400", "1711886400.5", "2024", "0001-01-01", "9999-12-31T23:59:59Z", "March 3",
         "2024-03-24T12:00:00Z", "2024-02-29T12:00:00Z", "2024-03-31T12:00:00.000001Z"]
DATE_NUMS = [1711886400, 1711886399.9999995, 1711281600, 1709208000.25, -62135596800, 253402300800]
VERSIONS = ["1.2.3", "v1.2.3", "V2.0", "1.2.3-beta", "1.2.3+build", "01.2.3", "1.2.3.4", " 1.2 ",
            "1", "0.0.1", "0.1.5", "2.10.0", "18446744073709551616.0.0", "1.2-rc1", "v", "1..2",
            "\u00a01.4.0\u3000", "10.0.0"]
KEYS = ["plan", "email", "age", "score", "signed_up", "app_version", "flag", "name", "weird key'\"\\",
        "nested", "ltv"]
EVENTS = ["login", "purchase", "$pageview", "signup", "drop'); --"]


def rand_value(r):
    k = r.random()
    if k < 0.28:
        return r.choice(STRINGS)
    if k < 0.48:
        return r.choice(NUMBERS)
    if k < 0.58:
        return r.choice(NUMERIC_STRINGS)
    if k < 0.70:
        return r.choice(DATES) if r.random() < 0.7 else r.choice(DATE_NUMS)
    if k < 0.80:
        return r.choice(VERSIONS)
    if k < 0.88:
        return r.choice([True, False])
    if k < 0.94:
        return None
    # Containers: sorted keys, no floats (see the module docs of src/sql for why).
    return r.choice([["a", 1], {"a": 1, "b": "x"}, [], {}, ["pro"], [True, None]])


def rand_props(r, keys, n):
    return {k: rand_value(r) for k in r.sample(keys, r.randint(0, n))}


def person_value(r, key):
    """Values skewed towards what the leaf's key usually holds."""
    pools = {"plan": STRINGS[:6], "email": STRINGS[14:16], "age": NUMBERS + NUMERIC_STRINGS,
             "score": NUMBERS, "signed_up": DATES + DATE_NUMS, "app_version": VERSIONS,
             "flag": [True, False, "true", "False", "yes", 1]}
    if key in pools and r.random() < 0.7:
        return r.choice(pools[key])
    return rand_value(r)


def rand_filter_value(r, op):
    if op in ("exact", "is_not", "in", "not_in"):
        k = r.random()
        if k < 0.2:
            return r.choice([True, False, "true", "FALSE", [True]])
        if k < 0.5:
            return r.sample(STRINGS + [5, 5.0, 1e3, 42, "42", 1e20, 0.1, 1.5e-7], r.randint(1, 3))
        if k < 0.6:
            return []
        return r.choice(STRINGS + NUMBERS[:12] + NUMERIC_STRINGS[:6])
    if op in ("icontains", "not_icontains", "icontains_multi", "not_icontains_multi"):
        v = r.choice(["pro", "PRO", "ü", "İ", "i̇", "σ", "ς", "e+", ".0", "00", "1e", "'", "\\", "", "x'y",
                      "\u212a", "k", "true", "5.0", "e-7", "[", "a\u0000"])
        return [v, r.choice(STRINGS)] if r.random() < 0.3 else v
    if op in ("regex", "not_regex"):
        return r.choice(["^pro", "o$", "[0-9]+", "\\d", "^\\d+$", "\\s", "\\S", "(?i)ÜNÏ", "é|É", ".*",
                         "^.$", "e\\+", "\\.0$", "^-?\\d+(\\.\\d+)?$", "[[:alpha:]]+", "\\pL",
                         "[^\\s]", "a{2,3}", "(?i)k", "\\w+", "\\bpro", "(?x) p r o", "'|\\\\",
                         "(?P<x>pro)", "(?s)line.break", "(?m)^break$"])
    if op in ("gt", "gte", "lt", "lte", "min", "max"):
        return r.choice([0, 5, 30, 42.5, "30", "1e3", -2.5, 1e20, 1e-6])
    if op in ("between", "not_between"):
        a, b = sorted(r.sample([0, 5, 30, 42, 100, 1e20, -3, 0.1], 2))
        return [a, b]
    if op.startswith("is_date"):
        return r.choice(["-7d", "-1m", "-2m", "1y", "-24h", "-1w", "2024-03-01", "2024-03-31T12:00:00Z",
                         "2024-03-31 11:00", "2024-02-29T12:00:00+02:00", "-9999y", "0001-01-01"])
    if op in ("semver_tilde",):
        return r.choice(["~1.2.3", "1.2", "~0.1", "1"])
    if op in ("semver_caret",):
        return r.choice(["^1.2.3", "^0.1.5", "0.0.1", "^2"])
    if op in ("semver_wildcard",):
        return r.choice(["1.*", "1.2.*", "2.*.*", "1.2.3"])
    if op.startswith("semver"):
        return r.choice(["1.2.3", "2.0", "0.1.5", "1", "v1.2.3-rc"])
    return None


PERSON_OPS = ["exact", "is_not", "in", "not_in", "icontains", "not_icontains", "icontains_multi",
              "not_icontains_multi", "regex", "not_regex", "gt", "gte", "lt", "lte", "min", "max",
              "between", "not_between", "is_set", "is_not_set", "is_date_before", "is_date_after",
              "is_date_exact", "semver_eq", "semver_neq", "semver_gt", "semver_gte", "semver_lt",
              "semver_lte", "semver_tilde", "semver_caret", "semver_wildcard"]


def person_leaf(r, typ="person"):
    op = r.choice(PERSON_OPS)
    key = r.choice(KEYS)
    if op.startswith("is_date"):
        key = r.choice(["signed_up", key])
    elif op.startswith("semver"):
        key = r.choice(["app_version", key])
    elif op in ("gt", "gte", "lt", "lte", "min", "max", "between", "not_between"):
        key = r.choice(["age", "score", key])
    leaf = {"type": typ, "key": key, "operator": op,
            "value": op if op in ("is_set", "is_not_set") else rand_filter_value(r, op)}
    if typ == "person" and r.random() < 0.2:
        leaf["negation"] = True
    return leaf


UNITS = ["minute", "hour", "day", "week", "month", "year"]


def behavioral_leaf(r):
    t = r.choice(["performed_event", "performed_event_multiple", "performed_event_first_time",
                  "stopped_performing_event", "restarted_performing_event",
                  "performed_event_sequence", "performed_event_regularly"])
    leaf = {"type": "behavioral", "key": r.choice(EVENTS[:4] + [EVENTS[4]] * (r.random() < 0.1)),
            "event_type": "events", "value": t}
    unit = r.choice(["day", "day", "week", "month", "hour", "year"])
    leaf["time_interval"] = unit
    leaf["time_value"] = {"minute": 600, "hour": 48, "day": 14, "week": 3, "month": 1, "year": 1}[unit] * r.randint(1, 3)
    if t in ("performed_event", "performed_event_multiple") and r.random() < 0.2:
        leaf["explicit_datetime"] = r.choice(["-10d", "2024-03-20", "-1m"])
    if t in ("performed_event_multiple", "performed_event_regularly"):
        leaf["operator"] = r.choice(["gte", "gt", "lte", "lt", "eq", "exact", None])
        leaf["operator_value"] = r.randint(1, 3)
    if t in ("stopped_performing_event", "restarted_performing_event"):
        leaf["time_interval"], leaf["time_value"] = r.choice([("day", 30), ("month", 1), ("week", 6)])
        leaf["seq_time_interval"], leaf["seq_time_value"] = r.choice([("day", 7), ("day", 28), ("week", 1)])
    if t == "performed_event_sequence":
        leaf["seq_event"] = r.choice(EVENTS[:4])
        leaf["seq_event_type"] = "events"
        leaf["seq_time_interval"] = r.choice(["minute", "hour", "day", "month", "year"])
        leaf["seq_time_value"] = r.randint(1, 3)
    if t == "performed_event_regularly":
        leaf["time_interval"], leaf["time_value"] = r.choice([("day", 1), ("day", 3), ("week", 1), ("month", 1)])
        leaf["total_periods"] = r.randint(1, 6)
        leaf["min_periods"] = r.randint(1, leaf["total_periods"])
    if r.random() < 0.3:
        leaf["event_filters"] = [person_leaf(r, "event") for _ in range(r.randint(1, 2))]
        for f in leaf["event_filters"]:
            f["key"] = r.choice(["amount", "path", "$browser", f["key"]])
    if r.random() < 0.25:
        leaf["negation"] = True
    return leaf


def random_tree(r, depth, earlier):
    kids = []
    for _ in range(r.randint(1, 3)):
        k = r.random()
        if depth < 2 and k < 0.2:
            kids.append(random_tree(r, depth + 1, earlier))
        elif k < 0.55:
            kids.append(person_leaf(r))
        elif k < 0.85:
            kids.append(behavioral_leaf(r))
        elif earlier:
            leaf = {"type": "cohort", "key": "id", "value": r.choice(earlier)}
            if r.random() < 0.3:
                leaf["operator"] = "not_in"
            if r.random() < 0.3:
                leaf["negation"] = True
            kids.append(leaf)
        else:
            kids.append(person_leaf(r))
    return {"type": r.choice(["AND", "OR"]), "values": kids}


def anchor():
    return {"type": "person", "key": "plan", "operator": "is_set", "value": "is_set"}


def random_dataset(seed, n_persons=40):
    r = random.Random(seed)
    persons, events = [], []
    now = NOW_S
    offsets = [0, 1, 59, 60, 3600, DAY, 7 * DAY, 14 * DAY, 29 * DAY, 30 * DAY, 31 * DAY,
               (31 + 29) * DAY, 366 * DAY]
    for i in range(n_persons):
        pid = f"p{i}" if r.random() < 0.9 else i  # a few integer ids
        dids = [f"d{i}"] + ([f"anon{i}"] if r.random() < 0.3 else [])
        props = rand_props(r, KEYS, 6)
        for key in ("plan", "age", "signed_up", "app_version"):
            if r.random() < 0.5:
                props[key] = person_value(r, key)
        persons.append({"id": pid, "distinct_ids": dids, "properties": props})
        for _ in range(r.randint(0, 12)):
            if r.random() < 0.3:
                ts = now - r.choice(offsets) + r.choice([0, 0, 1, -1])
            else:
                ts = now - r.randint(-3 * DAY, 120 * DAY)
            fmt = r.random()
            if fmt < 0.6:
                t = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
            elif fmt < 0.8:
                t = ts
            else:
                t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".%06dZ" % r.randint(0, 999999)
            ep = rand_props(r, ["amount", "path", "$browser", "plan"], 2)
            events.append({"distinct_id": r.choice(dids), "event": r.choice(EVENTS), "timestamp": t,
                           "properties": ep})
    events.append({"distinct_id": "unknown", "event": "login", "timestamp": NOW, "properties": {}})
    cohorts = []
    ids = []
    for cid in range(1, 11):
        tree = random_tree(r, 0, ids)
        tree = {"type": "AND", "values": [anchor() if r.random() < 0.5 else person_leaf(r), tree]}
        tree["values"][0].pop("negation", None)
        cohorts.append({"id": cid, "name": f"c{cid}", "filters": {"properties": tree}})
        ids.append(cid)
    static_members = [p["id"] for p in r.sample(persons, 5)] + ["d3", "nobody"]
    cohorts.append({"id": 11, "is_static": True, "static_person_ids": static_members})
    cohorts.append({"id": 12, "deleted": True, "filters": {}})
    cohorts.append({"id": 13, "filters": {"properties": {"type": "AND", "values": [
        {"type": "cohort", "key": "id", "value": 11},
        {"type": "cohort", "key": "id", "value": 12, "operator": "not_in"},
        {"type": "cohort", "key": "id", "value": r.choice(ids), "negation": True}]}}})
    return {"name": f"random-{seed}", "now": NOW, "cohorts": cohorts, "persons": persons,
            "events": events}


# ------------------------------------------------------------------------------------------------
# Running


def jsonl(items):
    return "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items)


class Runner:
    def __init__(self, target):
        self.cli = os.path.join(target, "release", "cohort-engine")
        self.dump = os.path.join(target, "release", "examples", "sql_dump")
        from chdb import session
        self.tmp = tempfile.mkdtemp(prefix="sql_diff_")
        self.sess = session.Session(os.path.join(self.tmp, "db"))
        # Parser limits only: the 100,000-element list and 10,000-node cases make long queries.
        for setting in ("max_query_size = 1000000000", "max_parser_backtracks = 100000000",
                        "max_parser_depth = 100000", "max_ast_elements = 100000000",
                        "max_expanded_ast_elements = 100000000"):
            self.q("SET " + setting)
        self.stats = {"datasets": 0, "compared": 0, "refused": 0, "mismatches": 0,
                      "skipped_datasets": 0, "query_errors": 0}
        self.refusals = {}
        self.failures = []

    def q(self, sql, fmt="CSV"):
        return self.sess.query(sql, fmt).bytes().decode("utf-8")

    def load(self, d):
        self.q("DROP TABLE IF EXISTS persons; DROP TABLE IF EXISTS person_distinct_ids; "
               "DROP TABLE IF EXISTS events; DROP TABLE IF EXISTS static_cohort_members")
        self.q("CREATE TABLE persons (person_id String, properties String) ENGINE = Memory")
        self.q("CREATE TABLE person_distinct_ids (distinct_id String, person_id String) ENGINE = Memory")
        self.q("CREATE TABLE events (distinct_id String, event String, timestamp DateTime64(6, 'UTC'), "
               "properties String) ENGINE = Memory")
        self.q("CREATE TABLE static_cohort_members (cohort_id Int64, person_id String) ENGINE = Memory")
        loads = [("persons", "persons.jsonl", "person_id String, properties String", "*"),
                 ("person_distinct_ids", "pdi.jsonl", "distinct_id String, person_id String", "*"),
                 ("events", "events.jsonl", "distinct_id String, event String, ts Int64, properties String",
                  "distinct_id, event, fromUnixTimestamp64Micro(ts, 'UTC'), properties"),
                 ("static_cohort_members", "static.jsonl", "cohort_id Int64, person_id String", "*")]
        for table, f, schema, cols in loads:
            path = os.path.join(d, f)
            if os.path.getsize(path) == 0:
                continue
            self.q(f"INSERT INTO {table} SELECT {cols} FROM file('{path}', 'JSONEachRow', '{schema}')")

    def run(self, ds):
        name = ds["name"]
        d = os.path.join(self.tmp, "ds")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        files = {"cohorts": os.path.join(d, "cohorts.json"), "persons": os.path.join(d, "persons.jsonl"),
                 "events": os.path.join(d, "events.jsonl")}
        with open(files["cohorts"], "w") as f:
            json.dump(ds["cohorts"], f, ensure_ascii=False)
        with open(files["persons"], "w") as f:
            f.write(jsonl(ds["persons"]))
        with open(files["events"], "w") as f:
            f.write(jsonl(ds.get("events") or []))
        ev = subprocess.run([self.cli, "eval", "--cohorts", files["cohorts"], "--persons", files["persons"],
                             "--events", files["events"], "--now", ds["now"], "--quiet"],
                            capture_output=True, text=True)
        if ev.returncode != 0:
            self.stats["skipped_datasets"] += 1
            print(f"  {name}: the engine refused the dataset, skipped: {ev.stderr.strip()[:300]}")
            return
        expected = json.loads(ev.stdout)
        sq = subprocess.run([self.dump, "sql", files["cohorts"], ds["now"]], capture_output=True, text=True)
        ld = subprocess.run([self.dump, "load", files["cohorts"], files["persons"], files["events"],
                             os.path.join(d, "rows")], capture_output=True, text=True)
        if sq.returncode != 0 or ld.returncode != 0:
            raise SystemExit(f"sql_dump failed on {name}: {sq.stderr}{ld.stderr}")
        sqls = json.loads(sq.stdout)
        self.load(os.path.join(d, "rows"))
        self.stats["datasets"] += 1
        for cid, members in expected.items():
            entry = sqls.get(cid)
            if entry is None:
                continue
            if "error" in entry:
                self.stats["refused"] += 1
                msg = entry["error"].split("ClickHouse SQL back end: ", 1)[-1]
                key = msg.split(" cannot")[0].split(": ")[0][:80]
                self.refusals[key] = self.refusals.get(key, 0) + 1
                continue
            try:
                out = self.q(entry["sql"], "JSONCompactEachRow")
            except Exception as e:  # noqa: BLE001
                self.stats["query_errors"] += 1
                self.failures.append((name, cid, f"query error: {str(e)[:500]}"))
                continue
            got = sorted({json.loads(line)[0] for line in out.splitlines() if line.strip()},
                         key=lambda s: s.encode("utf-8"))
            self.stats["compared"] += 1
            if got != members:
                self.stats["mismatches"] += 1
                self.failures.append((name, cid, f"engine {members}\n      sql    {got}"))
                if os.environ.get("SQL_DIFF_KEEP"):
                    keep = os.path.join(os.environ["SQL_DIFF_KEEP"], f"{name}-{cid}".replace("/", "_"))
                    shutil.copytree(d, keep, dirs_exist_ok=True)


def case_datasets():
    out = []
    for path in sorted(glob.glob(os.path.join(REPO, "tests", "cases", "**", "*.json"), recursive=True)):
        with open(path) as f:
            cases = json.load(f)
        for i, c in enumerate(cases):
            if "expect" not in c:
                continue
            rel = os.path.relpath(path, os.path.join(REPO, "tests", "cases"))
            out.append({"name": f"{rel}#{i}:{c.get('name', '')[:50]}", "now": c.get("now", "2024-06-15T12:00:00Z"),
                        "cohorts": c["cohorts"], "persons": c.get("persons") or [], "events": c.get("events") or []})
    return out


def example_dataset():
    def read(p):
        with open(os.path.join(REPO, "examples", "data", p)) as f:
            return f.read()
    return {"name": "examples/data", "now": "2024-06-15T12:00:00Z", "cohorts": json.loads(read("cohorts.json")),
            "persons": [json.loads(l) for l in read("persons.jsonl").splitlines() if l.strip()],
            "events": [json.loads(l) for l in read("events.jsonl").splitlines() if l.strip()]}


def main():
    ensure_venv()
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default=None, help="substring of dataset names to run")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    start = time.time()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    if not args.no_build:
        subprocess.check_call(["cargo", "build", "--release", "-q", "--bin", "cohort-engine",
                               "--example", "sql_dump"], cwd=REPO)
    datasets = [random_dataset(args.seed * 100_000 + i) for i in range(args.datasets)]
    datasets += case_datasets() + [example_dataset()]
    if args.only:
        datasets = [d for d in datasets if args.only in d["name"]]
    runner = Runner(target)
    kinds = {"random": 0, "cases": 0, "examples": 0}
    for ds in datasets:
        t0 = time.time()
        runner.run(ds)
        if args.verbose or time.time() - t0 > 5:
            print(f"  {ds['name']}: {time.time() - t0:.1f}s", flush=True)
        kinds["random" if ds["name"].startswith("random-") else
              "examples" if ds["name"] == "examples/data" else "cases"] += 1
    s = runner.stats
    for name, cid, msg in runner.failures[:40]:
        print(f"MISMATCH {name} cohort {cid}:\n      {msg}")
    print(f"datasets: {s['datasets']} loaded ({kinds['random']} random, {kinds['cases']} data-driven cases, "
          f"{kinds['examples']} examples), {s['skipped_datasets']} refused by the engine itself")
    print(f"cohorts compared: {s['compared']}, mismatches: {s['mismatches']}, query errors: {s['query_errors']}, "
          f"refused by the SQL generator (skipped): {s['refused']}")
    for k, v in sorted(runner.refusals.items(), key=lambda kv: -kv[1]):
        print(f"  refused {v}x: {k}")
    print(f"time: {time.time() - start:.1f}s")
    shutil.rmtree(runner.tmp, ignore_errors=True)
    sys.exit(1 if runner.failures else 0)


if __name__ == "__main__":
    main()
