//! The cohorts of one share of a batch, handed out to threads as their references are done,
//! costliest first.
//!
//! The share's own thread takes its cohorts one by one; a thread done with its own share takes
//! those still waiting here. So a thread that starts late (on a virtual machine a woken thread
//! can start milliseconds after the spawn) leaves cohorts to the others instead of holding up
//! the batch, and costliest-first keeps the last ones taken small. A thread never waits while
//! holding a cohort, so no order of events deadlocks.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// The cohorts left to evaluate and which are done, shared by the threads of one batch.
pub(crate) struct Schedule<'a> {
    /// Per cohort position: the positions it references (which must be done first).
    refs: Vec<&'a [u32]>,
    /// Per cohort position: its estimated work.
    costs: &'a [u64],
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    /// Cohorts not yet taken.
    waiting: Vec<usize>,
    /// Per cohort position: whether its result is in place. Cohorts not scheduled count as
    /// done (they are not this batch's to wait for).
    done: Vec<bool>,
    /// A thread panicked: the others stop taking cohorts (its panic reaches the caller).
    failed: bool,
}

impl<'a> Schedule<'a> {
    /// The cohorts of `order`, with their references and the costs of every position.
    pub(crate) fn new(
        order: &[usize],
        refs: impl Fn(usize) -> &'a [u32],
        costs: &'a [u64],
    ) -> Schedule<'a> {
        let len = costs.len();
        let mut done = vec![true; len];
        for &c in order {
            done[c] = false;
        }
        Schedule {
            refs: (0..len).map(refs).collect(),
            costs,
            state: Mutex::new(State {
                waiting: order.to_vec(),
                done,
                failed: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes cohorts until none is left, calling `work` on each (this thread's part). With
    /// `wait`, waits for a cohort whose references another thread is evaluating; without,
    /// returns when no cohort is ready.
    pub(crate) fn run(&self, wait: bool, mut work: impl FnMut(usize)) {
        while let Some(c) = self.take(wait) {
            // Marks the schedule failed if `work` panics, so the other threads stop waiting.
            struct Guard<'s, 'a>(&'s Schedule<'a>);
            impl Drop for Guard<'_, '_> {
                fn drop(&mut self) {
                    if std::thread::panicking() {
                        self.0.lock().failed = true;
                        self.0.changed.notify_all();
                    }
                }
            }
            let guard = Guard(self);
            work(c);
            drop(guard);
            self.lock().done[c] = true;
            self.changed.notify_all();
        }
    }

    /// Waits until every cohort is done: `false` if a thread failed instead.
    pub(crate) fn finish(&self) -> bool {
        let mut state = self.lock();
        loop {
            if state.failed {
                return false;
            }
            // Cohorts still waiting are not done either.
            if state.done.iter().all(|&d| d) {
                return true;
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The costliest waiting cohort whose references are done, waiting (with `wait`) for one to
    /// become ready; `None` when every cohort is taken (or a thread failed, or, without `wait`,
    /// none is ready).
    fn take(&self, wait: bool) -> Option<usize> {
        let mut state = self.lock();
        loop {
            if state.failed || state.waiting.is_empty() {
                return None;
            }
            let ready = state
                .waiting
                .iter()
                .enumerate()
                .filter(|&(_, &c)| self.refs[c].iter().all(|&t| state.done[t as usize]))
                .max_by_key(|&(_, &c)| self.costs[c])
                .map(|(k, _)| k);
            if let Some(k) = ready {
                return Some(state.waiting.swap_remove(k));
            }
            if !wait {
                return None;
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every cohort runs once, after its references, on any number of threads.
    #[test]
    fn runs_each_cohort_once_after_its_references() {
        // 0 ← 2 ← 4, 1 ← 3, 5 alone; 6 is not scheduled.
        let refs: Vec<Vec<u32>> =
            vec![vec![], vec![], vec![0], vec![1], vec![2, 1], vec![], vec![]];
        for threads in 1..=4 {
            let schedule = Schedule::new(
                &[0, 1, 2, 3, 4, 5],
                |c| refs[c].as_slice(),
                &[0, 1, 2, 3, 4, 5, 6],
            );
            let finished: Vec<AtomicUsize> = (0..7).map(|_| AtomicUsize::new(0)).collect();
            let clock = AtomicUsize::new(1);
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        schedule.run(true, |c| {
                            for &t in &refs[c] {
                                assert_ne!(finished[t as usize].load(Ordering::SeqCst), 0);
                            }
                            let at = clock.fetch_add(1, Ordering::SeqCst);
                            assert_eq!(finished[c].swap(at, Ordering::SeqCst), 0, "{c} twice");
                        })
                    });
                }
            });
            let ran: Vec<usize> = finished.iter().map(|f| f.load(Ordering::SeqCst)).collect();
            assert!(ran[..6].iter().all(|&at| at > 0), "{ran:?}");
            assert_eq!(ran[6], 0);
        }
    }

    /// On one thread the costliest ready cohort goes first.
    #[test]
    fn costliest_ready_cohort_first() {
        let refs: Vec<Vec<u32>> = vec![vec![], vec![], vec![0]];
        let schedule = Schedule::new(&[0, 1, 2], |c| refs[c].as_slice(), &[1, 5, 9]);
        let mut seen = Vec::new();
        schedule.run(true, |c| seen.push(c));
        // 2 is the costliest but waits for 0; 1 costs more than 0.
        assert_eq!(seen, [1, 0, 2]);
    }

    /// A panicking cohort stops the other threads instead of leaving them waiting.
    #[test]
    fn a_panic_does_not_leave_threads_waiting() {
        let refs: Vec<Vec<u32>> = vec![vec![], vec![0], vec![0]];
        let schedule = Schedule::new(&[0, 1, 2], |c| refs[c].as_slice(), &[0, 1, 2]);
        let work = || {
            schedule.run(true, |c| {
                if c == 0 {
                    panic!("cohort 0 fails");
                }
            })
        };
        let failed = std::thread::scope(|s| {
            let threads = [s.spawn(work), s.spawn(work)];
            threads
                .into_iter()
                .map(|t| t.join().is_err() as usize)
                .sum::<usize>()
        });
        // Whichever thread took cohort 0 failed; the other returned.
        assert_eq!(failed, 1);
    }
}
