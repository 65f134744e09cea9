//! Splitting weighted items into at most K groups so that the expected download,
//! the sum over groups of size × P(any member changes), is smallest.
//!
//! Items are ordered by change probability and cut into contiguous runs: grouping
//! components of similar volatility is what keeps stable bytes out of layers that
//! change. Large inputs are first coarsened by greedy merging of neighbours, then an
//! exact dynamic programme picks the cuts.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Something to place: its size and its probability of changing in the next build.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Item {
    /// Uncompressed bytes.
    pub size: u64,
    /// Probability of changing in the next build.
    pub p: f64,
}

/// The dynamic programme runs on at most this many runs (more are merged greedily first).
const MAX_RUNS_FOR_DP: usize = 256;

/// Aggregate of a run of items: enough to price it as one layer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Group {
    /// Uncompressed bytes of its members.
    pub size: u64,
    /// Σ ln(1 − p) over members whose p < 1.
    log_stay: f64,
    /// Members with p = 1.
    certain: u32,
}

impl Group {
    /// A group of one.
    pub fn of(item: Item) -> Group {
        let mut g = Group::default();
        g.add(item);
        g
    }

    /// Adds a member.
    pub fn add(&mut self, item: Item) {
        self.size += item.size;
        if item.p >= 1.0 {
            self.certain += 1;
        } else {
            self.log_stay += (-item.p).ln_1p();
        }
    }

    /// This group less `other`'s members, which it must hold.
    pub fn without(self, other: Group) -> Group {
        Group {
            size: self.size - other.size,
            log_stay: self.log_stay - other.log_stay,
            certain: self.certain - other.certain,
        }
    }

    fn merge(self, other: Group) -> Group {
        Group {
            size: self.size + other.size,
            log_stay: self.log_stay + other.log_stay,
            certain: self.certain + other.certain,
        }
    }

    /// Probability that at least one member changes (members assumed independent).
    pub fn p_change(&self) -> f64 {
        if self.certain > 0 {
            1.0
        } else {
            -self.log_stay.exp_m1()
        }
    }

    /// Expected bytes downloaded per update for this group as one layer.
    pub fn cost(&self) -> f64 {
        self.size as f64 * self.p_change()
    }
}

/// Expected download of `items` laid out as `groups`.
pub fn total_cost(groups: &[Group]) -> f64 {
    groups.iter().map(Group::cost).sum()
}

/// The order in which items are cut into runs: most volatile first, then largest,
/// then by index (the caller's deterministic order).
fn order(items: &[Item]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..items.len()).collect();
    idx.sort_by(|&a, &b| {
        items[b]
            .p
            .total_cmp(&items[a].p)
            .then(items[b].size.cmp(&items[a].size))
            .then(a.cmp(&b))
    });
    idx
}

/// Splits `items` into at most `k` groups (k ≥ 1) of minimal expected download.
/// Returns groups of indices into `items`, each sorted; groups are in cut order.
pub fn partition(items: &[Item], k: usize) -> Vec<Vec<usize>> {
    partition_coarsened(items, k, MAX_RUNS_FOR_DP.max(2 * k))
}

fn partition_coarsened(items: &[Item], k: usize, runs_limit: usize) -> Vec<Vec<usize>> {
    assert!(k >= 1, "partition needs at least one group");
    if items.is_empty() {
        return Vec::new();
    }
    let order = order(items);
    let runs = coarsen(items, &order, runs_limit);
    let mut start = 0;
    let by_cuts: Vec<Vec<usize>> = best_cuts(&runs, k)
        .into_iter()
        .map(|end| {
            let g = (start..end).collect();
            start = end;
            g
        })
        .collect();
    let by_merging = merge_cheapest_pairs(&runs, k);
    let cost = |groups: &[Vec<usize>]| total_cost(&aggregate(&runs, groups));
    let best = if cost(&by_merging) < cost(&by_cuts) {
        by_merging
    } else {
        by_cuts
    };
    refine(&runs, best)
        .into_iter()
        .map(|g| {
            let mut members: Vec<usize> = g
                .iter()
                .flat_map(|&r| order[runs[r].first..runs[r].last].iter().copied())
                .collect();
            members.sort_unstable();
            members
        })
        .collect()
}

fn aggregate(runs: &[Run], groups: &[Vec<usize>]) -> Vec<Group> {
    groups
        .iter()
        .map(|g| {
            g.iter()
                .fold(Group::default(), |acc, &r| acc.merge(runs[r].group))
        })
        .collect()
}

