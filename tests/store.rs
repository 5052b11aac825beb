//! The `CohortStore` facade: every rule of the cohort API's operations (create, PATCH, soft
//! delete and restore, list, duplicate as static, persons, static members, calculation records,
//! restore from persisted records).

use cohort_engine::store::{
    CohortKind, CohortRecord, CohortStore, JsonText, ListQuery, StoreError, CYCLE_DETAIL,
};
use cohort_engine::time::{format_micros, parse_absolute};
use cohort_engine::{Dataset, ErrorKind};
use serde_json::{json, Value};

const PERSONS: &str = r#"{"id": "u-ada", "distinct_ids": ["d-ada", "ada-phone"], "properties": {"email": "ada@example.com", "plan": "pro", "age": 36, "tags": ["math", "engines"]}}
{"id": "u-grace", "distinct_ids": ["d-grace"], "properties": {"email": "Grace@Navy.mil", "plan": "free", "age": 85}}
{"id": "u-linus", "distinct_ids": ["d-linus"], "properties": {"plan": "pro"}}
"#;

const EVENTS: &str = r#"{"distinct_id": "d-ada", "event": "login", "timestamp": "2024-06-10T08:00:00Z"}
{"distinct_id": "d-ada", "event": "login", "timestamp": "2024-06-11T08:00:00Z"}
{"distinct_id": "ada-phone", "event": "login", "timestamp": "2024-06-12T08:00:00Z"}
{"distinct_id": "d-ada", "event": "login", "timestamp": "2024-06-13T08:00:00Z"}
{"distinct_id": "d-ada", "event": "login", "timestamp": "2024-06-14T08:00:00Z"}
{"distinct_id": "d-grace", "event": "login", "timestamp": "2024-06-14T09:00:00Z"}
"#;

fn now() -> i64 {
    parse_absolute("2024-06-15T12:00:00Z").unwrap()
}

fn store() -> CohortStore {
    let mut s = CohortStore::new(Dataset::from_jsonl(PERSONS, EVENTS).unwrap()).unwrap();
    s.set_clock(Some(now()));
    s
}

fn person(key: &str, operator: &str, value: Value) -> Value {
    json!({"type": "person", "key": key, "operator": operator, "value": value})
}

fn filters(values: Vec<Value>) -> Value {
    json!({"properties": {"type": "AND", "values": values}})
}

fn reference(id: i64) -> Value {
    json!({"type": "cohort", "key": "id", "value": id})
}

fn logins_gte(n: u64) -> Value {
    json!({"type": "behavioral", "key": "login", "event_type": "events",
           "value": "performed_event_multiple", "operator": "gte", "operator_value": n,
           "time_value": 7, "time_interval": "day"})
}

fn pro(s: &mut CohortStore) -> i64 {
    s.create(&json!({"name": "Pro plan", "filters": filters(vec![person("plan", "exact", json!("pro"))])}))
        .unwrap()
}

fn members(s: &CohortStore, id: i64) -> Vec<String> {
    s.members(id).unwrap().to_vec()
}

fn ids(page: &[Value]) -> Vec<i64> {
    page.iter().map(|c| c["id"].as_i64().unwrap()).collect()
}

fn kind(e: &StoreError) -> ErrorKind {
    e.errors()[0].kind()
}

#[test]
fn create_dynamic_assigns_id_version_and_calculates() {
    let mut s = store();
    let id = pro(&mut s);
    assert_eq!(id, 1);
    let c = s.to_api_json(id).unwrap();
    assert_eq!(c["version"], 1);
    assert_eq!(c["pending_version"], 1);
    assert_eq!(c["count"], 2);
    assert_eq!(c["is_static"], false);
    assert_eq!(c["deleted"], false);
    assert_eq!(c["is_calculating"], false);
    assert_eq!(c["errors_calculating"], 0);
    assert_eq!(c["last_error_message"], Value::Null);
    assert_eq!(c["last_calculation"], format_micros(now()));
    assert_eq!(c["created_at"], format_micros(now()));
    assert_eq!(c["cohort_type"], "person_property");
    assert_eq!(c["filters"]["properties"]["values"][0]["key"], "plan");
    assert_eq!(members(&s, id), ["u-ada", "u-linus"]);
    assert_eq!(
        s.create(&json!({"name": "is_set", "filters": filters(vec![
            json!({"type": "person", "key": "email", "operator": "is_set", "value": null})
        ])}))
        .unwrap(),
        2
    );
    assert_eq!(members(&s, 2), ["u-ada", "u-grace"]);
    assert_eq!(s.next_id(), 3);
}

