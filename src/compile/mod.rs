//! Stage four: a validated [`CohortSet`] becomes a [`Program`] — a flat, interned, ready-to-run
//! form (`model` → `ast` → `graph` → **`compile`** → `eval`).
//!
//! What is done here once so evaluation never has to: property keys and event names become
//! [`Sym`] ids of the data's symbol table; regexes are built; needles are lower-cased (and
//! packed in registers' shape when short); dates, numbers and versions are parsed; relative
//! windows become time slots bound to `now` once per evaluation; one-child groups are folded;
//! AND/OR children are ordered cheap-first (person leaves, then cohort references, then
//! behavioral scans — leaves are pure, so order does not change results), and each group's
//! leading person leaves are copied out, by key, as a run the single-person path decides in one
//! pass over the person's properties.

use std::collections::{HashMap, HashSet};
use std::fmt;

use regex::Regex;

use crate::ast::{
    Behavior, BehavioralLeaf, CountOp, Definition, FilterValue, Group, GroupOp, Leaf,
    Node as AstNode, Operator, PropertyFilter, Scalar, Since, Span,
};
use crate::error::Error;
use crate::intern::{Sym, Symbols};
use crate::semver::Version;
use crate::set::CohortSet;
use crate::short::Needles;
use crate::time::DateSpec;
use crate::value::lower;

/// Index of a node in [`Program`]'s node table.
pub(crate) type NodeId = u32;

/// A compiled node. `negate` is the leaf's `negation` flag (groups never carry one).
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub kind: NodeKind,
    pub negate: bool,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum NodeKind {
    /// `children[start..start + len]`, all true.
    And { start: u32, len: u32 },
    /// `children[start..start + len]`, any true.
    Or { start: u32, len: u32 },
    /// `props[i]` on the person's properties.
    Prop(u32),
    /// `behaviors[i]` on the person's events.
    Behavior(u32),
    /// Membership of cohort position `target`, inverted when `invert` (`not_in`).
    Cohort { target: u32, invert: bool },
}

/// A compiled property condition (person leaf or event filter).
#[derive(Clone, Debug)]
pub(crate) struct PropTest {
    pub key: Sym,
    /// The result when the property is missing (before `negate`).
    pub missing: bool,
    /// Invert the test's result on present values (`is_not`, `not_icontains`, …).
    pub invert: bool,
    /// The event filter's own `negation` (person leaves carry theirs on the node).
    pub negate: bool,
    pub test: Test,
}

/// The test applied to a present value.
#[derive(Clone, Debug)]
pub(crate) enum Test {
    /// Always true (`is_set`).
    Set,
    /// Boolean mode: lower(str(v)) == "true" / "false".
    Bool(bool),
    /// lower(str(v)) equals one of these (lower-cased).
    EqAny(Needles),
    /// As `EqAny`, for long lists.
    EqSet(HashSet<Box<str>>),
    /// lower(str(v)) contains one of these (lower-cased).
    Contains(Needles),
    /// str(v) matches one of these.
    Regex(Regexes),
    /// num(v) OP x.
    Cmp(NumCmp, f64),
    /// lo ≤ num(v) ≤ hi.
    Between(f64, f64),
    /// num(v) < lo or num(v) > hi.
    NotBetween(f64, f64),
    /// date(v) OP the instant of time slot `slot`.
    Date(DateCmp, u32),
    /// semver(v) OP version.
    Semver(NumCmp, Version),
    /// lo ≤ semver(v) < hi.
    SemverRange(Version, Version),
}

/// A regex leaf's patterns (any one matching is a match), and the lazy DFAs a batch runs them
/// as over a dictionary: built by the first batch that needs them, then kept with the program,
/// so later evaluations do not rebuild them.
#[derive(Debug)]
pub(crate) struct Regexes {
    res: Vec<Regex>,
    /// Boxed, so a compiled test stays as small as it was (the per-person path reads tests).
    automata: std::sync::OnceLock<Option<Box<crate::eval::strings::DfaSet>>>,
}

impl Regexes {
    fn new(res: Vec<Regex>) -> Regexes {
        Regexes {
            res,
            automata: Default::default(),
        }
    }