/// Agglomerative grouping: starting from one group per run, repeatedly merges the two
/// groups (neighbours or not) whose merge adds the least expected cost. Unlike cuts in
/// volatility order, this lets a large item sit alone between small ones of similar
/// volatility that share a layer.
fn merge_cheapest_pairs(runs: &[Run], k: usize) -> Vec<Vec<usize>> {
    let m = runs.len();
    let mut groups: Vec<Group> = runs.iter().map(|r| r.group).collect();
    let mut members: Vec<Vec<usize>> = (0..m).map(|r| vec![r]).collect();
    let mut alive = vec![true; m];
    let mut version = vec![0u32; m];
    let extra = |a: &Group, b: &Group| a.merge(*b).cost() - a.cost() - b.cost();
    let mut heap = BinaryHeap::new();
    for a in 0..m {
        for b in a + 1..m {
            heap.push(Reverse(Candidate {
                extra_cost: extra(&groups[a], &groups[b]),
                pair: (a, b),
                stamp: (0, 0),
            }));
        }
    }
    let mut count = m;
    while count > k {
        let Some(Reverse(pm)) = heap.pop() else { break };
        let (a, b) = pm.pair;
        if !alive[a] || !alive[b] || pm.stamp != (version[a], version[b]) {
            continue;
        }
        groups[a] = groups[a].merge(groups[b]);
        let moved = std::mem::take(&mut members[b]);
        members[a].extend(moved);
        alive[b] = false;
        version[a] += 1;
        count -= 1;
        for c in (0..m).filter(|&c| alive[c] && c != a) {
            let (x, y) = (a.min(c), a.max(c));
            heap.push(Reverse(Candidate {
                extra_cost: extra(&groups[x], &groups[y]),
                pair: (x, y),
                stamp: (version[x], version[y]),
            }));
        }
    }
    members.into_iter().filter(|g| !g.is_empty()).collect()
}

