//! Projection: what a load keeps when the cohorts are known before the data is read.

use super::arena::StrSet;
use crate::ast::{Behavior, Definition, Leaf, Operator};
use crate::set::CohortSet;

/// The person properties, event properties and event names some leaf of a cohort set reads.
///
/// Set it as [`crate::LoadOptions::projection`] and a load keeps only these: other person and
/// event properties and events of other names are validated and counted, never stored. Evaluating
/// the same set (or any set reading nothing more) over the projected dataset gives exactly the
/// result over the full one; a set reading other names would see them as missing.
///
/// On more than one thread, a load with a projection also builds, while it reads events, the
/// caches the set's leaves read from person columns: the case-folded dictionary of a key read
/// by `icontains`, the dictionary in one arena of a key read by a regex, the parsed dates of a
/// key read by a date comparison, the numbers of a key read by a numeric comparison.
#[derive(Clone, Debug, Default)]
pub struct Projection {
    pub(crate) person_keys: StrSet,
    pub(crate) event_keys: StrSet,
    pub(crate) event_names: StrSet,
    /// Person keys read by `icontains`-family leaves (their columns' case-folded dictionaries
    /// are built at load).
    pub(crate) folded_keys: StrSet,
    /// Person keys read by regex leaves (their columns' dictionaries are laid end to end in one
    /// arena at load).
    pub(crate) regex_keys: StrSet,
    /// Person keys read by date comparisons (their columns' values are parsed as dates at load).
    pub(crate) date_keys: StrSet,
    /// Person keys read by numeric comparisons (their columns' values are converted to numbers
    /// at load).
    pub(crate) num_keys: StrSet,
}

impl Projection {
    /// What the cohorts of `set` read (deleted and static cohorts read nothing).
    pub fn of(set: &CohortSet) -> Projection {
        let mut p = Projection::default();
        for cohort in set.cohorts() {
            let Definition::Dynamic(root) = &cohort.definition else {
                continue;
            };
            root.visit_leaves(&mut |leaf| match leaf {
                Leaf::Person(f) => {
                    p.person_keys.intern(f.key.as_bytes());
                    match f.operator {
                        Operator::IContains
                        | Operator::NotIContains
                        | Operator::IContainsMulti
                        | Operator::NotIContainsMulti => {
                            p.folded_keys.intern(f.key.as_bytes());
                        }
                        Operator::Regex | Operator::NotRegex => {
                            p.regex_keys.intern(f.key.as_bytes());
                        }
                        Operator::IsDateBefore | Operator::IsDateAfter | Operator::IsDateExact => {
                            p.date_keys.intern(f.key.as_bytes());
                        }
                        Operator::Gt
                        | Operator::Gte
                        | Operator::Lt
                        | Operator::Lte
                        | Operator::Min
                        | Operator::Max
                        | Operator::Between
                        | Operator::NotBetween => {
                            p.num_keys.intern(f.key.as_bytes());
                        }
                        _ => {}
                    }
                }
                Leaf::Behavioral(b) => {
                    p.event_names.intern(b.event.as_bytes());
                    if let Behavior::PerformedEventSequence { seq_event, .. } = &b.behavior {
                        p.event_names.intern(seq_event.as_bytes());
                    }
                    for f in &b.event_filters {
                        p.event_keys.intern(f.key.as_bytes());
                    }
                }
                Leaf::Cohort(_) => {}
            });
        }
        p
    }

    /// Does some leaf read the person property `key`?
    pub fn keeps_person_key(&self, key: &str) -> bool {
        self.person_keys.find(key.as_bytes()).is_some()
    }

    /// Does some event filter read the event property `key`?
    pub fn keeps_event_key(&self, key: &str) -> bool {
        self.event_keys.find(key.as_bytes()).is_some()
    }

    /// Does some behavioral leaf read events named `name`?
    pub fn keeps_event(&self, name: &str) -> bool {
        self.event_names.find(name.as_bytes()).is_some()
    }
}