    /// The patterns as lazy DFAs, or `None` when one cannot be built as such (the regexes
    /// decide then).
    pub(crate) fn automata(&self) -> Option<&crate::eval::strings::DfaSet> {
        self.automata
            .get_or_init(|| crate::eval::strings::DfaSet::new(&self.res).map(Box::new))
            .as_deref()
    }
}

impl Clone for Regexes {
    /// The patterns; the copy builds its own automata when it needs them.
    fn clone(&self) -> Regexes {
        Regexes::new(self.res.clone())
    }
}

impl std::ops::Deref for Regexes {
    type Target = [Regex];
    fn deref(&self) -> &[Regex] {
        &self.res
    }
}

/// Comparisons of numbers and versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NumCmp {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl NumCmp {
    #[inline]
    pub fn test<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            NumCmp::Eq => a == b,
            NumCmp::Ne => a != b,
            NumCmp::Gt => a > b,
            NumCmp::Gte => a >= b,
            NumCmp::Lt => a < b,
            NumCmp::Lte => a <= b,
        }
    }
}

/// Date comparisons (§B.8): strictly before, strictly after, same instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DateCmp {
    Before,
    After,
    Exact,
}

/// A time bound that depends on `now`, resolved once per evaluation instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum TimeExpr {
    /// now − span.
    Back(Span),
    /// A filter date (absolute, or relative to now).
    Date(DateSpec),
}

/// A compiled behavioral leaf.
#[derive(Clone, Debug)]
pub(crate) struct BehaviorTest {
    pub event: Sym,
    pub filters: Vec<PropTest>,
    pub kind: BehaviorKind,
}

/// Window bounds are time slots (see [`TimeExpr`]).
#[derive(Clone, Debug)]
pub(crate) enum BehaviorKind {
    Performed {
        since: u32,
    },
    Multiple {
        since: u32,
        op: CountOp,
        value: u64,
    },
    FirstTime {
        start: u32,
    },
    Stopped {
        start: u32,
        seq: u32,
    },
    Restarted {
        start: u32,
        seq: u32,
    },
    Sequence {
        start: u32,
        seq_event: Sym,
        within: Span,
    },
    /// Slots `bounds..=bounds + total` hold back(time·k) for k = 1..=total (k = 0 is now).
    Regularly {
        bounds: u32,
        op: CountOp,
        value: u64,
        min_periods: u64,
        total: u64,
    },
}

impl BehaviorKind {
    /// The time slots this condition reads (without allocating: trackers ask per event).
    pub(crate) fn slots(&self) -> impl Iterator<Item = u32> + Clone {
        let (pair, range) = match *self {
            BehaviorKind::Performed { since } | BehaviorKind::Multiple { since, .. } => {
                ([Some(since), None], 0..0)
            }
            BehaviorKind::FirstTime { start } | BehaviorKind::Sequence { start, .. } => {
                ([Some(start), None], 0..0)
            }
            BehaviorKind::Stopped { start, seq } | BehaviorKind::Restarted { start, seq } => {
                ([Some(start), Some(seq)], 0..0)
            }
            BehaviorKind::Regularly { bounds, total, .. } => {
                ([None, None], bounds..bounds + total as u32)
            }
        };
        pair.into_iter().flatten().chain(range)
    }
}

/// What a cohort's own filter tree reads, found once at compile time so that nothing walks the
/// tree per evaluation: the cohorts it references directly (ascending, once each), and its
/// time-dependent leaves (behavioral leaves, person date comparisons), which its validity
/// horizon follows.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reads {
    pub refs: Box<[u32]>,
    pub timed: Box<[NodeKind]>,
}

/// How a cohort's membership is decided.
#[derive(Clone, Debug)]
pub(crate) enum CohortCode {
    /// Evaluate the tree rooted at this node.
    Dynamic(NodeId),
    /// Membership is a stored list (person ids or distinct ids).
    Static(HashSet<Box<str>>),
    /// Deleted: no members.
    Deleted,
}