#[test]
fn create_behavioral_is_marked_and_evaluated() {
    let mut s = store();
    let id = s
        .create(&json!({"name": "Frequent", "filters": filters(vec![logins_gte(5)])}))
        .unwrap();
    assert_eq!(members(&s, id), ["u-ada"]);
    assert_eq!(s.to_api_json(id).unwrap()["cohort_type"], "behavioral");
}

#[test]
fn create_from_legacy_groups_shows_filters_form() {
    let mut s = store();
    let id = s
        .create(&json!({"name": "Navy", "groups": [{"properties": [
            {"key": "email", "value": "navy.mil", "type": "person", "operator": "icontains"}]}]}))
        .unwrap();
    assert_eq!(members(&s, id), ["u-grace"]);
    let c = s.to_api_json(id).unwrap();
    assert_eq!(c["groups"][0]["properties"][0]["key"], "email");
    assert_eq!(c["filters"]["properties"]["type"], "OR");
    let leaf = &c["filters"]["properties"]["values"][0]["values"][0];
    assert_eq!(leaf["operator"], "icontains");
}

#[test]
fn create_without_a_condition_or_with_a_bad_body_is_rejected() {
    let mut s = store();
    let e = s.create(&json!({"name": "Nothing"})).unwrap_err();
    assert_eq!(kind(&e), ErrorKind::InvalidFilter);
    let e = s.create(&json!({"name": 5})).unwrap_err();
    assert_eq!(kind(&e), ErrorKind::InvalidInput);
    let e = s
        .create(&json!({"filters": {"type": "AND", "values": []}}))
        .unwrap_err();
    assert_eq!(
        e.detail(),
        "Must contain a 'properties' key with type and values"
    );
    let e = s.create(&json!([1])).unwrap_err();
    assert_eq!(kind(&e), ErrorKind::InvalidInput);
    // Nothing was created and no id was used.
    assert_eq!(s.records().count(), 0);
    assert_eq!(pro(&mut s), 1);
}

#[test]
fn create_static_from_person_ids_resolves_and_drops_unknown() {
    let mut s = store();
    let id = s
        .create(&json!({"name": "Picked", "is_static": true,
                         "_create_static_person_ids": ["u-grace", "ada-phone", "nobody", "u-grace"]}))
        .unwrap();
    let r = s.get(id).unwrap();
    assert_eq!(r.static_members, ["u-grace", "u-ada"]);
    assert_eq!(members(&s, id), ["u-ada", "u-grace"]);
    let c = s.to_api_json(id).unwrap();
    assert_eq!(c["count"], 2);
    assert_eq!(c["cohort_type"], "static");
    assert_eq!(c["version"], 1);
    // Filters of a static cohort are ignored, not validated.
    let id2 = s
        .create(
            &json!({"is_static": true, "filters": {"properties": {"type": "XOR", "values": []}}}),
        )
        .unwrap();
    assert_eq!(members(&s, id2), Vec::<String>::new());
}

#[test]
fn create_static_from_csv_by_each_column() {
    let mut s = store();
    let by_person = s
        .create_from_csv(
            &json!({"name": "csv"}),
            "person_id,other\nu-linus,x\nnobody,y\n",
        )
        .unwrap();
    assert_eq!(members(&s, by_person), ["u-linus"]);
    assert!(s.get(by_person).unwrap().is_static);
    let by_distinct = s
        .create_from_csv(
            &json!({"name": "csv2"}),
            "distinct_id\nd-grace\nada-phone\n",
        )
        .unwrap();
    assert_eq!(members(&s, by_distinct), ["u-ada", "u-grace"]);
    let by_email = s
        .create_from_csv(&json!({"name": "csv3"}), "name,email\nG,grace@navy.MIL\n")
        .unwrap();
    assert_eq!(members(&s, by_email), ["u-grace"]);
    let e = s
        .create_from_csv(&json!({"name": "bad"}), "foo\nbar\n")
        .unwrap_err();
    assert_eq!(kind(&e), ErrorKind::InvalidInput);
    assert_eq!(s.records().count(), 3);
}

