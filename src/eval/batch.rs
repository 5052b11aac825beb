//! Batch evaluation over a whole [`Dataset`]: every requested cohort for every person, persons
//! split across threads, each cohort's dependencies evaluated first and read from the memo.

use std::collections::BTreeMap;

use crate::compile::{CohortCode, Program};
use crate::data::Dataset;
use crate::error::{Error, ErrorKind};
use crate::eval::{Scratch, Subject, Who};
use crate::set::CohortSet;
use crate::time::Micros;
use crate::CohortId;

/// What to evaluate and how.
#[derive(Clone, Debug, Default)]
pub struct BatchOptions {
    /// Cohorts to report (default: every non-deleted cohort). Referenced cohorts are evaluated as
    /// needed either way.
    pub cohorts: Option<Vec<CohortId>>,
    /// Worker threads (0 = all cores). The result never depends on it.
    pub threads: usize,
    /// Only persons whose partition (FNV-1a 64 of the id's UTF-8 bytes, mod n) is i: `(i, n)`.
    pub partition: Option<(u64, u64)>,
}

/// Member person ids per cohort id: ids sorted by their UTF-8 bytes.
pub type Members = BTreeMap<CohortId, Vec<String>>;

/// FNV-1a, 64-bit: the stable hash that assigns persons to partitions.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Dataset {
    /// Evaluates cohorts of `set` for every person at `now`.
    ///
    /// # Errors
    /// `unknown_cohort` when a requested id is absent or deleted.
    pub fn evaluate(
        &self,
        set: &CohortSet,
        now: Micros,
        opts: &BatchOptions,
    ) -> Result<Members, Error> {
        let program = Program::compile(set, &self.symbols)?;
        self.evaluate_program(&program, now, opts)
    }

    /// Evaluates an already compiled program (compiled against this dataset's symbols with
    /// [`Dataset::compile`]).
    ///
    /// # Errors
    /// As [`Dataset::evaluate`].
    pub fn evaluate_program(
        &self,
        program: &Program,
        now: Micros,
        opts: &BatchOptions,
    ) -> Result<Members, Error> {
        let set = program.cohort_set();
        let requested: Vec<usize> = match &opts.cohorts {
            None => (0..set.len())
                .filter(|&i| !set.cohorts()[i].is_deleted())
                .collect(),
            Some(ids) => {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    match set.position(*id) {
                        Some(p) if !set.cohorts()[p].is_deleted() => out.push(p),
                        _ => {
                            return Err(Error::new(
                                ErrorKind::UnknownCohort,
                                format!("cohort {id} is not in the set (or is deleted)"),
                            ))
                        }
                    }
                }
                out.sort_unstable();
                out.dedup();
                out
            }
        };
        // Everything requested plus its dependencies, in evaluation order.
        let mut needed = vec![false; set.len()];
        let mut stack: Vec<usize> = requested.clone();
        while let Some(c) = stack.pop() {
            if std::mem::replace(&mut needed[c], true) {
                continue;
            }
            if let CohortCode::Dynamic(root) = program.cohorts[c] {
                program.for_each_reference(root, &mut |t| {
                    if !needed[t] {
                        stack.push(t)
                    }
                });
            }
        }
        let order: Vec<usize> = set
            .evaluation_order()
            .iter()
            .copied()
            .filter(|&c| needed[c])
            .collect();
        let statics = self.static_bitsets(program);

        let n = self.len();
        let selected = |p: usize| match opts.partition {
            None => true,
            Some((i, parts)) => self
                .person_id(p)
                .is_some_and(|id| fnv1a64(id.as_bytes()) % parts == i),
        };
        let threads = match opts.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            t => t,
        }
        .clamp(1, n.max(1));
        let chunk = n.div_ceil(threads).max(1);
        let run = |range: std::ops::Range<usize>| -> Vec<Vec<u32>> {
            let mut scratch = Scratch::new();
            let mut out = vec![Vec::new(); requested.len()];
            for p in range {
                if !selected(p) {
                    continue;
                }
                let subject = Subject {
                    props: self.person_props(p),
                    events: self.person_events(p),
                    who: Who::Indexed {
                        index: p,
                        statics: &statics,
                    },
                };
                program.prepare(&mut scratch, now);
                for &c in &order {
                    program.member(c, &subject, &mut scratch, now);
                }
                for (k, &c) in requested.iter().enumerate() {
                    if program.member(c, &subject, &mut scratch, now) {
                        out[k].push(p as u32);
                    }
                }
            }
            out
        };
        let parts: Vec<Vec<Vec<u32>>> = if threads == 1 {
            vec![run(0..n)]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let range = (t * chunk).min(n)..((t + 1) * chunk).min(n);
                        let run = &run;
                        scope.spawn(move || run(range))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_default())
                    .collect()
            })
        };
        let mut members = Members::new();
        for (k, &c) in requested.iter().enumerate() {
            let mut ids: Vec<String> = parts
                .iter()
                .flat_map(|part| part[k].iter())
                .filter_map(|&p| self.person_id(p as usize).map(str::to_string))
                .collect();
            ids.sort_unstable();
            members.insert(set.cohorts()[c].id, ids);
        }
        Ok(members)
    }

    /// Compiles a set against this dataset's names.
    ///
    /// # Errors
    /// As [`Program::compile`].
    pub fn compile(&self, set: &CohortSet) -> Result<Program, Error> {
        Program::compile(set, &self.symbols)
    }

    /// Static member lists resolved to person bitsets, per cohort position (empty for others).
    fn static_bitsets(&self, program: &Program) -> Vec<Vec<u64>> {
        let words = self.len().div_ceil(64);
        program
            .cohorts
            .iter()
            .map(|c| match c {
                CohortCode::Static(members) => {
                    let mut bits = vec![0u64; words];
                    for m in members {
                        if let Some(p) = self.resolve(m) {
                            bits[p / 64] |= 1 << (p % 64);
                        }
                    }
                    bits
                }
                _ => Vec::new(),
            })
            .collect()
    }
}