/// A compiled cohort set, bound to one symbol table.
#[derive(Clone, Debug)]
pub struct Program {
    pub(crate) set: CohortSet,
    pub(crate) cohorts: Vec<CohortCode>,
    /// Longest chain of references below each cohort (0 = none).
    pub(crate) height: Vec<u32>,
    /// Position of each cohort in the set's evaluation order.
    pub(crate) rank: Vec<u32>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) children: Vec<NodeId>,
    pub(crate) props: Vec<PropTest>,
    pub(crate) behaviors: Vec<BehaviorTest>,
    pub(crate) times: Vec<TimeExpr>,
    /// A process-unique id, so a [`crate::Scratch`] knows which program its cached state is for.
    pub(crate) serial: u64,
    /// The identity of the name tables the program was compiled against ([`Symbols::id`]).
    pub(crate) names: u64,
    /// The node of every leaf, by (cohort position, the leaf's JSON path), for explanations.
    pub(crate) leaf_nodes: HashMap<(u32, String), NodeId>,
    /// Per cohort position: the cohorts and time-dependent leaves its tree reads.
    pub(crate) reads: Vec<Reads>,
    /// Per node: an AND / OR's leading person leaves, `run_props[start..start + len]`, which the
    /// single-person evaluator decides in one pass over the person's properties; `(0, 0)` for
    /// other nodes.
    pub(crate) runs: Vec<(u32, u32)>,
    /// The person leaves of every run, keys ascending, each with its node's `negation` folded
    /// into `negate`.
    pub(crate) run_props: Vec<PropTest>,
    /// Per cohort position: its gate, the conjuncts of its root AND that read only person
    /// properties and not the time (see [`Program::gate_closed`]); empty when it has none.
    pub(crate) gates: Vec<Box<[NodeId]>>,
    /// Per cohort position (so by ascending id): how the single-person path enters it.
    pub(crate) entries: Box<[Entry]>,
}

/// Everything the single-person path reads to enter a cohort, in one place: a call finds the
/// cohort by id here and starts on its root group, without chasing the set, the cohort's code,
/// its height, its root node and the root's run one after another.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    /// The cohort's id (entries are sorted by it).
    pub id: crate::CohortId,
    /// The root group of a dynamic cohort shallow enough to evaluate by recursion; `None` for
    /// any other cohort, which takes the general path.
    pub root: Option<RootGroup>,
}

/// A dynamic cohort's root AND / OR, with its run of person leaves.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RootGroup {
    /// `children[start..start + len]`.
    pub start: u32,
    pub len: u32,
    /// An OR (else an AND).
    pub any: bool,
    /// The root's own negation.
    pub negate: bool,
    /// The root's run: `run_props[run.0..run.0 + run.1]`, the first `run.1` children.
    pub run: (u32, u32),
}

/// The single-person entries of `cohorts` (positions in `set` order).
fn entries(
    set: &CohortSet,
    cohorts: &[CohortCode],
    height: &[u32],
    nodes: &[Node],
    runs: &[(u32, u32)],
) -> Box<[Entry]> {
    set.cohorts()
        .iter()
        .zip(cohorts)
        .zip(height)
        .map(|((cohort, code), &h)| Entry {
            id: cohort.id,
            root: match *code {
                CohortCode::Dynamic(root) if h <= MAX_RECURSIVE_HEIGHT => {
                    root_group(&nodes[root as usize], runs[root as usize])
                }
                _ => None,
            },
        })
        .collect()
}

/// Root node `n` with its run, when it is an AND / OR.
fn root_group(n: &Node, run: (u32, u32)) -> Option<RootGroup> {
    let (NodeKind::And { start, len } | NodeKind::Or { start, len }) = n.kind else {
        return None;
    };
    Some(RootGroup {
        start,
        len,
        any: matches!(n.kind, NodeKind::Or { .. }),
        negate: n.negate,
        run,
    })
}

/// Above this many levels of references, dependencies are evaluated iteratively in evaluation
/// order before the cohort itself instead of by recursion.
pub(crate) const MAX_RECURSIVE_HEIGHT: u32 = 48;

struct Compiler<'a> {
    symbols: &'a Symbols,
    nodes: Vec<Node>,
    children: Vec<NodeId>,
    props: Vec<PropTest>,
    behaviors: Vec<BehaviorTest>,
    times: Vec<TimeExpr>,
    positions: &'a dyn Fn(crate::CohortId) -> Option<usize>,
    current: u32,
    leaf_nodes: HashMap<(u32, String), NodeId>,
}