#[test]
fn patch_changes_only_given_fields_and_bumps_version() {
    let mut s = store();
    let id = pro(&mut s);
    s.update(id, &json!({"name": "Pro users", "description": "paying"}))
        .unwrap();
    let c = s.to_api_json(id).unwrap();
    assert_eq!(c["name"], "Pro users");
    assert_eq!(c["description"], "paying");
    assert_eq!(c["filters"]["properties"]["values"][0]["key"], "plan");
    assert_eq!(c["version"], 2);
    assert_eq!(c["pending_version"], 2);
    // Filters are replaced as a whole.
    s.update(
        id,
        &json!({"filters": filters(vec![person("age", "gt", json!(50))])}),
    )
    .unwrap();
    let c = s.to_api_json(id).unwrap();
    assert_eq!(
        c["filters"]["properties"]["values"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(c["filters"]["properties"]["values"][0]["key"], "age");
    assert_eq!(c["name"], "Pro users");
    assert_eq!(c["version"], 3);
    assert_eq!(c["count"], 1);
    assert_eq!(members(&s, id), ["u-grace"]);
}

#[test]
fn patch_to_behavioral_gte_5() {
    let mut s = store();
    let id = pro(&mut s);
    s.update(id, &json!({"filters": filters(vec![logins_gte(5)])}))
        .unwrap();
    assert_eq!(members(&s, id), ["u-ada"]);
    s.update(id, &json!({"filters": filters(vec![logins_gte(1)])}))
        .unwrap();
    assert_eq!(members(&s, id), ["u-ada", "u-grace"]);
}

#[test]
fn rejected_updates_leave_everything_unchanged() {
    let mut s = store();
    let a = pro(&mut s);
    let b = s
        .create(&json!({"name": "B", "filters": filters(vec![reference(a)])}))
        .unwrap();
    let before_a = s.get(a).unwrap().clone();
    let before_b = s.get(b).unwrap().clone();

    // Cycle a → b → a.
    let e = s
        .update(a, &json!({"filters": filters(vec![reference(b)])}))
        .unwrap_err();
    assert!(e.is_cycle());
    assert_eq!(e.detail(), CYCLE_DETAIL);
    // Self-reference.
    let e = s
        .update(a, &json!({"filters": filters(vec![reference(a)])}))
        .unwrap_err();
    assert_eq!(e.detail(), CYCLE_DETAIL);
    // Invalid filter.
    let e = s
        .update(a, &json!({"name": "X", "filters": filters(vec![person("plan", "startswith", json!("p"))])}))
        .unwrap_err();
    assert_eq!(kind(&e), ErrorKind::InvalidFilter);
    assert!(e.detail().contains("startswith"), "{}", e.detail());
    // Unknown reference.
    let e = s
        .update(a, &json!({"filters": filters(vec![reference(99)])}))
        .unwrap_err();
    assert_eq!(kind(&e), ErrorKind::UnknownCohort);

    assert_eq!(s.get(a).unwrap(), &before_a);
    assert_eq!(s.get(b).unwrap(), &before_b);
    assert_eq!(members(&s, b), ["u-ada", "u-linus"]);
    assert_eq!(
        s.cohort_set().unwrap().get(a).unwrap().references(),
        Vec::<i64>::new()
    );
    // Unknown id.
    assert!(matches!(
        s.update(42, &json!({"name": "x"})),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn soft_delete_refused_while_referenced_then_allowed_and_restorable() {
    let mut s = store();
    let a = pro(&mut s);
    let b = s
        .create(&json!({"name": "Pro adults", "filters": filters(vec![reference(a), person("age", "gt", json!(18))])}))
        .unwrap();
    let e = s.update(a, &json!({"deleted": true})).unwrap_err();
    assert_eq!(kind(&e), ErrorKind::InUse);
    assert_eq!(
        e.detail(),
        format!(
            "cohort {a} \"Pro plan\" is used by cohort {b} \"Pro adults\": \
             remove those references before deleting it"
        )
    );
    assert!(!s.get(a).unwrap().deleted);

    // A deleted referrer no longer blocks.
    s.update(b, &json!({"deleted": true})).unwrap();
    assert!(s.get(b).unwrap().deleted);
    assert_eq!(members(&s, b), Vec::<String>::new());
    s.update(a, &json!({"deleted": true})).unwrap();
    let c = s.to_api_json(a).unwrap();
    assert_eq!(c["deleted"], true);
    assert_eq!(s.list(&ListQuery::default()).count, 0);

    // Restoring b while a is deleted is refused, naming a: b would reference a deleted cohort.
    let e = s.update(b, &json!({"deleted": false})).unwrap_err();
    assert_eq!(kind(&e), ErrorKind::UnknownCohort);
    assert!(
        e.detail()
            .contains(&format!("cohort {a} \"Pro plan\" is deleted")),
        "{}",
        e.detail()
    );
    assert!(s.get(b).unwrap().deleted);
    // Restoring a first, then b, recalculates both.
    s.update(a, &json!({"deleted": false})).unwrap();
    assert_eq!(members(&s, a), ["u-ada", "u-linus"]);
    s.update(b, &json!({"deleted": false})).unwrap();
    assert_eq!(members(&s, b), ["u-ada"]);
    assert_eq!(s.list(&ListQuery::default()).count, 2);
    // Restoring a also recalculates its dependents.
    s.update(
        a,
        &json!({"filters": filters(vec![person("plan", "exact", json!("free"))])}),
    )
    .unwrap();
    assert_eq!(members(&s, b), ["u-grace"]);
}

#[test]
fn a_live_cohort_never_references_a_deleted_one() {
    let mut s = store();
    let a = pro(&mut s);
    s.update(a, &json!({"deleted": true})).unwrap();
    // Created with a reference to a deleted cohort: refused, naming it; nothing is created.
    let next = s.next_id();
    let e = s
        .create(&json!({"name": "Uses deleted", "filters": filters(vec![reference(a)])}))
        .unwrap_err();
    assert_eq!(kind(&e), ErrorKind::UnknownCohort);
    assert_eq!(e.errors().len(), 1, "{e}");
    assert_eq!(
        e.errors()[0].to_string(),
        format!(
            "unknown_cohort: cohort {next}: filters.properties.values[0].value: \
             cohort {a} \"Pro plan\" is deleted: restore it or remove the reference"
        )
    );
    assert!(s.get(next).is_none());
    // Patched to reference it: refused too.
    let b = s
        .create(&json!({"name": "B", "filters": filters(vec![person("age", "gt", json!(1))])}))
        .unwrap();
    let e = s
        .update(b, &json!({"filters": filters(vec![reference(a)])}))
        .unwrap_err();
    assert_eq!(kind(&e), ErrorKind::UnknownCohort);
    assert_eq!(s.get(b).unwrap().version, 1);
    // A deleted cohort may keep (or be given) a reference to another deleted one.
    s.update(b, &json!({"deleted": true})).unwrap();
    s.update(b, &json!({"filters": filters(vec![reference(a)])}))
        .unwrap();
    // … but is not restored while that one is deleted.
    let e = s.update(b, &json!({"deleted": false})).unwrap_err();
    assert!(e
        .detail()
        .contains(&format!("cohort {a} \"Pro plan\" is deleted")));
    assert!(s.get(b).unwrap().deleted);
}

#[test]
fn restore_is_validated_like_an_update() {
    let mut s = store();
    let a = pro(&mut s);
    let b = s
        .create(&json!({"name": "B", "filters": filters(vec![person("age", "gt", json!(1))])}))
        .unwrap();
    s.update(a, &json!({"deleted": true})).unwrap();
    // While a is deleted its references are not checked …
    s.update(a, &json!({"filters": filters(vec![reference(12345)])}))
        .unwrap();
    // … but restoring it validates them like any update.
    let e = s.update(a, &json!({"deleted": false})).unwrap_err();
    assert_eq!(kind(&e), ErrorKind::UnknownCohort);
    assert!(s.get(a).unwrap().deleted);
    s.update(a, &json!({"filters": filters(vec![reference(b)])}))
        .unwrap();
    // … and restoring it validates the definition like any update: b may not reference a now.
    s.update(a, &json!({"deleted": false})).unwrap();
    assert_eq!(members(&s, a), ["u-ada", "u-grace"]);
    let e = s
        .update(b, &json!({"filters": filters(vec![reference(a)])}))
        .unwrap_err();
    assert!(e.is_cycle());
}

#[test]
fn list_is_newest_first_paginated_and_filtered() {
    let mut s = store();
    let mut t = now();
    let mut make = |s: &mut CohortStore, body: Value| {
        t += 1_000_000;
        s.set_clock(Some(t));
        s.create(&body).unwrap()
    };
    let paying = make(
        &mut s,
        json!({"name": "Paying customers", "filters": filters(vec![person("plan", "exact", json!("pro"))])}),
    );
    let frequent = make(
        &mut s,
        json!({"name": "Frequent", "filters": filters(vec![logins_gte(3)])}),
    );
    let nested = make(
        &mut s,
        json!({"name": "Frequent payers", "filters": filters(vec![reference(frequent)])}),
    );
    let picked = make(
        &mut s,
        json!({"name": "VIP list", "is_static": true, "_create_static_person_ids": ["u-ada"]}),
    );
    let gone = make(
        &mut s,
        json!({"name": "Old paying", "filters": filters(vec![person("plan", "is_set", Value::Null)])}),
    );
    s.update(gone, &json!({"deleted": true})).unwrap();

    let all = s.list(&ListQuery::default());
    assert_eq!(all.count, 4);
    assert_eq!(ids(&all.results), [picked, nested, frequent, paying]);

    let page = s.list(&ListQuery {
        limit: Some(2),
        offset: 1,
        ..ListQuery::default()
    });
    assert_eq!(page.count, 4);
    assert_eq!(ids(&page.results), [nested, frequent]);
    let past_end = s.list(&ListQuery {
        limit: Some(2),
        offset: 10,
        ..ListQuery::default()
    });
    assert_eq!((past_end.count, past_end.results.len()), (4, 0));

    let statics = s.list(&ListQuery {
        kind: Some(CohortKind::Static),
        ..ListQuery::default()
    });
    assert_eq!(ids(&statics.results), [picked]);
    let dynamics = s.list(&ListQuery {
        kind: Some(CohortKind::Dynamic),
        ..ListQuery::default()
    });
    assert_eq!(ids(&dynamics.results), [nested, frequent, paying]);

    let search = s.list(&ListQuery {
        search: Some("PAY".into()),
        ..ListQuery::default()
    });
    assert_eq!(
        ids(&search.results),
        [nested, paying],
        "case-insensitive, deleted excluded"
    );
    let static_search = s.list(&ListQuery {
        search: Some("vip".into()),
        kind: Some(CohortKind::Static),
        ..ListQuery::default()
    });
    assert_eq!(ids(&static_search.results), [picked]);

    let hidden = s.list(&ListQuery {
        hide_behavioral_cohorts: true,
        ..ListQuery::default()
    });
    assert_eq!(
        ids(&hidden.results),
        [picked, paying],
        "nested hidden transitively"
    );
}

#[test]
fn duplicate_as_static_copies_members_at_the_given_now() {
    let mut s = store();
    let frequent = s
        .create(&json!({"name": "Frequent", "filters": filters(vec![logins_gte(1)])}))
        .unwrap();
    assert_eq!(members(&s, frequent), ["u-ada", "u-grace"]);
    // Ten days later only… nobody has logged in within 7 days.
    let later = now() + 10 * 86_400_000_000;
    let copy = s.duplicate_as_static(frequent, later).unwrap();
    let c = s.to_api_json(copy).unwrap();
    assert_eq!(c["name"], "Frequent (static copy)");
    assert_eq!(c["is_static"], true);
    assert_eq!(c["count"], 0);
    let copy2 = s.duplicate_as_static(frequent, now()).unwrap();
    assert_eq!(members(&s, copy2), ["u-ada", "u-grace"]);
    assert_eq!(s.get(copy2).unwrap().static_members, ["u-ada", "u-grace"]);
    // The copy does not follow the source.
    s.update(frequent, &json!({"filters": filters(vec![logins_gte(5)])}))
        .unwrap();
    assert_eq!(members(&s, copy2), ["u-ada", "u-grace"]);

    let e = s.duplicate_as_static(copy2, now()).unwrap_err();
    assert_eq!(
        e.detail(),
        "Cannot duplicate a static cohort as a static cohort."
    );
    assert!(matches!(
        s.duplicate_as_static(99, now()),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn persons_are_paginated_with_ids_distinct_ids_and_properties() {
    let mut s = store();
    let id = s
        .create(&json!({"name": "Everyone", "filters": filters(vec![person("plan", "is_set", Value::Null)])}))
        .unwrap();
    let page = s.persons(id, Some(2), 0).unwrap();
    assert_eq!(page.total, 3);
    let first = &page.results[0];
    assert_eq!(first["id"], "u-ada");
    assert_eq!(first["type"], "person");
    assert_eq!(first["name"], "ada@example.com");
    assert_eq!(first["distinct_ids"], json!(["ada-phone", "d-ada"]));
    assert_eq!(first["properties"]["age"], 36);
    assert_eq!(first["properties"]["tags"], json!(["math", "engines"]));
    assert_eq!(page.results[1]["id"], "u-grace");
    let rest = s.persons(id, Some(2), 2).unwrap();
    assert_eq!(rest.results.len(), 1);
    assert_eq!(rest.results[0]["id"], "u-linus");
    assert_eq!(rest.results[0]["name"], "d-linus");
    assert_eq!(s.persons(id, None, 0).unwrap().results.len(), 3);

    let csv = s.persons_csv(id, None, 0).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "id,email,name,distinct_ids,properties.age,properties.plan,properties.tags"
    );
    assert_eq!(
        lines[1],
        "u-ada,ada@example.com,ada@example.com,\"ada-phone, d-ada\",36,pro,\"[\"\"math\"\",\"\"engines\"\"]\""
    );
    assert_eq!(lines[3], "u-linus,,d-linus,d-linus,,pro,");
    assert_eq!(lines.len(), 4);
    assert!(matches!(
        s.persons(77, None, 0),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn static_members_can_be_added_and_removed() {
    let mut s = store();
    let list = s
        .create(&json!({"name": "List", "is_static": true, "_create_static_person_ids": ["u-ada"]}))
        .unwrap();
    let user = s
        .create(&json!({"name": "Listed pros", "filters": filters(vec![reference(list), person("plan", "exact", json!("pro"))])}))
        .unwrap();
    assert_eq!(members(&s, user), ["u-ada"]);

    assert_eq!(
        s.add_persons(list, &["d-linus".into(), "u-ada".into(), "ghost".into()])
            .unwrap(),
        1
    );
    assert_eq!(members(&s, list), ["u-ada", "u-linus"]);
    assert_eq!(
        members(&s, user),
        ["u-ada", "u-linus"],
        "dependents recalculated"
    );
    assert_eq!(s.get(list).unwrap().version, 2);

    let e = s.add_persons(list, &["ghost".into()]).unwrap_err();
    assert_eq!(e.detail(), "No valid users to add to cohort");
    let e = s.add_persons(list, &[]).unwrap_err();
    assert_eq!(e.detail(), "person_ids cannot be empty");
    let e = s.add_persons(user, &["u-ada".into()]).unwrap_err();
    assert_eq!(e.detail(), "Can only add users to static cohorts");

    s.remove_person(list, "u-ada").unwrap();
    assert_eq!(members(&s, list), ["u-linus"]);
    assert_eq!(members(&s, user), ["u-linus"]);
    let e = s.remove_person(list, "u-ada").unwrap_err();
    assert_eq!(
        e,
        StoreError::NotFound("Person is not part of the cohort".into())
    );
    let e = s.remove_person(user, "u-linus").unwrap_err();
    assert_eq!(e.detail(), "Can only remove users from static cohorts");
    // By distinct id.
    s.remove_person(list, "d-linus").unwrap();
    assert_eq!(s.get(list).unwrap().calculation.count, Some(0));
}

#[test]
fn static_members_replaced_by_csv_update() {
    let mut s = store();
    let list = s
        .create(&json!({"name": "List", "is_static": true, "_create_static_person_ids": ["u-ada"]}))
        .unwrap();
    s.update_with_csv(list, &json!({}), "distinct_id\nd-grace\n")
        .unwrap();
    assert_eq!(members(&s, list), ["u-grace"]);
    let dynamic = pro(&mut s);
    let e = s
        .update_with_csv(dynamic, &json!({}), "person_id\nu-ada\n")
        .unwrap_err();
    assert_eq!(kind(&e), ErrorKind::InvalidInput);
}

#[test]
fn calculation_record_follows_each_evaluation() {
    let mut s = store();
    let a = pro(&mut s);
    let b = s
        .create(&json!({"name": "B", "filters": filters(vec![reference(a)])}))
        .unwrap();
    assert_eq!(s.get(b).unwrap().calculation.count, Some(2));
    let later = now() + 60_000_000;
    s.set_clock(Some(later));
    s.update(
        a,
        &json!({"filters": filters(vec![person("plan", "exact", json!("free"))])}),
    )
    .unwrap();
    let rb = s.get(b).unwrap();
    assert_eq!(rb.calculation.count, Some(1), "dependent recalculated");
    assert_eq!(rb.calculation.last_calculation, Some(later));
    assert_eq!(rb.version, 1, "a dependent's definition did not change");
    assert_eq!(members(&s, b), ["u-grace"]);
    assert_eq!(s.get(a).unwrap().calculation.errors_calculating, 0);
}

#[test]
fn restore_rebuilds_from_persisted_records() {
    let mut s = store();
    let a = pro(&mut s);
    let list = s
        .create(
            &json!({"name": "List", "is_static": true, "_create_static_person_ids": ["u-grace"]}),
        )
        .unwrap();
    let b = s
        .create(&json!({"name": "Either", "filters": {"properties": {"type": "OR", "values": [reference(a), reference(list)]}}}))
        .unwrap();
    s.update(b, &json!({"name": "Either one"})).unwrap();
    // What a persistence layer keeps: the serde form plus static members.
    let saved: Vec<CohortRecord> = s
        .records()
        .map(|r| {
            let mut back: CohortRecord =
                serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap();
            back.static_members = r.static_members.clone();
            back
        })
        .collect();
    let mut r =
        CohortStore::restore(Dataset::from_jsonl(PERSONS, EVENTS).unwrap(), saved, 10).unwrap();
    r.set_clock(Some(now()));
    r.recalculate_all();
    for id in [a, list, b] {
        assert_eq!(r.members(id), s.members(id));
        assert_eq!(r.get(id).unwrap().version, s.get(id).unwrap().version);
        assert_eq!(r.to_api_json(id), s.to_api_json(id));
    }
    assert_eq!(members(&r, b), ["u-ada", "u-grace", "u-linus"]);
    assert_eq!(r.next_id(), 10);
    assert_eq!(pro(&mut r), 10);
}

#[test]
fn next_id_only_moves_forward() {
    let mut s = store();
    let a = pro(&mut s);
    assert!(s.set_next_id(a).is_err());
    s.set_next_id(40).unwrap();
    assert_eq!(pro(&mut s), 40);
    assert_eq!(s.next_id(), 41);
}

#[test]
fn csv_uploads_accept_a_byte_order_mark_and_refuse_an_unterminated_quote() {
    let mut s = store();
    // Spreadsheet exports often start with a UTF-8 byte-order mark.
    let id = s
        .create_from_csv(&json!({"name": "bom"}), "\u{feff}person_id\r\nu-ada\r\n")
        .unwrap();
    assert_eq!(members(&s, id), ["u-ada"]);
    // An unterminated quote used to swallow every following row and give 0 members.
    let e = s
        .create_from_csv(
            &json!({"name": "broken"}),
            "person_id\n\"u-ada\nu-grace\nu-linus\n",
        )
        .unwrap_err();
    assert_eq!(kind(&e), ErrorKind::InvalidInput);
    assert!(e.detail().contains("line 2"), "{}", e.detail());
    assert!(e.detail().contains("unterminated quote"), "{}", e.detail());
    // Quoted fields with escaped quotes and line breaks are still fine.
    let ok = s
        .create_from_csv(
            &json!({"name": "quoted"}),
            "note,person_id\n\"a \"\"b\"\"\nc\",u-grace\n",
        )
        .unwrap();
    assert_eq!(members(&s, ok), ["u-grace"]);
    let e = s
        .update_with_csv(ok, &json!({}), "person_id\n\"u-ada")
        .unwrap_err();
    assert_eq!(kind(&e), ErrorKind::InvalidInput);
    assert_eq!(members(&s, ok), ["u-grace"]);
}

/// `depth` nested arrays around a scalar.
fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

#[test]
fn deeply_nested_fields_are_refused_on_every_path() {
    let mut s = store();
    // Unknown keys of `filters` are kept verbatim, so their depth must be bounded too: the
    // persisted record has to stay readable (serde_json stops at 128 levels).
    let mut f = filters(vec![person("plan", "exact", json!("pro"))]);
    f["extra"] = nested(126);
    let e = s
        .create(&json!({"name": "deep", "filters": f}))
        .unwrap_err();
    assert_eq!(kind(&e), ErrorKind::InvalidInput);
    assert!(
        e.detail().contains("filters: nested more than"),
        "{}",
        e.detail()
    );
    let e = s
        .create(&json!({"name": "deep", "groups": [{"properties": nested(120)}]}))
        .unwrap_err();
    assert!(
        e.detail().contains("groups: nested more than"),
        "{}",
        e.detail()
    );
    assert!(s.is_empty());
    // The deepest legal tree (32 nested groups) is accepted, and its record reads back.
    let mut tree =
        json!({"type": "AND", "values": [person("plan", "exact", json!(["pro", "free"]))]});
    for _ in 1..cohort_engine::Limits::default().max_depth {
        tree = json!({"type": "OR", "values": [tree]});
    }
    let id = s
        .create(&json!({"name": "deep but legal", "filters": {"properties": tree}}))
        .unwrap();
    let text = serde_json::to_string(s.get(id).unwrap()).unwrap();
    assert!(serde_json::from_str::<CohortRecord>(&text).is_ok());
    assert_eq!(members(&s, id), ["u-ada", "u-grace", "u-linus"]);
}

#[test]
fn restore_valid_leaves_out_bad_records_and_what_depends_on_them() {
    let mut s = store();
    let a = pro(&mut s);
    let b = s
        .create(&json!({"name": "uses a", "filters": filters(vec![reference(a)])}))
        .unwrap();
    let c = s
        .create(&json!({"name": "fine", "filters": filters(vec![person("age", "gt", json!(40))])}))
        .unwrap();
    let mut saved: Vec<CohortRecord> = s.records().cloned().collect();
    // Cohort a's stored filter became invalid (say, written by another version).
    saved[0].filters = Some(JsonText::from_value(&filters(vec![person(
        "plan",
        "startswith",
        json!("p"),
    )])));
    let data = || Dataset::from_jsonl(PERSONS, EVENTS).unwrap();
    assert!(CohortStore::restore(data(), saved.clone(), 1).is_err());
    let (r, rejected) = CohortStore::restore_valid(data(), saved, 1).unwrap();
    let left_out: Vec<i64> = rejected.iter().map(|x| x.record.id).collect();
    assert_eq!(left_out, [a, b]);
    assert_eq!(rejected[0].errors[0].kind(), ErrorKind::InvalidFilter);
    assert_eq!(rejected[1].errors[0].kind(), ErrorKind::UnknownCohort);
    assert_eq!(r.records().map(|x| x.id).collect::<Vec<_>>(), [c]);
    assert_eq!(members(&r, c), ["u-grace"]);
    assert!(r.next_id() > b, "ids of left-out cohorts are not reused");
}
