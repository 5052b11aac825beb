//! The reference graph between cohorts: unknown targets, cycles and evaluation order.
//!
//! Everything here is iterative (Tarjan's algorithm with an explicit stack, breadth-first cycle
//! naming), so a chain of 100,000 cohorts costs linear time and no deep recursion.

use std::collections::{HashMap, VecDeque};

use crate::ast::parse::Reference;
use crate::error::Error;
use crate::CohortId;

/// One cohort as the graph sees it.
#[derive(Clone, Debug)]
pub struct GraphNode {
    /// The cohort id.
    pub id: CohortId,
    /// Deleted cohorts exist (references to them are not unknown) but have no edges.
    pub deleted: bool,
    /// References from the active definition (empty for static and deleted cohorts).
    pub references: Vec<Reference>,
}

/// The result of analysing a set's references.
#[derive(Debug, Default)]
pub struct Analysis {
    /// One `unknown_cohort` error per leaf referencing an absent id, by cohort id then document
    /// order.
    pub unknown: Vec<Error>,
    /// One `cycle` error per strongly connected component with a cycle, by smallest id.
    pub cycles: Vec<Error>,
    /// Node indices in evaluation order (every cohort after the ones it references); only
    /// meaningful when there are no cycles.
    pub order: Vec<usize>,
}

/// Analyses `nodes` (any order; ids unique).
pub fn analyze(nodes: &[GraphNode]) -> Analysis {
    let index: HashMap<CohortId, usize> =
        nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
    let mut by_id: Vec<usize> = (0..nodes.len()).collect();
    by_id.sort_by_key(|&i| nodes[i].id);

    let mut unknown = Vec::new();
    for &i in &by_id {
        for r in &nodes[i].references {
            if !index.contains_key(&r.target) {
                unknown.push(
                    Error::missing(r.target, format!("cohort {} is not in the set", r.target))
                        .with_cohort(nodes[i].id)
                        .with_path(r.path.clone()),
                );
            }
        }
    }

    // Edges: node → referenced node, sorted by target id, deduplicated.
    let edges: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| {
            if n.deleted {
                return Vec::new();
            }
            let mut out: Vec<usize> = n
                .references
                .iter()
                .filter_map(|r| index.get(&r.target).copied())
                .filter(|&j| !nodes[j].deleted)
                .collect();
            out.sort_by_key(|&j| nodes[j].id);
            out.dedup();
            out
        })
        .collect();

    let sccs = tarjan(&edges);
    let mut cycles: Vec<(CohortId, Error)> = Vec::new();
    let mut order = Vec::with_capacity(nodes.len());
    let mut component = vec![usize::MAX; nodes.len()];
    for (c, scc) in sccs.iter().enumerate() {
        for &v in scc {
            component[v] = c;
        }
    }
    for (c, scc) in sccs.iter().enumerate() {
        let cyclic = scc.len() > 1 || edges[scc[0]].contains(&scc[0]);
        if !cyclic {
            order.push(scc[0]);
            continue;
        }
        let Some(&start) = scc.iter().min_by_key(|&&v| nodes[v].id) else {
            continue;
        };
        let path = shortest_cycle(start, &edges, |v| component[v] == c);
        let ids: Vec<CohortId> = path.iter().map(|&v| nodes[v].id).collect();
        cycles.push((nodes[start].id, Error::cycle_of(ids)));
    }
    cycles.sort_by_key(|(id, _)| *id);
    Analysis {
        unknown,
        cycles: cycles.into_iter().map(|(_, e)| e).collect(),
        order,
    }
}

/// Strongly connected components, each emitted after every component it reaches (so the
/// emission order puts dependencies first). Iterative.
fn tarjan(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    const UNSEEN: usize = usize::MAX;
    let mut idx = vec![UNSEEN; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut out = Vec::new();
    let mut next = 0usize;
    // Call stack frames: (node, next edge position).
    let mut frames: Vec<(usize, usize)> = Vec::new();
    for root in 0..n {
        if idx[root] != UNSEEN {
            continue;
        }
        frames.push((root, 0));
        idx[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut pos)) = frames.last_mut() {
            if *pos < edges[v].len() {
                let w = edges[v][*pos];
                *pos += 1;
                if idx[w] == UNSEEN {
                    idx[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    frames.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(idx[w]);
                }
            } else {
                frames.pop();
                if let Some(&(parent, _)) = frames.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == idx[v] {
                    let mut scc = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        scc.push(w);
                        if w == v {
                            break;
                        }
                    }
                    out.push(scc);
                }
            }
        }
    }
    out
}