/// Relative cost of evaluating a node, for cheap-first ordering.
fn cost(n: &AstNode) -> u32 {
    match n {
        AstNode::Leaf(Leaf::Person(p)) => match p.operator {
            Operator::Regex | Operator::NotRegex => 3,
            _ => 1,
        },
        AstNode::Leaf(Leaf::Cohort(_)) => 2,
        AstNode::Leaf(Leaf::Behavioral(_)) => 10,
        AstNode::Group(g) => g.children.iter().map(cost).max().unwrap_or(1),
    }
}

/// True for a person leaf that compares with the time (a date operator).
fn is_date(props: &[PropTest], i: u32) -> bool {
    matches!(props[i as usize].test, Test::Date(..))
}

/// The conjuncts of `root` (an AND, not negated) whose subtrees hold only person leaves that do
/// not compare with the time: while one of them is false, so is the cohort, whatever events
/// arrive and whenever, until the person's properties change.
fn gate(root: NodeId, nodes: &[Node], children: &[NodeId], props: &[PropTest]) -> Box<[NodeId]> {
    let timeless = |c: NodeId| {
        let mut timeless = true;
        for_each_leaf_in(c, nodes, children, &mut |leaf| {
            timeless &= matches!(leaf, NodeKind::Prop(i) if !is_date(props, i));
        });
        timeless
    };
    let node = &nodes[root as usize];
    match node.kind {
        NodeKind::And { start, len } if !node.negate => children
            [start as usize..(start + len) as usize]
            .iter()
            .copied()
            .filter(|&c| timeless(c))
            .collect(),
        _ => Box::default(),
    }
}

/// Calls `f` with every leaf under `root` (`nodes` and `children` as in [`Program`]).
pub(crate) fn for_each_leaf_in(
    root: NodeId,
    nodes: &[Node],
    children: &[NodeId],
    f: &mut dyn FnMut(NodeKind),
) {
    let mut stack: smallvec::SmallVec<[NodeId; 32]> = smallvec::SmallVec::new();
    stack.push(root);
    while let Some(n) = stack.pop() {
        match nodes[n as usize].kind {
            NodeKind::And { start, len } | NodeKind::Or { start, len } => {
                stack.extend_from_slice(&children[start as usize..(start + len) as usize])
            }
            leaf => f(leaf),
        }
    }
}

/// Every AND / OR's run (see [`Program::runs`]): its leading children that are person leaves
/// other than regexes (the cheap ones: children are sorted by cost), ordered by key. The run's
/// order is its own: the batch path keeps the children's order, in which an AND narrows its
/// candidates, and leaves are pure, so the order changes no result.
fn person_runs(
    nodes: &[Node],
    children: &[NodeId],
    props: &[PropTest],
) -> (Vec<(u32, u32)>, Vec<PropTest>) {
    let mut run_props: Vec<PropTest> = Vec::new();
    let runs = nodes
        .iter()
        .map(|n| match n.kind {
            NodeKind::And { start, len } | NodeKind::Or { start, len } => {
                let first = run_props.len();
                for &c in &children[start as usize..(start + len) as usize] {
                    let child = &nodes[c as usize];
                    let NodeKind::Prop(i) = child.kind else { break };
                    let mut t = props[i as usize].clone();
                    if matches!(t.test, Test::Regex(_)) {
                        break;
                    }
                    t.negate ^= child.negate;
                    run_props.push(t);
                }
                run_props[first..].sort_by_key(|t| t.key);
                (first as u32, (run_props.len() - first) as u32)
            }
            _ => (0, 0),
        })
        .collect();
    (runs, run_props)
}

/// The direct references and time-dependent leaves under `root`.
fn reads(root: NodeId, nodes: &[Node], children: &[NodeId], props: &[PropTest]) -> Reads {
    let (mut refs, mut timed) = (Vec::new(), Vec::new());
    for_each_leaf_in(root, nodes, children, &mut |leaf| match leaf {
        NodeKind::Cohort { target, .. } => refs.push(target),
        NodeKind::Behavior(_) => timed.push(leaf),
        NodeKind::Prop(i) if is_date(props, i) => timed.push(leaf),
        _ => {}
    });
    refs.sort_unstable();
    refs.dedup();
    Reads {
        refs: refs.into(),
        timed: timed.into(),
    }
}

