//! The routing graph: which step activates which, derived once from `next`, `needs` and file order.
//!
//! Two kinds of step exist. A *join* step declares `needs:` and becomes ready
//! when every step it needs has completed (a DAG join). Any other step is
//! *routed*: it runs once per arrival, an arrival being the completion of a
//! step whose route points at it. A step routes to its `next:` if it has one,
//! otherwise to the following step in file order unless that one is a join
//! step. The first step is routed to by the run's start.

/// Step indexes and edges, built from resolved references.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Graph {
    /// For each step, the routed (non-join) steps its completion activates.
    pub routes: Vec<Vec<usize>>,
    /// For each step, `Some(needs)` if it is a join step.
    pub joins: Vec<Option<Vec<usize>>>,
    /// For each step, whether its routes are conditional (a review decides
    /// which one is taken), so a loop through it is bounded by its decisions.
    pub conditional: Vec<bool>,
}

/// How one step routes, as declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Route {
    /// To the following step in file order (unless it is a join step).
    #[default]
    FileOrder,
    /// `next:`.
    Next(usize),
    /// A review or an approval routes by its decision: `on_approve` (default: file order),
    /// `on_reject` and `on_timeout` (default: nowhere).
    Decision {
        /// Where an approval goes.
        approve: Option<usize>,
        /// Where a rejection goes.
        reject: Option<usize>,
        /// Where an approval that nobody decided in time goes.
        timeout: Option<usize>,
    },
}

/// How a step that routes by a decision was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    /// Approved.
    Approved,
    /// Rejected.
    Rejected,
    /// Nobody decided before the approval's timeout.
    TimedOut,
}

impl Decided {
    /// Reads the `decision` a review or an approval records in its output.
    pub fn parse(decision: &str) -> Option<Decided> {
        match decision {
            "approve" => Some(Decided::Approved),
            "reject" => Some(Decided::Rejected),
            "timeout" => Some(Decided::TimedOut),
            _ => None,
        }
    }
}

impl Graph {
    /// Builds the graph from each step's resolved `needs` and route.
    pub fn build(needs: &[Option<Vec<usize>>], route: &[Route]) -> Graph {
        let n = needs.len();
        let file_order = |i: usize| (i + 1 < n && needs[i + 1].is_none()).then_some(i + 1);
        let routes = (0..n)
            .map(|i| match route[i] {
                Route::Next(j) => vec![j],
                Route::FileOrder => file_order(i).into_iter().collect(),
                Route::Decision { approve, reject, timeout } => {
                    let mut v: Vec<usize> = approve.or_else(|| file_order(i)).into_iter().collect();
                    for r in [reject, timeout].into_iter().flatten() {
                        if !v.contains(&r) {
                            v.push(r);
                        }
                    }
                    v
                }
            })
            .collect();
        let conditional = route.iter().map(|r| matches!(r, Route::Decision { .. })).collect();
        Graph { routes, joins: needs.to_vec(), conditional }
    }

    /// Where a completed step goes: all its routes, or for a review or an approval the one its
    /// decision picks (a review that gave none counts as a rejection).
    pub fn routes_after(&self, route: &Route, i: usize, decided: Option<Decided>) -> Vec<usize> {
        let n = self.joins.len();
        let file_order = (i + 1 < n && self.joins[i + 1].is_none()).then_some(i + 1);
        match (route, decided) {
            (Route::Decision { approve, .. }, Some(Decided::Approved)) => approve.or(file_order).into_iter().collect(),
            (Route::Decision { timeout, .. }, Some(Decided::TimedOut)) => timeout.iter().copied().collect(),
            (Route::Decision { reject, .. }, _) => reject.iter().copied().collect(),
            _ => self.routes[i].clone(),
        }
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.joins.len()
    }

