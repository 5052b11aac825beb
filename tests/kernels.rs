//! The batch column kernels (a code → result table over the whole dictionary: `icontains` over a
//! case-folded arena, dates parsed once per column, a branch-free pass over persons) agree with
//! the per-person path, which tests each value on its own.

use cohort_engine::internal::generate::{generate, GenerateOptions, Shape};
use cohort_engine::{BatchOptions, CohortSet, Dataset, LoadOptions, Scratch};

/// Every cohort's batch members against `Dataset::matches` for every person, on 1 and 2 threads.
fn agree(set: &CohortSet, data: &Dataset, now: i64) {
    let program = data.compile(set).unwrap();
    let mut scratch = Scratch::new();
    for threads in [1, 2] {
        // Twice: the second run reads the folded dictionary and the dates the first one cached.
        for _ in 0..2 {
            let opts = BatchOptions::default().threads(threads);
            let members = data.evaluate_program(&program, now, &opts).unwrap();
            for (id, ids) in &members {
                for i in 0..data.len() {
                    let one = data.matches(&program, *id, i, now, &mut scratch).unwrap();
                    let person = data.person_id(i).unwrap();
                    let listed = ids.binary_search(&person.to_string()).is_ok();
                    assert_eq!(
                        one, listed,
                        "cohort {id}, person {person}, {threads} threads"
                    );
                }
            }
        }
    }
}

/// The cases are not vacuous: every cohort has members and non-members.
fn assert_split(set: &CohortSet, data: &Dataset, now: i64) {
    let members = data.evaluate(set, now, &BatchOptions::default()).unwrap();
    for (id, m) in &members {
        assert!(
            !m.is_empty() && m.len() < data.len(),
            "cohort {id}: {} members",
            m.len()
        );
    }
}

/// A generated dataset (loaded whole) and its cohorts file's text.
fn generated(opts: &GenerateOptions, tag: &str) -> (Dataset, String) {
    let dir = std::env::temp_dir().join(format!("cohort-{tag}-{}", std::process::id()));
    generate(opts, &dir).unwrap();
    let data = Dataset::from_paths(
        &dir.join("persons.jsonl"),
        Some(&dir.join("events.jsonl")),
        &mut LoadOptions::default(),
    )
    .unwrap();
    let cohorts = std::fs::read_to_string(dir.join("cohorts.json")).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    (data, cohorts)
}

/// A person leaf's JSON (`value` already JSON).
fn person_leaf(key: &str, op: &str, value: &str, neg: bool) -> String {
    format!(
        "{{\"type\":\"person\",\"key\":\"{key}\",\"operator\":\"{op}\",\"value\":{value},\"negation\":{neg}}}"
    )
}

/// A dataset of persons only, from JSON Lines text.
fn persons_only(persons: &str) -> Dataset {
    Dataset::from_readers(
        persons.as_bytes(),
        "persons.jsonl",
        None::<(&[u8], &str)>,
        &mut LoadOptions::default(),
    )
    .unwrap()
}

/// A generated dataset of `persons` persons of `shape` (loaded whole), its cohorts file's text
/// and the options it was generated with.
fn generated_shape(
    shape: Shape,
    persons: u64,
    events_per_person: u64,
    tag: &str,
) -> (GenerateOptions, Dataset, String) {
    let opts = GenerateOptions {
        persons,
        events_per_person,
        shape,
        ..Default::default()
    };
    let (data, cohorts) = generated(&opts, &format!("{tag}-{shape:?}"));
    (opts, data, cohorts)
}

#[test]
fn generated_cohorts_batch_equals_per_person() {
    for shape in [Shape::Simple, Shape::Wide] {
        let (opts, data, cohorts) = generated_shape(shape, 2000, 5, "kernels");
        let set = CohortSet::from_json(&cohorts).unwrap();
        agree(&set, &data, opts.now);
    }
}