impl Program {
    /// Compiles every cohort of `set` against `symbols` (the data's key and event-name tables;
    /// names the data lacks compile to ids no value carries).
    ///
    /// # Errors
    /// Only if a regex that validated fails to build again (never expected).
    pub fn compile(set: &CohortSet, symbols: &Symbols) -> Result<Program, Error> {
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let positions = |id| set.position(id);
        let mut c = Compiler {
            symbols,
            nodes: Vec::new(),
            children: Vec::new(),
            props: Vec::new(),
            behaviors: Vec::new(),
            times: Vec::new(),
            positions: &positions,
            current: 0,
            leaf_nodes: HashMap::new(),
        };
        let mut cohorts = Vec::with_capacity(set.len());
        for (pos, cohort) in set.cohorts().iter().enumerate() {
            c.current = pos as u32;
            cohorts.push(match &cohort.definition {
                Definition::Dynamic(g) => {
                    let root = c
                        .group(g)
                        .map_err(|m| Error::filter(cohort.id, g.path.clone(), m))?;
                    CohortCode::Dynamic(root)
                }
                Definition::Static(members) => {
                    CohortCode::Static(members.iter().map(|m| m.as_str().into()).collect())
                }
                Definition::Deleted => CohortCode::Deleted,
            });
        }
        let mut height = vec![0u32; set.len()];
        for &i in set.evaluation_order() {
            let h = set.cohorts()[i]
                .references()
                .iter()
                .filter_map(|t| set.position(*t))
                .map(|j| height[j].saturating_add(1))
                .max()
                .unwrap_or(0);
            height[i] = h;
        }
        let mut rank = vec![0u32; set.len()];
        for (r, &i) in set.evaluation_order().iter().enumerate() {
            rank[i] = r as u32;
        }
        let (reads, gates) = cohorts
            .iter()
            .map(|code| match *code {
                CohortCode::Dynamic(root) => (
                    reads(root, &c.nodes, &c.children, &c.props),
                    gate(root, &c.nodes, &c.children, &c.props),
                ),
                _ => Default::default(),
            })
            .unzip();
        let (runs, run_props) = person_runs(&c.nodes, &c.children, &c.props);
        let entries = entries(set, &cohorts, &height, &c.nodes, &runs);
        Ok(Program {
            entries,
            reads,
            gates,
            set: set.clone(),
            cohorts,
            height,
            rank,
            runs,
            run_props,
            nodes: c.nodes,
            children: c.children,
            props: c.props,
            behaviors: c.behaviors,
            times: c.times,
            serial: SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            names: symbols.id(),
            leaf_nodes: c.leaf_nodes,
        })
    }

    /// The cohort set this program was compiled from.
    pub fn cohort_set(&self) -> &CohortSet {
        &self.set
    }
}