/// The shortest cycle through `start` inside the component (`inside`), by breadth-first search
/// visiting neighbours in ascending id order; returned as `start … start`.
fn shortest_cycle(
    start: usize,
    edges: &[Vec<usize>],
    inside: impl Fn(usize) -> bool,
) -> Vec<usize> {
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &edges[v] {
            if !inside(w) {
                continue;
            }
            if w == start {
                let mut path = vec![v];
                let mut cur = v;
                while cur != start {
                    match parent.get(&cur) {
                        Some(&p) => cur = p,
                        None => break,
                    }
                    path.push(cur);
                }
                path.reverse();
                path.push(start);
                return path;
            }
            if w != start && !parent.contains_key(&w) {
                parent.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    vec![start, start]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: CohortId, refs: &[CohortId]) -> GraphNode {
        GraphNode {
            id,
            deleted: false,
            references: refs
                .iter()
                .map(|&t| Reference {
                    path: "filters.properties.values[0].value".into(),
                    target: t,
                })
                .collect(),
        }
    }

    fn cycles(nodes: &[GraphNode]) -> Vec<String> {
        analyze(nodes)
            .cycles
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn names_shortest_cycle_from_smallest_id() {
        assert_eq!(
            cycles(&[node(3, &[7]), node(7, &[12]), node(12, &[3])]),
            ["cycle: cohort 3 → 7 → 12 → 3"]
        );
        assert_eq!(cycles(&[node(5, &[5])]), ["cycle: cohort 5 → 5"]);
        // Two loops through 1: the shorter one is named.
        assert_eq!(
            cycles(&[
                node(1, &[2, 4]),
                node(2, &[3]),
                node(3, &[1]),
                node(4, &[1])
            ]),
            ["cycle: cohort 1 → 4 → 1"]
        );
        // Ties are broken by visiting neighbours in ascending id order.
        assert_eq!(
            cycles(&[node(1, &[3, 2]), node(2, &[1]), node(3, &[1])]),
            ["cycle: cohort 1 → 2 → 1"]
        );
    }

    #[test]
    fn diamond_is_not_a_cycle_and_orders_dependencies_first() {
        let nodes = [node(1, &[2, 3]), node(2, &[4]), node(3, &[4]), node(4, &[])];
        let a = analyze(&nodes);
        assert!(a.cycles.is_empty());
        let pos = |id: CohortId| a.order.iter().position(|&i| nodes[i].id == id).unwrap();
        assert!(pos(4) < pos(2) && pos(4) < pos(3) && pos(2) < pos(1) && pos(3) < pos(1));
    }

    #[test]
    fn long_chain_does_not_overflow() {
        let n = 100_000;
        let nodes: Vec<GraphNode> = (0..n)
            .map(|i| node(i, if i + 1 < n { &[0][..0] } else { &[] }))
            .collect();
        let mut nodes = nodes;
        for i in 0..n - 1 {
            nodes[i as usize] = node(i, &[i + 1]);
        }
        let a = analyze(&nodes);
        assert!(a.cycles.is_empty());
        assert_eq!(a.order.len(), n as usize);
        assert_eq!(nodes[a.order[0]].id, n - 1);
        nodes[(n - 1) as usize] = node(n - 1, &[0]);
        assert_eq!(analyze(&nodes).cycles.len(), 1);
    }

    #[test]
    fn unknown_references_are_reported() {
        let a = analyze(&[node(4, &[99])]);
        assert_eq!(
            a.unknown[0].to_string(),
            "unknown_cohort: cohort 4: filters.properties.values[0].value: cohort 99 is not in the set"
        );
    }
}