#[test]
fn icontains_dates_and_numbers_over_large_dictionaries() {
    // 300 distinct names, dates and numbers (past the kernels' threshold of 64), with non-ASCII
    // case folds, numbers and booleans among the names, numeric and non-numeric strings among
    // the numbers, and persons without the key.
    let mut persons = String::new();
    let words = [
        "Straße",
        "İstanbul",
        "ÀBC",
        "abc",
        "xabcx",
        "ab",
        "STRASSE",
        "a\u{300}bc",
    ];
    for i in 0..600 {
        // The first values sit side by side in the dictionary so that the boundary needles
        // below occur across two of them ("zz0"·"abq"), and once inside a value ("k0abk").
        let fixed = [
            "zz0", "abq", "q2", "strz", "nae", "1q", "k0abk", "k2strk", "ke1k",
        ];
        let name = match i % 7 {
            _ if i < fixed.len() => format!("\"{}\"", fixed[i]),
            0 => format!("\"{}-{i}\"", words[i % words.len()]),
            1 => format!("{i}"),
            2 => "true".to_string(),
            3 => "null".to_string(),
            _ => format!("\"{}{}\"", words[(i / 7) % words.len()], i % 300),
        };
        let date = match i % 5 {
            0 => format!("\"2024-{:02}-{:02}T00:00:00Z\"", 1 + i % 12, 1 + i % 28),
            1 => format!("{}", 1_700_000_000 + i * 3600),
            2 => "\"not a date\"".to_string(),
            3 => format!("\"2024-06-{:02}\"", 1 + i % 28),
            _ => format!("\"{}\"", 1_718_000_000 + i * 60),
        };
        let num = match i % 9 {
            0 => format!("{}", i as i64 - 300),
            1 => format!("{}.5", i / 3),
            2 => format!("\"{}\"", i / 2),
            3 => format!("\"{}e1\"", i % 40),
            4 => "\"NaN\"".to_string(),
            5 => format!("\"n{i}\""),
            6 => "false".to_string(),
            7 => "null".to_string(),
            _ => format!("{}", (i % 50) as f64 / 4.0),
        };
        persons.push_str(&format!(
            "{{\"id\":\"p{i}\",\"distinct_ids\":[\"p{i}\"],\"properties\":{{\"name\":{name},\"d\":{date},\"n\":{num}}}}}\n"
        ));
    }
    let data = persons_only(&persons);
    let leaf = person_leaf;
    let mut cohorts = Vec::new();
    let leaves = [
        leaf("name", "icontains", "\"straße\"", false),
        leaf("name", "icontains", "\"STRASSE\"", false),
        leaf("name", "icontains", "\"i̇st\"", false),
        leaf("name", "icontains", "\"àb\"", false),
        leaf("name", "icontains", "\"ab\"", true),
        leaf("name", "not_icontains", "\"abc1\"", false),
        leaf("name", "icontains", "\"\"", false),
        leaf("name", "icontains", "\"ru\"", false),
        leaf("name", "icontains", "[\"x\", \"2\"]", false),
        // Needles that also occur across the boundary of two neighbouring values.
        leaf("name", "icontains", "\"0ab\"", false),
        leaf("name", "icontains", "\"2str\"", false),
        leaf("name", "icontains", "\"e1\"", false),
        leaf("d", "is_date_after", "\"2024-06-10\"", false),
        leaf("d", "is_date_before", "\"-30d\"", false),
        leaf("d", "is_date_exact", "\"2024-06-15\"", false),
        leaf("d", "is_date_before", "\"2024-03-01\"", true),
        leaf("n", "gt", "10", false),
        leaf("n", "gte", "150", false),
        leaf("n", "lt", "0", false),
        leaf("n", "lte", "12.5", false),
        leaf("n", "between", "[0, 100]", false),
        leaf("n", "not_between", "[-50, 100]", false),
        leaf("n", "gt", "5", true),
        leaf("n", "between", "[2, 7.25]", true),
    ];
    for (i, l) in leaves.iter().enumerate() {
        // A negated leaf needs a positive sibling: presence of the other key, so persons
        // without the leaf's own key still reach it.
        let values = if l.contains("\"negation\":true") {
            let other = if l.contains("\"key\":\"name\"") {
                "d"
            } else if l.contains("\"key\":\"d\"") {
                "name"
            } else {
                "d"
            };
            format!("{l},{}", leaf(other, "is_set", "\"is_set\"", false))
        } else {
            l.clone()
        };
        cohorts.push(format!(
            "{{\"id\":{},\"filters\":{{\"properties\":{{\"type\":\"AND\",\"values\":[{values}]}}}}}}",
            i + 1
        ));
    }
    let set = CohortSet::from_json(&format!("[{}]", cohorts.join(","))).unwrap();
    let now = "2024-07-01T00:00:00Z"
        .parse::<cohort_engine::Timestamp>()
        .unwrap()
        .as_micros();
    agree(&set, &data, now);
    assert_split(&set, &data, now);
}