/// A candidate merge of two groups (or neighbouring runs), cheapest first. `stamp`
/// holds both sides' versions when it was priced; a stale candidate is skipped.
#[derive(Debug, PartialEq)]
struct Candidate {
    extra_cost: f64,
    pair: (usize, usize),
    stamp: (u32, u32),
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.extra_cost
            .total_cmp(&other.extra_cost)
            .then(self.pair.cmp(&other.pair))
            .then(self.stamp.cmp(&other.stamp))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Local search: moves single runs to another group while that lowers the total cost.
fn refine(runs: &[Run], mut groups: Vec<Vec<usize>>) -> Vec<Vec<usize>> {
    let mut agg = aggregate(runs, &groups);
    let mut home: Vec<usize> = vec![0; runs.len()];
    for (g, members) in groups.iter().enumerate() {
        members.iter().for_each(|&r| home[r] = g);
    }
    for _ in 0..MAX_REFINE_PASSES {
        let mut improved = false;
        for r in 0..runs.len() {
            let from = home[r];
            if groups[from].len() == 1 {
                continue;
            }
            let without = agg[from].without(runs[r].group);
            let leave_gain = agg[from].cost() - without.cost();
            let best = (0..agg.len())
                .filter(|&to| to != from)
                .map(|to| (agg[to].merge(runs[r].group).cost() - agg[to].cost(), to))
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            if let Some((join_cost, to)) = best {
                if join_cost < leave_gain - MOVE_EPSILON * leave_gain.max(1.0) {
                    agg[from] = without;
                    agg[to] = agg[to].merge(runs[r].group);
                    groups[from].retain(|&x| x != r);
                    groups[to].push(r);
                    home[r] = to;
                    improved = true;
                }
            }
        }
        if !improved {
            break;
        }
    }
    groups
}

/// Local search stops after this many passes over the runs.
const MAX_REFINE_PASSES: usize = 20;
/// A move must save at least this fraction of the bytes at stake, so rounding never
/// makes the search cycle.
const MOVE_EPSILON: f64 = 1e-9;

/// A run of consecutive items in cut order: `order[first..last]`.
#[derive(Debug, Clone, Copy)]
struct Run {
    first: usize,
    last: usize,
    group: Group,
}

/// Greedily merges the neighbouring runs whose merge costs least, until at most
/// `limit` runs remain.
fn coarsen(items: &[Item], order: &[usize], limit: usize) -> Vec<Run> {
    let mut runs: Vec<Run> = order
        .iter()
        .enumerate()
        .map(|(pos, &i)| Run {
            first: pos,
            last: pos + 1,
            group: Group::of(items[i]),
        })
        .collect();
    if runs.len() <= limit {
        return runs;
    }
    let n = runs.len();
    let mut next: Vec<usize> = (1..=n).collect();
    let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
    let mut alive = vec![true; n];
    let mut version = vec![0u32; n];
    let extra = |a: &Group, b: &Group| a.merge(*b).cost() - a.cost() - b.cost();
    let mut heap: BinaryHeap<Reverse<Candidate>> = (0..n - 1)
        .map(|i| {
            Reverse(Candidate {
                extra_cost: extra(&runs[i].group, &runs[i + 1].group),
                pair: (i, i + 1),
                stamp: (0, 0),
            })
        })
        .collect();
    let mut count = n;
    while count > limit {
        let Some(Reverse(m)) = heap.pop() else { break };
        let (l, r) = m.pair;
        if !alive[l] || !alive[r] || next[l] != r || m.stamp != (version[l], version[r]) {
            continue;
        }
        runs[l].group = runs[l].group.merge(runs[r].group);
        runs[l].last = runs[r].last;
        alive[r] = false;
        next[l] = next[r];
        if next[l] < n {
            prev[next[l]] = l;
        }
        version[l] += 1;
        count -= 1;
        for left in [prev[l], l] {
            let right = if left < n { next[left] } else { n };
            if left < n && right < n {
                heap.push(Reverse(Candidate {
                    extra_cost: extra(&runs[left].group, &runs[right].group),
                    pair: (left, right),
                    stamp: (version[left], version[right]),
                }));
            }
        }
    }
    runs.into_iter()
        .zip(alive)
        .filter_map(|(r, a)| a.then_some(r))
        .collect()
}

/// Exact best cut of `runs` into at most `k` contiguous groups; returns the end index
/// (exclusive) of each group.
fn best_cuts(runs: &[Run], k: usize) -> Vec<usize> {
    let m = runs.len();
    let k = k.min(m);
    // prefix[i] aggregates runs[..i]; a group of runs[a..b] is prefix[b] − prefix[a].
    let mut prefix = vec![Group::default(); m + 1];
    for (i, r) in runs.iter().enumerate() {
        prefix[i + 1] = prefix[i].merge(r.group);
    }
    let span = |a: usize, b: usize| Group {
        size: prefix[b].size - prefix[a].size,
        log_stay: prefix[b].log_stay - prefix[a].log_stay,
        certain: prefix[b].certain - prefix[a].certain,
    };
    // best[j][i]: least cost of runs[..i] in j + 1 groups; from[j][i]: where the last starts.
    let mut best = vec![vec![f64::INFINITY; m + 1]; k];
    let mut from = vec![vec![0usize; m + 1]; k];
    for (i, cell) in best[0].iter_mut().enumerate().skip(1) {
        *cell = span(0, i).cost();
    }
    for j in 1..k {
        for i in (j + 1)..=m {
            let (mut value, mut arg) = (f64::INFINITY, j);
            for (a, previous) in best[j - 1].iter().enumerate().take(i).skip(j) {
                let v = previous + span(a, i).cost();
                if v < value {
                    (value, arg) = (v, a);
                }
            }
            best[j][i] = value;
            from[j][i] = arg;
        }
    }
    // Every slot is used: splitting never costs more, and separate layers keep later
    // regrouping cheap and let layers compress in parallel.
    let groups = k;
    let mut cuts = Vec::with_capacity(groups);
    let mut end = m;
    for j in (0..groups).rev() {
        cuts.push(end);
        end = if j == 0 { 0 } else { from[j][end] };
    }
    cuts.reverse();
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(size: u64, p: f64) -> Item {
        Item { size, p }
    }

    fn cost_of(items: &[Item], groups: &[Vec<usize>]) -> f64 {
        groups
            .iter()
            .map(|g| {
                let mut agg = Group::default();
                g.iter().for_each(|&i| agg.add(items[i]));
                agg.cost()
            })
            .sum()
    }

    #[test]
    fn volatile_and_stable_items_are_kept_apart() {
        let items = [
            item(100, 0.9),
            item(100, 0.01),
            item(100, 0.95),
            item(100, 0.02),
        ];
        let groups = partition(&items, 2);
        assert_eq!(groups, vec![vec![0, 2], vec![1, 3]]);
    }

    #[test]
    fn one_group_per_item_when_there_is_room() {
        let items = [item(5, 0.5), item(7, 0.1), item(9, 0.3)];
        assert_eq!(partition(&items, 10).len(), 3);
        assert_eq!(partition(&items, 1), vec![vec![0, 1, 2]]);
    }

    #[test]
    fn coarsening_keeps_every_item_once_and_stays_near_exact() {
        let items: Vec<Item> = (0..2000u64)
            .map(|i| {
                item(
                    1 + (i * 7919) % 10_000,
                    ((i * 104_729) % 1000) as f64 / 1000.0,
                )
            })
            .collect();
        let groups = partition(&items, 16);
        assert!(groups.len() <= 16);
        let mut all: Vec<usize> = groups.concat();
        all.sort_unstable();
        assert_eq!(all, (0..2000).collect::<Vec<_>>());
        // The coarsened route must stay within 1% of the exact programme.
        let some = &items[..600];
        let exact = cost_of(some, &partition_coarsened(some, 8, 600));
        let coarse = cost_of(some, &partition(some, 8));
        assert!(coarse <= exact * 1.01, "{coarse} vs exact {exact}");
        assert!(
            coarse >= exact * (1.0 - 1e-9),
            "{coarse} beat exact {exact}"
        );
    }
}
