//! Resource limits that keep hostile cohort definitions from exhausting memory or time
//! (`CLI.md` §3). Each exceeded limit is an `invalid_filter` error that names it.

/// Default maximum group nesting depth (the root group is depth 1).
pub const MAX_DEPTH: usize = 32;
/// Default maximum number of groups and leaves in one cohort's tree.
pub const MAX_NODES: usize = 10_000;
/// Default maximum number of cohorts in one set.
pub const MAX_COHORTS: usize = 100_000;
/// Default maximum regex pattern length in bytes.
pub const MAX_REGEX_LEN: usize = 10_000;
/// Default maximum compiled regex size in bytes (`RegexBuilder::size_limit`).
pub const MAX_REGEX_SIZE: usize = 1 << 20;
/// Lazy-DFA cache size per regex (`RegexBuilder::dfa_size_limit`); caps memory, never an error.
pub const REGEX_DFA_SIZE: usize = 2 << 20;
/// Default maximum length in bytes of any string in a filter.
pub const MAX_STRING_LEN: usize = 64 * 1024;
/// Default maximum number of elements in a list value.
pub const MAX_LIST_LEN: usize = 100_000;
/// Default maximum of `time_value`, `seq_time_value`, `operator_value` and `min_periods`.
pub const MAX_INTEGER: u64 = 1_000_000;
/// Default maximum of `total_periods`.
pub const MAX_TOTAL_PERIODS: u64 = 1_000;

/// Configurable limits; [`Limits::default`] gives the documented defaults. Change a field on a
/// default value to move one limit:
///
/// ```
/// let mut limits = cohort_engine::Limits::default();
/// limits.max_depth = 8;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Maximum group nesting depth.
    pub max_depth: usize,
    /// Maximum groups plus leaves per cohort.
    pub max_nodes: usize,
    /// Maximum cohorts per set.
    pub max_cohorts: usize,
    /// Maximum regex pattern length in bytes.
    pub max_regex_len: usize,
    /// Maximum compiled regex size in bytes.
    pub max_regex_size: usize,
    /// Maximum length of any filter string in bytes.
    pub max_string_len: usize,
    /// Maximum elements in a list value.
    pub max_list_len: usize,
    /// Maximum of window sizes, counts and `min_periods`.
    pub max_integer: u64,
    /// Maximum of `total_periods`.
    pub max_total_periods: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_depth: MAX_DEPTH,
            max_nodes: MAX_NODES,
            max_cohorts: MAX_COHORTS,
            max_regex_len: MAX_REGEX_LEN,
            max_regex_size: MAX_REGEX_SIZE,
            max_string_len: MAX_STRING_LEN,
            max_list_len: MAX_LIST_LEN,
            max_integer: MAX_INTEGER,
            max_total_periods: MAX_TOTAL_PERIODS,
        }
    }
}