impl Compiler<'_> {
    fn push(&mut self, kind: NodeKind, negate: bool) -> NodeId {
        self.nodes.push(Node { kind, negate });
        (self.nodes.len() - 1) as NodeId
    }

    fn time(&mut self, t: TimeExpr) -> u32 {
        if let Some(i) = self.times.iter().position(|x| *x == t) {
            return i as u32;
        }
        self.times.push(t);
        (self.times.len() - 1) as u32
    }

    fn node(&mut self, n: &AstNode) -> Result<NodeId, String> {
        match n {
            AstNode::Group(g) => self.group(g),
            AstNode::Leaf(Leaf::Person(p)) => {
                let t = self.prop(p)?;
                self.props.push(t);
                let i = (self.props.len() - 1) as u32;
                let id = self.push(NodeKind::Prop(i), p.negation);
                self.leaf_nodes.insert((self.current, p.path.clone()), id);
                Ok(id)
            }
            AstNode::Leaf(Leaf::Behavioral(b)) => {
                let t = self.behavior(b)?;
                self.behaviors.push(t);
                let i = (self.behaviors.len() - 1) as u32;
                let id = self.push(NodeKind::Behavior(i), b.negation);
                self.leaf_nodes.insert((self.current, b.path.clone()), id);
                Ok(id)
            }
            AstNode::Leaf(Leaf::Cohort(c)) => {
                let target = (self.positions)(c.target)
                    .ok_or_else(|| format!("cohort {} is not in the set", c.target))?;
                let id = self.push(
                    NodeKind::Cohort {
                        target: target as u32,
                        invert: c.not_in,
                    },
                    c.negation,
                );
                self.leaf_nodes.insert((self.current, c.path.clone()), id);
                Ok(id)
            }
        }
    }

    fn group(&mut self, g: &Group) -> Result<NodeId, String> {
        if g.children.len() == 1 {
            return self.node(&g.children[0]);
        }
        let mut order: Vec<&AstNode> = g.children.iter().collect();
        order.sort_by_key(|n| cost(n));
        let ids = order
            .into_iter()
            .map(|n| self.node(n))
            .collect::<Result<Vec<_>, _>>()?;
        let start = self.children.len() as u32;
        let len = ids.len() as u32;
        self.children.extend(ids);
        let kind = match g.op {
            GroupOp::And => NodeKind::And { start, len },
            GroupOp::Or => NodeKind::Or { start, len },
        };
        Ok(self.push(kind, false))
    }

    fn prop(&mut self, p: &PropertyFilter) -> Result<PropTest, String> {
        use Operator::*;
        let key = self.symbols.keys.get(&p.key);
        let missing = p.operator.missing_result();
        let invert = matches!(
            p.operator,
            IsNot | NotIn | NotIContains | NotIContainsMulti | NotRegex | IsNotSet
        );
        let test = match (&p.value, p.operator) {
            (_, IsSet | IsNotSet) => Test::Set,
            (FilterValue::Scalars { items, .. }, Exact | IsNot | In | NotIn) => exact_test(items),
            (
                FilterValue::Scalars { items, .. },
                IContains | NotIContains | IContainsMulti | NotIContainsMulti,
            ) => Test::Contains(Needles::new(
                items
                    .iter()
                    .map(|s| lower(&s.string_form()).into_boxed_str())
                    .collect(),
            )),
            (FilterValue::Scalars { regexes, .. }, Regex | NotRegex) => {
                Test::Regex(Regexes::new(regexes.iter().map(|r| r.0.clone()).collect()))
            }
            (FilterValue::Number(x, _), Gt) => Test::Cmp(NumCmp::Gt, *x),
            (FilterValue::Number(x, _), Gte | Min) => Test::Cmp(NumCmp::Gte, *x),
            (FilterValue::Number(x, _), Lt) => Test::Cmp(NumCmp::Lt, *x),
            (FilterValue::Number(x, _), Lte | Max) => Test::Cmp(NumCmp::Lte, *x),
            (FilterValue::Range(lo, hi, ..), Between) => Test::Between(*lo, *hi),
            (FilterValue::Range(lo, hi, ..), NotBetween) => Test::NotBetween(*lo, *hi),
            (FilterValue::Date(d, _), op) => {
                let slot = self.time(TimeExpr::Date(*d));
                let cmp = match op {
                    IsDateBefore => DateCmp::Before,
                    IsDateAfter => DateCmp::After,
                    _ => DateCmp::Exact,
                };
                Test::Date(cmp, slot)
            }
            (FilterValue::Version(v, _), op) => {
                let cmp = match op {
                    SemverEq => NumCmp::Eq,
                    SemverNeq => NumCmp::Ne,
                    SemverGt => NumCmp::Gt,
                    SemverGte => NumCmp::Gte,
                    SemverLt => NumCmp::Lt,
                    _ => NumCmp::Lte,
                };
                Test::Semver(cmp, *v)
            }
            (FilterValue::VersionRange(lo, hi, _), _) => Test::SemverRange(*lo, *hi),
            (value, op) => return Err(format!("operator {} cannot take {value:?}", op.as_str())),
        };
        Ok(PropTest {
            key,
            missing,
            invert,
            negate: false,
            test,
        })
    }

    fn behavior(&mut self, b: &BehavioralLeaf) -> Result<BehaviorTest, String> {
        let event = self.symbols.events.get(&b.event);
        let filters = b
            .event_filters
            .iter()
            .map(|f| {
                let mut t = self.prop(f)?;
                t.negate = f.negation;
                Ok(t)
            })
            .collect::<Result<Vec<_>, String>>()?;
        let since = |c: &mut Self, s: &Since| match s {
            Since::Back(span) => c.time(TimeExpr::Back(*span)),
            Since::Explicit(d, _) => c.time(TimeExpr::Date(*d)),
        };
        let kind = match &b.behavior {
            Behavior::PerformedEvent { since: s } => BehaviorKind::Performed {
                since: since(self, s),
            },
            Behavior::PerformedEventMultiple {
                since: s,
                op,
                value,
            } => BehaviorKind::Multiple {
                since: since(self, s),
                op: *op,
                value: *value,
            },
            Behavior::PerformedEventFirstTime { time } => BehaviorKind::FirstTime {
                start: self.time(TimeExpr::Back(*time)),
            },
            Behavior::StoppedPerformingEvent { time, seq } => BehaviorKind::Stopped {
                start: self.time(TimeExpr::Back(*time)),
                seq: self.time(TimeExpr::Back(*seq)),
            },
            Behavior::RestartedPerformingEvent { time, seq } => BehaviorKind::Restarted {
                start: self.time(TimeExpr::Back(*time)),
                seq: self.time(TimeExpr::Back(*seq)),
            },
            Behavior::PerformedEventSequence {
                time,
                seq_event,
                seq,
            } => BehaviorKind::Sequence {
                start: self.time(TimeExpr::Back(*time)),
                seq_event: self.symbols.events.get(seq_event),
                within: *seq,
            },
            Behavior::PerformedEventRegularly {
                time,
                op,
                value,
                min_periods,
                total_periods,
            } => {
                // Period bounds are consecutive slots, pushed without de-duplication.
                let bounds = self.times.len() as u32;
                for k in 1..=*total_periods {
                    self.times.push(TimeExpr::Back(Span {
                        n: time.n.saturating_mul(k),
                        unit: time.unit,
                    }));
                }
                BehaviorKind::Regularly {
                    bounds,
                    op: *op,
                    value: *value,
                    min_periods: *min_periods,
                    total: *total_periods,
                }
            }
        };
        Ok(BehaviorTest {
            event,
            filters,
            kind,
        })
    }
}