    /// Whether there are no steps.
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty()
    }

    /// Whether step `i` is routed to by the start of the run.
    pub fn is_start(&self, i: usize) -> bool {
        i == 0 && self.joins.first().is_some_and(Option::is_none)
    }

    /// All edges `from -> to`: routes plus `need -> join step`.
    pub fn edges(&self) -> Vec<Vec<usize>> {
        let mut out = self.routes.clone();
        for (j, needs) in self.joins.iter().enumerate() {
            for &d in needs.iter().flatten() {
                if !out[d].contains(&j) {
                    out[d].push(j);
                }
            }
        }
        out
    }

    /// A cycle as a list of step indexes (first repeated at the end), if any.
    /// Loops through a review's conditional routes are not cycles: the
    /// review's decisions and `max_total_iterations` bound them.
    pub fn find_cycle(&self) -> Option<Vec<usize>> {
        let mut edges = self.edges();
        for (i, conditional) in self.conditional.iter().enumerate() {
            if *conditional {
                let routes = &self.routes[i];
                edges[i].retain(|w| !routes.contains(w));
            }
        }
        // 0 = unvisited, 1 = on the stack, 2 = done.
        let mut color = vec![0u8; self.len()];
        let mut stack: Vec<usize> = Vec::new();
        fn dfs(v: usize, edges: &[Vec<usize>], color: &mut [u8], stack: &mut Vec<usize>) -> Option<Vec<usize>> {
            color[v] = 1;
            stack.push(v);
            for &w in &edges[v] {
                if color[w] == 1 {
                    let start = stack.iter().position(|&x| x == w).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(w);
                    return Some(cycle);
                }
                if color[w] == 0
                    && let Some(c) = dfs(w, edges, color, stack)
                {
                    return Some(c);
                }
            }
            stack.pop();
            color[v] = 2;
            None
        }
        (0..self.len()).find_map(|v| if color[v] == 0 { dfs(v, &edges, &mut color, &mut stack) } else { None })
    }

    /// Which steps can ever become ready from the start of a run.
    pub fn reachable(&self) -> Vec<bool> {
        let edges = self.edges();
        let mut seen = vec![false; self.len()];
        let mut work: Vec<usize> = (0..self.len())
            .filter(|&i| self.is_start(i) || self.joins[i].as_ref().is_some_and(Vec::is_empty))
            .collect();
        while let Some(v) = work.pop() {
            if std::mem::replace(&mut seen[v], true) {
                continue;
            }
            work.extend(edges[v].iter().copied().filter(|&w| !seen[w]));
        }
        // A join step is only ready when all of its needs can run.
        let mut changed = true;
        while changed {
            changed = false;
            for j in 0..self.len() {
                if seen[j]
                    && let Some(needs) = &self.joins[j]
                    && needs.iter().any(|&d| !seen[d])
                {
                    seen[j] = false;
                    changed = true;
                }
            }
        }
        seen
    }

    /// Whether some path leads from `from` to `to`.
    pub fn has_path(&self, from: usize, to: usize) -> bool {
        let edges = self.edges();
        let mut seen = vec![false; self.len()];
        let mut work = edges[from].clone();
        while let Some(v) = work.pop() {
            if v == to {
                return true;
            }
            if !std::mem::replace(&mut seen[v], true) {
                work.extend(edges[v].iter().copied());
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_order_needs_and_next_make_the_edges() {
        // a; b needs [a]; c needs [a]; d (after c); e next-> none
        let g = Graph::build(&[None, Some(vec![0]), Some(vec![0]), None], &[Route::FileOrder; 4]);
        assert_eq!(g.routes, vec![vec![], vec![], vec![3], vec![]]);
        assert_eq!(g.edges(), vec![vec![1, 2], vec![], vec![3], vec![]]);
        assert!(g.find_cycle().is_none());
        assert_eq!(g.reachable(), vec![true; 4]);
        assert!(g.has_path(0, 3));
        assert!(!g.has_path(1, 3));
    }

    #[test]
    fn cycles_and_unreachable_steps_are_found() {
        let g = Graph::build(&[None, Some(vec![2]), Some(vec![1])], &[Route::FileOrder; 3]);
        assert_eq!(g.find_cycle(), Some(vec![1, 2, 1]));
        assert_eq!(g.reachable(), vec![true, false, false]);
        // a next -> c skips b.
        let g = Graph::build(&[None, None, None], &[Route::Next(2), Route::FileOrder, Route::FileOrder]);
        assert_eq!(g.reachable(), vec![true, false, true]);
        // plan -> review; review rejects back to plan: a loop, not a cycle.
        let review = Route::Decision { approve: None, reject: Some(0), timeout: None };
        let g = Graph::build(&[None, None, None], &[Route::FileOrder, review, Route::FileOrder]);
        assert!(g.find_cycle().is_none());
        assert_eq!(g.routes[1], vec![2, 0]);
        assert_eq!(g.routes_after(&review, 1, Some(Decided::Approved)), vec![2]);
        assert_eq!(g.routes_after(&review, 1, Some(Decided::Rejected)), vec![0]);
    }
}