#[test]
fn regexes_over_a_large_dictionary() {
    // 13,000 persons, nearly all with distinct values (past the regex kernel's threshold of
    // 4,096): ASCII and non-ASCII words; the cohorts with Unicode word boundaries (no lazy DFA
    // for them) take the per-value path. Each pattern is also ANDed with a cheaper leaf on
    // `tier` (`a` or `b` for about half of the persons), so the regex runs only on the values
    // of the persons that leaf leaves (still more than 4,096, on 2 threads), plainly and
    // negated; every seventh person has no `name`.
    let words = [
        "alpha",
        "Ünïcode",
        "straße",
        "b@gmail.com",
        "x y",
        "ÀB",
        "naïve café",
        "42",
    ];
    let mut persons = String::new();
    for i in 0..13_000 {
        let w = words[i % words.len()];
        let name = match i % 3 {
            0 => format!("{w}{i}"),
            1 => format!("{i} {w}"),
            _ => format!("{w}-{}", i / 3),
        };
        let mut props = serde_json::Map::new();
        if i % 7 != 0 {
            props.insert("name".into(), name.into());
        }
        if i % 11 < 8 {
            props.insert("tier".into(), ["a", "b", "c"][(i / 5) % 3].into());
        }
        persons.push_str(&format!(
            "{{\"id\":\"p{i}\",\"distinct_ids\":[\"p{i}\"],\"properties\":{}}}\n",
            serde_json::Value::Object(props)
        ));
    }
    let data = persons_only(&persons);
    let patterns: [(&str, &str); 14] = [
        ("regex", r#""^[a-m][^@]*@(gmail|yahoo)\\.com""#),
        ("regex", r#""\\bcafé\\b""#),
        ("regex", r#""\\b\\w+\\d{3}$""#),
        ("regex", r#""(?i)^ü""#),
        ("regex", r#""ße-1\\d""#),
        ("regex", r#""^\\d+ \\S+$""#),
        ("not_regex", r#""a""#),
        ("regex", r#"["^x", "é\\d"]"#),
        ("regex", r#""\\Bc""#),
        // Anchored at the end: values ending with none of the end literals skip the automaton.
        ("regex", r#"" (alpha|naïve café)$""#),
        ("regex", r#""(?i)Ünïcode$""#),
        ("regex", r#""^\\d+ b@gmail\\.com$""#),
        ("not_regex", r#""(ÀB|straße)\\z""#),
        ("regex", r#"["x y$", "-1\\d\\d$"]"#),
    ];
    let tier = r#"{"type":"person","key":"tier","operator":"exact","value":["a","b"]}"#;
    let cohorts: Vec<String> = patterns
        .iter()
        .enumerate()
        .flat_map(|(i, (op, value))| {
            let leaf = |negation: bool| {
                format!(
                    "{{\"type\":\"person\",\"key\":\"name\",\"operator\":\"{op}\",\"value\":{value},\"negation\":{negation}}}"
                )
            };
            let cohort = |id: usize, leaves: String| {
                format!(
                    "{{\"id\":{id},\"filters\":{{\"properties\":{{\"type\":\"AND\",\"values\":[{leaves}]}}}}}}"
                )
            };
            [
                cohort(i + 1, leaf(false)),
                cohort(i + 101, format!("{},{tier}", leaf(false))),
                cohort(i + 201, format!("{},{tier}", leaf(true))),
            ]
        })
        .collect();
    let set = CohortSet::from_json(&format!("[{}]", cohorts.join(","))).unwrap();
    agree(&set, &data, 0);
    assert_split(&set, &data, 0);
}

#[test]
fn member_lists_are_in_id_byte_order() {
    // Ids sharing long prefixes, ids that are prefixes of others, equal first 8 bytes after the
    // common prefix, non-ASCII and a NUL byte: the list order is always the ids' byte order.
    let mut ids: Vec<String> = vec![
        "user-".into(),
        "user-a".into(),
        "user-a\u{0}".into(),
        "user-a\u{0}b".into(),
        "user-abcdefgh".into(),
        "user-abcdefghi".into(),
        "user-abcdefgh\u{0}".into(),
        "user-abcdefgz".into(),
        "user-é".into(),
        "user-Z".into(),
        "user-00000000001".into(),
        "user-0000000001".into(),
    ];
    for i in 0..300 {
        ids.push(format!("user-{:x}", (i * 7919) % 1000));
    }
    ids.sort();
    ids.dedup();
    // Every 100th id (in reverse order) also has `y`: a sparse cohort (under 1/64 of the
    // persons); every person has `x`; no one has `z`.
    let mut persons = String::new();
    let mut sparse = Vec::new();
    for (k, id) in ids.iter().rev().enumerate() {
        if k % 100 == 0 {
            sparse.push(id.clone());
        }
        let y = if k % 100 == 0 { ",\"y\":1" } else { "" };
        let id = serde_json::Value::String(id.clone());
        persons.push_str(&format!(
            "{{\"id\":{id},\"distinct_ids\":[{id}],\"properties\":{{\"x\":1{y}}}}}\n"
        ));
    }
    sparse.sort();
    assert!(sparse.len() > 1 && sparse.len() * 64 < ids.len());
    let set = CohortSet::from_json(
        r#"[{"id":1,"filters":{"properties":{"type":"AND","values":[{"type":"person","key":"x","operator":"is_set"}]}}},
            {"id":2,"filters":{"properties":{"type":"AND","values":[{"type":"person","key":"y","operator":"is_set"}]}}},
            {"id":3,"filters":{"properties":{"type":"AND","values":[{"type":"person","key":"z","operator":"is_set"}]}}}]"#,
    )
    .unwrap();
    // Loaded on several threads the order is computed while events are read; on one, on the
    // first member list.
    for threads in [1, 2] {
        let data = Dataset::from_readers(
            persons.as_bytes(),
            "persons.jsonl",
            Some(("".as_bytes(), "events.jsonl")),
            &mut LoadOptions::default().threads(threads),
        )
        .unwrap();
        let members = data.evaluate(&set, 0, &BatchOptions::default()).unwrap();
        assert_eq!(members[&1], ids);
        assert_eq!(members[&2], sparse);
        // The borrowed lists are the same.
        let program = data.compile(&set).unwrap();
        let bits = data
            .evaluate_bitsets(&program, 0, &BatchOptions::default())
            .unwrap();
        assert_eq!(data.member_ids(&bits[&1]), ids);
        assert_eq!(data.member_ids(&bits[&2]), sparse);
        assert!(data.member_ids(&bits[&3]).is_empty());
        // So are the iterators, which know how many ids are left at every step.
        for (cohort, expected) in [(1, &ids), (2, &sparse), (3, &Vec::new())] {
            let mut it = data.member_id_iter(&bits[&cohort]);
            for (k, id) in expected.iter().enumerate() {
                assert_eq!(it.len(), expected.len() - k);
                assert_eq!(it.next(), Some(id.as_str()));
            }
            assert_eq!(it.len(), 0);
            assert_eq!(it.next(), None);
        }
        let longest = ids.iter().map(String::len).max().unwrap();
        assert_eq!(data.longest_person_id(), longest);
    }
}

#[test]
fn behavioral_leaves_sharing_an_event_share_one_pass() {
    // Several leaves per event name, so the batch computes them in one pass over the name's
    // runs and keeps the others' results for their turn: a kept result used under a narrower
    // mask (an OR under an AND, a negation), leaves of cohorts not requested, partitions, and
    // enough persons for the pass to run on two threads.
    let opts = GenerateOptions {
        persons: 10_000,
        events_per_person: 6,
        ..Default::default()
    };
    let (data, _) = generated(&opts, "shared");
    let b = |key: &str, value: &str, extra: &str| {
        format!(
            r#"{{"type": "behavioral", "key": "{key}", "event_type": "events", "value": "{value}", "time_value": 30, "time_interval": "day"{extra}}}"#
        )
    };
    let pv = b("$pageview", "performed_event", "");
    let pv_many = b(
        "$pageview",
        "performed_event_multiple",
        r#", "operator": "gte", "operator_value": 3"#,
    );
    let pv_recent = b("$pageview", "performed_event", r#", "time_value": 3"#)
        .replace(r#""time_value": 30, "#, "");
    let pv_not = pv_recent.replace("}", r#", "negation": true}"#);
    let login = b("login", "performed_event", "");
    let login_many = b(
        "login",
        "performed_event_multiple",
        r#", "operator": "lte", "operator_value": 1"#,
    );
    let plan = r#"{"type": "person", "key": "plan", "operator": "exact", "value": ["pro"]}"#;
    let text = format!(
        r#"[{{"id": 1, "filters": {{"properties": {{"type": "OR", "values": [{pv}, {login}]}}}}}},
            {{"id": 2, "filters": {{"properties": {{"type": "AND", "values": [{plan},
                {{"type": "OR", "values": [{pv_many}, {login_many}]}}]}}}}}},
            {{"id": 3, "filters": {{"properties": {{"type": "AND", "values": [{pv_many}, {pv_not}]}}}}}},
            {{"id": 4, "filters": {{"properties": {{"type": "OR", "values": [{pv_recent},
                {{"type": "AND", "values": [{plan}, {login}]}}]}}}}}}]"#
    );
    let set = CohortSet::from_json(&text).unwrap();
    agree(&set, &data, opts.now);
    assert_split(&set, &data, opts.now);
    // One cohort requested (the others' leaves are not evaluated), and partitions.
    let program = data.compile(&set).unwrap();
    let all = data
        .evaluate_program(&program, opts.now, &BatchOptions::default())
        .unwrap();
    for id in [2, 3] {
        let mut one = BatchOptions::default();
        one.cohorts = Some(vec![id]);
        let m = data.evaluate_program(&program, opts.now, &one).unwrap();
        assert_eq!(m[&id], all[&id], "cohort {id} alone");
    }
    let mut parts: Vec<Vec<String>> = vec![Vec::new(); 4];
    for i in 0..3u64 {
        let mut part = BatchOptions::default();
        part.partition = Some((i, 3));
        let m = data.evaluate_program(&program, opts.now, &part).unwrap();
        for (k, id) in [1, 2, 3, 4].iter().enumerate() {
            parts[k].extend(m[id].iter().cloned());
        }
    }
    for (k, id) in [1, 2, 3, 4].iter().enumerate() {
        parts[k].sort();
        assert_eq!(parts[k], all[id], "cohort {id} over partitions");
    }
}

#[test]
fn persons_split_across_threads_give_the_one_thread_answer() {
    // Past the size at which a batch splits its persons into one contiguous range per thread:
    // ranges that do not fall on 64-person words, a static cohort and references crossing
    // ranges, partitions, and thread counts that do not divide the persons.
    for shape in [Shape::Simple, Shape::Wide] {
        let (opts, data, cohorts) = generated_shape(shape, 9_001, 25, "split");
        let mut set: Vec<serde_json::Value> = serde_json::from_str(&cohorts).unwrap();
        let ids: Vec<String> = (0..data.len())
            .step_by(7)
            .map(|p| data.person_id(p).unwrap().to_string())
            .collect();
        set.push(serde_json::json!({"id": 90, "is_static": true, "static_person_ids": ids}));
        set.push(
            serde_json::json!({"id": 91, "filters": {"properties": {"type": "AND", "values": [
            {"type": "cohort", "key": "id", "value": 90, "negation": true},
            {"type": "OR", "values": [
                {"type": "cohort", "key": "id", "value": 1},
                {"type": "cohort", "key": "id", "value": 12}]}]}}}),
        );
        let set = CohortSet::from_json(&serde_json::Value::Array(set).to_string()).unwrap();
        let program = data.compile(&set).unwrap();
        let one = data
            .evaluate_bitsets(&program, opts.now, &BatchOptions::default().threads(1))
            .unwrap();
        for (id, bits) in &one {
            let n = bits.count();
            assert!(
                n > 0 && n < data.len(),
                "cohort {id}: {n} members ({shape:?})"
            );
        }
        for threads in [2, 3, 5] {
            for partition in [None, Some((2, 3))] {
                let mut o = BatchOptions::default().threads(threads);
                o.partition = partition;
                let got = data.evaluate_bitsets(&program, opts.now, &o).unwrap();
                let mut p1 = BatchOptions::default().threads(1);
                p1.partition = partition;
                let want = match partition {
                    None => one.clone(),
                    Some(_) => data.evaluate_bitsets(&program, opts.now, &p1).unwrap(),
                };
                assert_eq!(
                    got, want,
                    "{threads} threads, partition {partition:?} ({shape:?})"
                );
            }
        }
        agree(&set, &data, opts.now);
    }
}

#[test]
fn large_dictionaries_split_by_code_span_across_threads() {
    // 12,000 persons, past the batch's split and the code-span threshold (4,096 values): each
    // share of persons tests only the span of codes its persons use. Values alternate between
    // ones first seen here (new codes, rising with the person) and ones from a small pool first
    // seen among the earliest persons (low codes, used by every share); the last third of the
    // persons have no `late` key at all (an empty span in the last share), and `early` only the
    // first 500 (a share without any of its codes); `r` repeats 5,000 values throughout.
    let mut persons = String::new();
    for i in 0..12_000 {
        let pool = i % 5 == 1;
        let name = if pool {
            format!("Pool-{}", i % 40)
        } else {
            format!("Ünique{i}@Mail{}.example", i % 3)
        };
        let date = if pool {
            format!("2024-01-{:02}T00:00:00Z", 1 + i % 28)
        } else {
            format!("2024-06-01T00:00:{:02}.{i:06}Z", i % 60)
        };
        let num = if pool {
            format!("{}", i % 40)
        } else {
            format!("{}.25", i)
        };
        // Values that repeat across the dataset: later shares use mostly older codes.
        let r = format!("r-{}", (i * 7) % 5_000);
        let mut props = serde_json::json!({"name": name, "d": date, "n": num, "r": r});
        if i < 8_000 {
            props["late"] = format!("late-{i}").into();
        }
        if i < 500 {
            props["early"] = format!("early-{i}").into();
        }
        persons.push_str(&format!(
            "{{\"id\":\"p{i}\",\"distinct_ids\":[\"p{i}\"],\"properties\":{props}}}\n"
        ));
    }
    let data = persons_only(&persons);
    let leaf = person_leaf;
    let leaves = [
        leaf("name", "icontains", "\"mail1\"", false),
        leaf("name", "icontains", "\"pool-1\"", false),
        leaf("name", "not_icontains", "\"üNIQUE1\"", false),
        leaf("name", "icontains", "\"7@\"", true),
        leaf("name", "regex", "\"^Ünique\\\\d*[02]@\"", false),
        leaf("name", "not_regex", "\"ple$\"", false),
        leaf("name", "regex", "\"^Pool-[0-4]$|@Mail2\"", false),
        leaf(
            "name",
            "exact",
            "[\"Pool-3\", \"Ünique10@Mail1.example\"]",
            false,
        ),
        leaf("name", "is_not", "\"Pool-6\"", false),
        leaf("d", "is_date_after", "\"2024-06-01T00:00:30Z\"", false),
        leaf("d", "is_date_before", "\"2024-01-15\"", true),
        leaf("n", "gt", "6000", false),
        leaf("n", "between", "[10, 9000]", false),
        leaf("n", "not_between", "[20, 3000]", false),
        leaf("n", "lte", "25", true),
        leaf("late", "icontains", "\"-7\"", false),
        leaf("late", "regex", "\"9$\"", true),
        leaf("early", "icontains", "\"-4\"", false),
        leaf("r", "icontains", "\"-12\"", false),
        leaf("r", "regex", "\"3$\"", true),
        leaf("early", "not_icontains", "\"-4\"", false),
    ];
    let cohorts: Vec<String> = leaves
        .iter()
        .enumerate()
        .map(|(i, l)| {
            // A negated leaf beside a positive one, so persons without its key still reach it.
            let values = if l.contains("\"negation\":true") {
                format!("{l},{}", leaf("n", "is_set", "\"is_set\"", false))
            } else {
                l.clone()
            };
            format!(
                "{{\"id\":{},\"filters\":{{\"properties\":{{\"type\":\"AND\",\"values\":[{values}]}}}}}}",
                i + 1
            )
        })
        .collect();
    let set = CohortSet::from_json(&format!("[{}]", cohorts.join(","))).unwrap();
    let now = "2024-07-01T00:00:00Z"
        .parse::<cohort_engine::Timestamp>()
        .unwrap()
        .as_micros();
    let program = data.compile(&set).unwrap();
    let one = data
        .evaluate_bitsets(&program, now, &BatchOptions::default().threads(1))
        .unwrap();
    for threads in [3, 4] {
        let got = data
            .evaluate_bitsets(&program, now, &BatchOptions::default().threads(threads))
            .unwrap();
        assert_eq!(got, one, "{threads} threads");
    }
    agree(&set, &data, now);
    assert_split(&set, &data, now);
}

#[test]
fn evaluate_each_hands_each_requested_cohort_over_once() {
    // `evaluate_each` against `evaluate_bitsets` on 1–3 threads (past the size at which persons
    // are split), for every cohort and for a repeated subset of one partition; the closure's
    // member list against `member_ids`.
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (opts, data, cohorts) = generated_shape(Shape::Wide, 9_001, 10, "each");
    let set = CohortSet::from_json(&cohorts).unwrap();
    let program = data.compile(&set).unwrap();
    for threads in [1, 2, 3] {
        for (ids, partition) in [(None, None), (Some(vec![12, 10, 12]), Some((1, 2)))] {
            let mut o = BatchOptions::default().threads(threads);
            o.cohorts = ids;
            o.partition = partition;
            let want = data.evaluate_bitsets(&program, opts.now, &o).unwrap();
            let calls = AtomicUsize::new(0);
            let got = data
                .evaluate_each(&program, opts.now, &o, |id, bits| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    let mut json = Vec::new();
                    data.write_member_ids_json(&bits, &mut json);
                    (id, bits, json)
                })
                .unwrap();
            let label = format!("{threads} threads, partition {partition:?}");
            assert_eq!(calls.load(Ordering::Relaxed), want.len(), "{label}");
            assert!(got.keys().eq(want.keys()), "{label}");
            for (id, (same, bits, json)) in &got {
                assert_eq!(same, id, "{label}");
                assert_eq!(bits, &want[id], "cohort {id}, {label}");
                assert!(bits.count() > 0, "cohort {id}, {label}");
                let listed: Vec<String> = serde_json::from_slice(json).unwrap();
                assert_eq!(listed, data.member_ids(bits), "cohort {id}, {label}");
            }
        }
    }
    // An unknown cohort is refused before anything runs.
    let o = BatchOptions::default().cohorts([404]);
    let err = data
        .evaluate_each(&program, opts.now, &o, |_, _| ())
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}

#[test]
fn presence_leaves_over_many_persons() {
    // 9,000 persons: `a` on two in three and `c` on every other (past the 4,096 persons from
    // which a column keeps its presence bitset, so `is_set` / `is_not_set` are word
    // operations), `b` on two in five (under it: a pass over codes). Plain, `is_not_set`,
    // negated, in AND and OR groups, on 1 to 3 threads, against the per-person path.
    let mut persons = String::new();
    for i in 0..9_000 {
        let mut props = serde_json::Map::new();
        if i % 3 != 0 {
            props.insert("a".into(), format!("a{}", i % 50).into());
        }
        if i % 5 < 2 {
            props.insert("b".into(), (i % 7).into());
        }
        if i % 2 == 0 {
            props.insert("c".into(), (i % 4 == 0).into());
        }
        persons.push_str(&format!(
            "{{\"id\":\"p{i}\",\"distinct_ids\":[\"p{i}\"],\"properties\":{}}}\n",
            serde_json::Value::Object(props)
        ));
    }
    let data = persons_only(&persons);
    let leaf = person_leaf;
    let (set_, not_set) = ("\"is_set\"", "\"is_not_set\"");
    let groups = [
        ("AND", vec![leaf("a", "is_set", set_, false)]),
        ("AND", vec![leaf("a", "is_not_set", not_set, false)]),
        (
            "AND",
            vec![
                leaf("a", "is_set", set_, true),
                leaf("c", "is_set", set_, false),
            ],
        ),
        (
            "AND",
            vec![
                leaf("a", "is_not_set", not_set, true),
                leaf("b", "is_set", set_, false),
            ],
        ),
        (
            "OR",
            vec![
                leaf("a", "is_not_set", not_set, false),
                leaf("c", "is_set", set_, false),
            ],
        ),
        (
            "AND",
            vec![
                leaf("b", "is_set", set_, false),
                leaf("a", "is_not_set", not_set, false),
                leaf("c", "is_not_set", not_set, true),
            ],
        ),
        (
            "OR",
            vec![
                leaf("c", "is_not_set", not_set, false),
                leaf("a", "exact", "[\"a7\"]", false),
            ],
        ),
    ];
    let cohorts: Vec<String> = groups
        .iter()
        .enumerate()
        .map(|(i, (op, values))| {
            format!(
                "{{\"id\":{},\"filters\":{{\"properties\":{{\"type\":\"{op}\",\"values\":[{}]}}}}}}",
                i + 1,
                values.join(",")
            )
        })
        .collect();
    let set = CohortSet::from_json(&format!("[{}]", cohorts.join(","))).unwrap();
    let program = data.compile(&set).unwrap();
    let one = data
        .evaluate_bitsets(&program, 0, &BatchOptions::default().threads(1))
        .unwrap();
    let got = data
        .evaluate_bitsets(&program, 0, &BatchOptions::default().threads(3))
        .unwrap();
    assert_eq!(got, one, "3 threads");
    agree(&set, &data, 0);
    assert_split(&set, &data, 0);
}