/// `exact` with its boolean, list and scalar modes (§B.3).
fn exact_test(items: &[Scalar]) -> Test {
    if let Some(t) = crate::ast::boolean_target(items) {
        return Test::Bool(t);
    }
    let needles: Vec<Box<str>> = items
        .iter()
        .map(|s| lower(&s.string_form()).into_boxed_str())
        .collect();
    if needles.len() > 16 {
        Test::EqSet(needles.into_iter().collect())
    } else {
        Test::EqAny(Needles::new(needles))
    }
}

impl fmt::Display for Program {
    /// Prints the plan: one line per cohort with its compiled tree.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.cohorts.iter().enumerate() {
            let id = self.set.cohorts()[i].id;
            match c {
                CohortCode::Deleted => writeln!(f, "cohort {id}: deleted")?,
                CohortCode::Static(m) => writeln!(f, "cohort {id}: static, {} members", m.len())?,
                CohortCode::Dynamic(root) => {
                    write!(f, "cohort {id}: ")?;
                    self.fmt_node(*root, f)?;
                    writeln!(f)?;
                }
            }
        }
        Ok(())
    }
}

impl Program {
    fn fmt_node(&self, id: NodeId, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = &self.nodes[id as usize];
        if n.negate {
            f.write_str("NOT ")?;
        }
        match n.kind {
            NodeKind::And { start, len } | NodeKind::Or { start, len } => {
                let op = if matches!(n.kind, NodeKind::And { .. }) {
                    " AND "
                } else {
                    " OR "
                };
                f.write_str("(")?;
                for (k, c) in self.children[start as usize..(start + len) as usize]
                    .iter()
                    .enumerate()
                {
                    if k > 0 {
                        f.write_str(op)?;
                    }
                    self.fmt_node(*c, f)?;
                }
                f.write_str(")")
            }
            NodeKind::Prop(i) => write!(
                f,
                "prop#{}({:?})",
                self.props[i as usize].key.0, self.props[i as usize].test
            ),
            NodeKind::Behavior(i) => {
                write!(f, "behavior#{i}({:?})", self.behaviors[i as usize].kind)
            }
            NodeKind::Cohort { target, invert } => {
                let id = self.set.cohorts()[target as usize].id;
                write!(f, "{}cohort({id})", if invert { "not_in " } else { "in " })
            }
        }
    }
}
