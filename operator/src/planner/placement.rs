//! Where partitions should live: the map a set converges to (DESIGN.md, "Operator").
//!
//! [`target`] takes the eligible nodes (in the set's order), the current map and the
//! replication factor, and returns the map to move towards. Every move costs a copy of a
//! partition's data over the network and every change of primary costs a switchover, so the
//! target is the balanced map *closest* to the current one, not just any balanced map. The
//! rebalancer recomputes it after every step (invariant 6), so it is also deterministic, and a
//! balanced map is its own target.
//!
//! # What "balanced" means
//!
//! With `N` eligible nodes, `P` partitions and `k = min(rf, N)` copies each, `T = P*k` copies
//! are spread so that every node holds `floor(T/N)` or `ceil(T/N)` of them, and primaries so that
//! every node leads `floor(P/N)` or `ceil(P/N)` partitions. A copy on a node outside `nodes` is
//! being drained and does not count; nor does a second copy on one node.
//!
//! # Copies: as few new copies as possible
//!
//! First the current map is cleaned: ineligible and duplicate copies go, and a partition with
//! more than `k` copies loses the extra ones on the busiest nodes (never its primary). Call the
//! loads that remain `L(v)`, and `m` the copies still missing.
//!
//! *Lower bound.* A balanced map keeps at most `min(L(v), F(v))` copies on node `v`, where `F`
//! is its final load, so it adds at least `sum (F(v) - L(v))+`, least when `ceil` goes to the
//! nodes with the highest `L`. That minimum is `LB = max(m + E, D)`, where
//! `E = sum (L(v) - ceil)+` (copies that must leave full nodes, each to be re-made elsewhere,
//! as must the `m` missing ones) and `D = sum (floor - L(v))+` (copies that empty nodes must
//! receive).
//!
//! *Missing copies* go into the room under those final loads (`floor - L(v)`, plus one more on
//! as many nodes as there are `ceil` slots left over), each on a node without the partition.
//! That is a bipartite b-matching, solved with augmenting paths: when every node without the
//! partition is full, a new copy of another partition there is moved on to a node with room, or
//! a spare `ceil` slot is handed over. A copy that still finds no place (all room is on nodes
//! that already hold the partition: a Hall violation) goes to the least-loaded node without it.
//!
//! *Overfull nodes* then shed: a copy moves from the fullest node `u` to the emptiest node `w`
//! until every load is `floor` or `ceil`. Such a move is always possible: if the map is not
//! balanced then `load(u) > load(w)`, so some partition on `u` is not on `w`. New copies move
//! first (free), then replicas, then primaries.
//!
//! *Result.* If `U` missing copies found no room, the target adds `LB + U` copies, and no
//! balanced map adds fewer: in any balanced map, the missing copies sit in the room computed
//! above plus whatever room that map makes by dropping copies it did not have to, or by moving a
//! `ceil` slot off a node that deserved it; each such unit costs one extra added copy and raises
//! the matching by at most one, so it needs at least `U` of them. The target is therefore
//! optimal for every map without excess copies (the tests check it against a min-cost flow).
//! With excess copies it is optimal for the map cleaned as above, and so adds at most one more
//! copy per excess copy than the best map (which may have dropped other ones). Note that
//! `LB <= m + max(E, D)`, but that `m + max(E, D)` itself is no bound when `U > 0`: on 5 nodes
//! with `rf` 4 and 6 partitions, loads `4,4,5,5,5` and one copy missing from a partition already
//! on both nodes at 4, every balanced map adds two copies.
//!
//! # Primaries: a balanced choice always exists
//!
//! Once copies are balanced (`floor(T/N) <= load <= ceil(T/N)`), some choice of primaries among
//! the copies is balanced too. Call "a node set `S` leads at most `|S|*ceil(P/N)`" the upper
//! condition: the partitions that cannot lead outside `S` are those with all `k` copies in `S`,
//! and there are at most `floor(load(S)/k) <= floor(|S|*ceil(T/N)/k) <= |S|*ceil(P/N)` of them
//! (as `ceil(P*k/N) <= k*ceil(P/N)`). Symmetrically every partition with a copy in `S` may lead
//! there, and there are at least `ceil(load(S)/k) >= |S|*floor(T/N)/k >= |S|*floor(P/N)` of
//! them (as `floor(P*k/N) >= k*floor(P/N)`). Now take any choice and a node `u` leading more
//! than `ceil(P/N)`. Let `S` be the nodes reachable from `u` along paths
//! `u -p1-> v1 -p2-> v2 ...` ("leads `p`, and `p` has a copy on the next node"). Every partition
//! led inside `S` has all its copies in `S`, so `S` leads at most `|S|*ceil(P/N)`: some node of
//! `S` leads fewer than `ceil(P/N)`. Shifting each `p_i` to `v_i` along the path (a cost-reducing
//! path of Harvey, Ladner, Lovász and Tamir, "Semi-matchings for bipartite graphs and load
//! balancing") lowers `u` by one and raises only that node. Backwards from a node leading fewer
//! than `floor(P/N)`, the lower condition gives a path from a node leading more. Each shift
//! lowers the sum of squared counts, so shifting ends, and it ends only with every node at
//! `floor(P/N)` or `ceil(P/N)`.
//!
//! Which paths: a current primary still holding a copy stays unless balance needs it elsewhere;
//! a partition whose primary left goes to an existing replica if it has one (the one leading
//! least); then nodes above `ceil(P/N)` or below `floor(P/N)` are fixed along the *cheapest*
//! cost-reducing paths, where moving a primary that stays a copy costs `P + 1` and putting a
//! primary on a copy the current map lacks costs 1. These are the augmenting paths of a
//! min-cost flow (partitions to nodes, node capacities `[floor(P/N), ceil(P/N)]`, one extra
//! vertex collecting the `ceil(P/N)` slots, through which a path is two cost-reducing paths
//! joined), found as successive shortest paths: Dijkstra over node potentials, then every path
//! of zero reduced cost before the next Dijkstra. Starting from the cheapest choice and only
//! ever augmenting along cheapest paths, the result first changes as few primaries as possible
//! and then puts as few primaries as possible on new copies (the tests check it against a
//! min-cost flow). A balanced choice changes nothing.
//!
//! # Determinism and cost
//!
//! Nodes are indices in the set's order (`db-10` after `db-9`); ties go to the lower index or
//! partition. Lookups by name use a map, but nothing iterates one. Per-node counts and per-node
//! sets of partitions keep each step cheap: placing or moving a copy costs `O(N)` (plus a search
//! over the new copies when no node without the partition has room), and each round of the
//! primary search `O(N^2)`. With 16384 partitions over 100 nodes at `rf` 3, a release build
//! places them from nothing, drains a node, doubles the set or changes `rf` in 0.15 s or less.

use super::Copies;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// The balanced map closest to `current` over `nodes` (eligible node names in the set's order),
/// with `min(replication_factor, nodes.len())` copies of every partition; see the module docs.
/// Epochs are copied unchanged. A replication factor of 0 is read as 1. With no eligible node,
/// every partition is left without copies.
pub fn target(nodes: &[String], current: &[Copies], replication_factor: usize) -> Vec<Copies> {
    let names = Names::new(nodes);
    if names.list.is_empty() {
        return current
            .iter()
            .map(|c| Copies {
                primary: None,
                replicas: Vec::new(),
                epoch: c.epoch,
            })
            .collect();
    }
    let mut layout = Layout::new(&names, current, replication_factor);
    layout.fill();
    layout.balance();
    let mut leaders = Leaders::new(&layout);
    leaders.balance();
    let primary = leaders.assign;
    layout
        .holders
        .into_iter()
        .zip(primary)
        .zip(current)
        .map(|((mut holders, primary), c)| {
            holders.sort_unstable();
            Copies {
                primary: Some(names.list[primary].to_string()),
                replicas: holders
                    .into_iter()
                    .filter(|&v| v != primary)
                    .map(|v| names.list[v].to_string())
                    .collect(),
                epoch: c.epoch,
            }
        })
        .collect()
}

/// The eligible nodes, each once, in the set's order, and the way back from a name.
struct Names<'a> {
    list: Vec<&'a str>,
    index: HashMap<&'a str, usize>,
}

impl<'a> Names<'a> {
    fn new(nodes: &'a [String]) -> Self {
        let mut list = Vec::with_capacity(nodes.len());
        let mut index = HashMap::with_capacity(nodes.len());
        for n in nodes {
            if !index.contains_key(n.as_str()) {
                index.insert(n.as_str(), list.len());
                list.push(n.as_str());
            }
        }
        Names { list, index }
    }

    fn get(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
}

/// A copy the current map does not have: adding it costs a data transfer.
const FRESH: usize = 0;
/// A current replica, kept.
const KEPT: usize = 1;
/// A current primary, kept as a copy.
const KEPT_PRIMARY: usize = 2;

/// The copies being placed, with the per-node indexes that keep every step cheap.
struct Layout {
    /// Copies per partition (`min(rf, nodes)`).
    k: usize,
    /// Per partition, the nodes holding a copy in the map being built.
    holders: Vec<Vec<usize>>,
    /// Per partition, the eligible nodes holding a copy in the current map, each once.
    before: Vec<Vec<usize>>,
    /// Per partition, its current primary if that node is eligible.
    was_primary: Vec<Option<usize>>,
    /// Copies per node.
    load: Vec<usize>,
    /// Per node and class (`FRESH`, `KEPT`, `KEPT_PRIMARY`), the partitions it holds.
    on: Vec<[BTreeSet<usize>; 3]>,
}

/// The room for missing copies under the final loads (see "Missing copies" in the module docs).
struct Room {
    /// Per node, `floor - L(v)` (0 for nodes at `ceil` or above).
    base: Vec<usize>,
    /// Per node, whether it may take one of the spare `ceil` slots (it is below `ceil`).
    may_rise: Vec<bool>,
    /// Per node, whether it has taken one.
    risen: Vec<bool>,
    /// Spare `ceil` slots no node has taken yet.
    spare: usize,
    /// Per node, the missing copies placed there within its room.
    placed: Vec<BTreeSet<usize>>,
}

impl Room {
    fn has_space(&self, v: usize) -> bool {
        self.placed[v].len() < self.base[v] + usize::from(self.risen[v])
    }

    fn may_take_slot(&self, v: usize) -> bool {
        self.may_rise[v] && !self.risen[v] && self.placed[v].len() == self.base[v]
    }
}

/// How the search for room reached a node (see [`Layout::place`]).
#[derive(Clone, Copy)]
enum Via {
    /// The partition being placed goes here.
    Start,
    /// New copy `.1` moves here from node `.0`.
    Moved(usize, usize),
    /// Node `.0` takes this node's `ceil` slot.
    Slot(usize),
}

impl Layout {
    /// The current map restricted to eligible nodes, without duplicates or excess copies.
    fn new(names: &Names<'_>, current: &[Copies], replication_factor: usize) -> Self {
        let n = names.list.len();
        let k = replication_factor.clamp(1, n);
        let parts = current.len();
        let mut layout = Layout {
            k,
            holders: vec![Vec::new(); parts],
            before: Vec::with_capacity(parts),
            was_primary: Vec::with_capacity(parts),
            load: vec![0; n],
            on: (0..n).map(|_| Default::default()).collect(),
        };
        for c in current {
            let mut seen: Vec<usize> = Vec::new();
            for v in c.nodes().filter_map(|name| names.get(name)) {
                if !seen.contains(&v) {
                    seen.push(v);
                }
            }
            layout.before.push(seen);
            layout
                .was_primary
                .push(c.primary.as_deref().and_then(|name| names.get(name)));
        }
        for p in 0..parts {
            for i in 0..layout.before[p].len() {
                let v = layout.before[p][i];
                layout.add(p, v);
            }
        }
        // More copies than wanted: the ones on the busiest nodes go, never the primary.
        for p in 0..parts {
            while layout.holders[p].len() > k {
                let drop = layout.holders[p]
                    .iter()
                    .copied()
                    .filter(|&v| Some(v) != layout.was_primary[p])
                    .max_by_key(|&v| (layout.load[v], v));
                match drop {
                    Some(v) => layout.remove(p, v),
                    None => break,
                }
            }
        }
        layout
    }

    fn class(&self, p: usize, v: usize) -> usize {
        if !self.before[p].contains(&v) {
            FRESH
        } else if self.was_primary[p] == Some(v) {
            KEPT_PRIMARY
        } else {
            KEPT
        }
    }

    fn holds(&self, p: usize, v: usize) -> bool {
        self.holders[p].contains(&v)
    }

    fn add(&mut self, p: usize, v: usize) {
        self.holders[p].push(v);
        self.load[v] += 1;
        let class = self.class(p, v);
        self.on[v][class].insert(p);
    }

    fn remove(&mut self, p: usize, v: usize) {
        self.holders[p].retain(|&x| x != v);
        self.load[v] -= 1;
        let class = self.class(p, v);
        self.on[v][class].remove(&p);
    }

    /// Copies per node in a balanced map: `(floor, ceil, nodes at ceil)`.
    fn copy_bounds(&self) -> (usize, usize, usize) {
        let n = self.load.len();
        let total = self.holders.len() * self.k;
        (total / n, total.div_ceil(n), total % n)
    }

    /// Gives every partition its missing copies: into the room under the final loads where a
    /// maximum matching finds it, else on the least-loaded node without one.
    fn fill(&mut self) {
        let n = self.load.len();
        let (floor, ceil, at_ceil) = self.copy_bounds();
        let high = self.load.iter().filter(|&&l| l >= ceil).count();
        let mut room = Room {
            base: self.load.iter().map(|&l| floor.saturating_sub(l)).collect(),
            may_rise: self.load.iter().map(|&l| l < ceil).collect(),
            risen: vec![false; n],
            spare: at_ceil.saturating_sub(high),
            placed: vec![BTreeSet::new(); n],
        };
        for p in 0..self.holders.len() {
            // Once one copy of p finds no room, none of its later copies can (nothing a later
            // search changes makes room reachable from p again), so they overflow directly.
            let mut matched = true;
            while self.holders[p].len() < self.k {
                matched = matched && self.place(p, &mut room);
                if !matched {
                    let least = (0..n)
                        .filter(|&v| !self.holds(p, v))
                        .min_by_key(|&v| (self.load[v], v));
                    match least {
                        Some(v) => self.add(p, v),
                        None => break,
                    }
                }
            }
        }
    }

    /// Places one missing copy of `p` within `room`, moving other new copies along an
    /// augmenting path if need be; false if the matching cannot grow.
    fn place(&mut self, p: usize, room: &mut Room) -> bool {
        let n = self.load.len();
        let fits = |v: usize| room.has_space(v) || (room.may_take_slot(v) && room.spare > 0);
        let direct = (0..n)
            .filter(|&v| !self.holds(p, v) && fits(v))
            .min_by_key(|&v| (self.load[v], v));
        if let Some(v) = direct {
            self.settle(p, v, room, &[]);
            return true;
        }
        // Breadth-first over nodes: a full node may pass one of its new copies on to a node
        // without that partition, or take a ceil slot from a node that has one.
        let mut via: Vec<Option<Via>> = vec![None; n];
        let mut queue = VecDeque::new();
        for (v, how) in via.iter_mut().enumerate() {
            if !self.holds(p, v) {
                *how = Some(Via::Start);
                queue.push_back(v);
            }
        }
        let mut slots_seen = false;
        let mut end = None;
        'search: while let Some(x) = queue.pop_front() {
            for &q in &room.placed[x] {
                for (y, how) in via.iter_mut().enumerate() {
                    if how.is_some() || self.holds(q, y) {
                        continue;
                    }
                    *how = Some(Via::Moved(x, q));
                    if fits(y) {
                        end = Some(y);
                        break 'search;
                    }
                    queue.push_back(y);
                }
            }
            if !slots_seen && room.spare == 0 && room.may_take_slot(x) {
                slots_seen = true;
                for (y, how) in via.iter_mut().enumerate() {
                    if how.is_some() || !room.risen[y] {
                        continue;
                    }
                    *how = Some(Via::Slot(x));
                    // Giving its slot away, y must still fit what it holds.
                    if room.placed[y].len() <= room.base[y] {
                        end = Some(y);
                        break 'search;
                    }
                    queue.push_back(y);
                }
            }
        }
        match end {
            Some(end) => {
                self.settle(p, end, room, &via);
                true
            }
            None => false,
        }
    }

    /// Applies the path found by [`Layout::place`], from its `end` back to its start.
    fn settle(&mut self, p: usize, end: usize, room: &mut Room, via: &[Option<Via>]) {
        let how = |v: usize| via.get(v).copied().flatten().unwrap_or(Via::Start);
        if !matches!(how(end), Via::Slot(_)) && !room.has_space(end) {
            room.risen[end] = true;
            room.spare -= 1;
        }
        let mut node = end;
        for _ in 0..=via.len() {
            match how(node) {
                Via::Start => {
                    self.add(p, node);
                    room.placed[node].insert(p);
                    return;
                }
                Via::Moved(from, q) => {
                    self.remove(q, from);
                    room.placed[from].remove(&q);
                    self.add(q, node);
                    room.placed[node].insert(q);
                    node = from;
                }
                Via::Slot(from) => {
                    room.risen[node] = false;
                    room.risen[from] = true;
                    node = from;
                }
            }
        }
    }

    /// Moves copies from the fullest node to the emptiest until every node holds `floor` or
    /// `ceil` copies: new copies first, then replicas, then primaries.
    fn balance(&mut self) {
        let n = self.load.len();
        let (floor, ceil, _) = self.copy_bounds();
        loop {
            let Some(u) = (0..n).max_by_key(|&v| (self.load[v], std::cmp::Reverse(v))) else {
                return;
            };
            let Some(w) = (0..n).min_by_key(|&v| (self.load[v], v)) else {
                return;
            };
            if self.load[u] <= ceil && self.load[w] >= floor {
                return;
            }
            let pick = self.on[u]
                .iter()
                .find_map(|class| class.iter().copied().find(|&p| !self.holds(p, w)));
            match pick {
                Some(p) => {
                    self.remove(p, u);
                    self.add(p, w);
                }
                None => return,
            }
        }
    }
}

/// The choice of primaries over the placed copies, as a min-cost flow (see "Primaries").
struct Leaders<'a> {
    holders: &'a [Vec<usize>],
    /// Per partition and holder, what leading there costs.
    cost: Vec<Vec<i64>>,
    /// Per partition, its primary.
    assign: Vec<usize>,
    /// Per node, partitions led.
    count: Vec<usize>,
    /// Per node `x`, per node `y`: the partitions `x` leads that have a copy on `y`, with what
    /// moving each to `y` costs, cheapest first.
    arcs: Vec<BTreeMap<usize, BTreeSet<(i64, usize)>>>,
}

/// A vertex of the residual graph: a node, or the collector of `ceil` slots (index `n`).
type Vertex = usize;

/// The search state of one primal-dual round (see [`Leaders::admissible_path`]).
struct Round {
    /// Per vertex, its arcs as they were when first needed this round.
    adj: Vec<Option<Vec<Vertex>>>,
    /// Per vertex, the first of those arcs not yet found useless.
    next: Vec<usize>,
    /// Vertices from which no admissible path leads anywhere useful this round.
    dead: Vec<bool>,
    /// Vertices on the path being searched.
    on_path: Vec<bool>,
}

impl Round {
    fn new(vertices: usize) -> Self {
        Round {
            adj: vec![None; vertices],
            next: vec![0; vertices],
            dead: vec![false; vertices],
            on_path: vec![false; vertices],
        }
    }
}

/// The `ceil` slots of the primary flow, and the node potentials.
struct Slots {
    /// `floor(P/N)`.
    floor: usize,
    /// `ceil(P/N) - floor(P/N)`: how far above floor a node may go.
    slots: usize,
    /// Nodes that lead `ceil(P/N)` in a balanced choice.
    at_ceil: usize,
    /// Per node, the flow into the slot collector: how far above floor it counts.
    up: Vec<usize>,
    /// Per vertex, its potential (reduced cost of `a -> b` is `cost - pi(a) + pi(b)`).
    potential: Vec<i64>,
}

impl<'a> Leaders<'a> {
    fn new(layout: &'a Layout) -> Self {
        let n = layout.load.len();
        let parts = layout.holders.len();
        let change = i64::try_from(parts).unwrap_or(i64::MAX / 4) + 1;
        let mut leaders = Leaders {
            holders: &layout.holders,
            cost: Vec::with_capacity(parts),
            assign: vec![0; parts],
            count: vec![0; n],
            arcs: vec![BTreeMap::new(); n],
        };
        for p in 0..parts {
            let stays = layout.was_primary[p].filter(|&v| layout.holds(p, v));
            leaders.cost.push(
                layout.holders[p]
                    .iter()
                    .map(|&v| {
                        let moved = if stays.is_some_and(|s| s != v) {
                            change
                        } else {
                            0
                        };
                        moved + i64::from(!layout.before[p].contains(&v))
                    })
                    .collect(),
            );
        }
        // Every partition starts on its cheapest holder, the one leading least on ties: a
        // min-cost start, so no residual arc is negative.
        let mut order: Vec<usize> = (0..parts).collect();
        order.sort_by_key(|&p| leaders.cost[p].iter().min().copied().unwrap_or(0) != 0);
        for p in order {
            let best = (0..layout.holders[p].len()).min_by_key(|&i| {
                (
                    leaders.cost[p][i],
                    leaders.count[layout.holders[p][i]],
                    layout.holders[p][i],
                )
            });
            let v = best.map_or(0, |i| layout.holders[p][i]);
            leaders.assign[p] = v;
            leaders.count[v] += 1;
            leaders.link(p, true);
        }
        leaders
    }

    fn cost_on(&self, p: usize, v: usize) -> i64 {
        self.holders[p]
            .iter()
            .position(|&h| h == v)
            .map_or(0, |i| self.cost[p][i])
    }

    /// Adds (or removes) the arcs out of `p`'s primary.
    fn link(&mut self, p: usize, on: bool) {
        let x = self.assign[p];
        let here = self.cost_on(p, x);
        for i in 0..self.holders[p].len() {
            let y = self.holders[p][i];
            if y == x {
                continue;
            }
            let arc = (self.cost[p][i] - here, p);
            if on {
                self.arcs[x].entry(y).or_default().insert(arc);
            } else if let Some(set) = self.arcs[x].get_mut(&y) {
                set.remove(&arc);
                if set.is_empty() {
                    self.arcs[x].remove(&y);
                }
            }
        }
    }

    fn lead(&mut self, p: usize, v: usize) {
        self.link(p, false);
        self.count[self.assign[p]] -= 1;
        self.assign[p] = v;
        self.count[v] += 1;
        self.link(p, true);
    }

    /// Successive cheapest cost-reducing paths until every node leads `floor(P/N)` or
    /// `ceil(P/N)` partitions.
    ///
    /// Primal-dual rounds: Dijkstra from the overloaded vertices sets the potentials, then every
    /// path of zero reduced cost (all of them cheapest) is used before searching again.
    fn balance(&mut self) {
        let n = self.count.len();
        let parts = self.assign.len();
        let (floor, ceil, at_ceil) = (parts / n, parts.div_ceil(n), parts % n);
        let mut state = Slots {
            floor,
            slots: ceil - floor,
            at_ceil,
            // Flow into the slot collector: how far above floor each node counts.
            up: self
                .count
                .iter()
                .map(|&c| c.saturating_sub(floor).min(ceil - floor))
                .collect(),
            potential: vec![0; n + 1],
        };
        // Every round moves at least one unit; there are at most 2P of them (P over ceil on
        // the nodes, P below floor).
        for _ in 0..=2 * (parts + n) {
            if (0..=n).all(|v| self.imbalance(&state, v) <= 0)
                || self.cheapest_path(&mut state).is_none()
            {
                return;
            }
            let mut round = Round::new(n + 1);
            let mut moved = false;
            for start in 0..=n {
                while self.imbalance(&state, start) > 0 {
                    match self.admissible_path(start, &state, &mut round) {
                        Some(steps) => {
                            self.shift(&steps, &mut state);
                            moved = true;
                        }
                        None => break,
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// How many more units `v` holds than it should (negative: fewer).
    fn imbalance(&self, state: &Slots, v: Vertex) -> i64 {
        let n = self.count.len();
        if v < n {
            self.count[v] as i64 - state.floor as i64 - state.up[v] as i64
        } else {
            state.up.iter().sum::<usize>() as i64 - state.at_ceil as i64
        }
    }

    /// The arcs out of `a` with their costs: to nodes (cheapest witness), and between nodes
    /// and the slot collector.
    fn arcs_out(&self, a: Vertex, state: &Slots, out: &mut Vec<(Vertex, i64)>) {
        let n = self.count.len();
        out.clear();
        if a == n {
            out.extend(
                state
                    .up
                    .iter()
                    .enumerate()
                    .filter(|(_, u)| **u > 0)
                    .map(|(y, _)| (y, 0)),
            );
        } else {
            out.extend(
                self.arcs[a]
                    .iter()
                    .filter_map(|(&y, set)| set.first().map(|&(c, _)| (y, c))),
            );
            if state.up[a] < state.slots {
                out.push((n, 0));
            }
        }
    }

    /// The cost of arc `a -> b` now, if it exists.
    fn arc_cost(&self, a: Vertex, b: Vertex, state: &Slots) -> Option<i64> {
        let n = self.count.len();
        if a == n {
            (state.up[b] > 0).then_some(0)
        } else if b == n {
            (state.up[a] < state.slots).then_some(0)
        } else {
            self.arcs[a]
                .get(&b)
                .and_then(|s| s.first())
                .map(|&(c, _)| c)
        }
    }

    /// A path of zero reduced cost from `start` to a vertex that wants more, by depth-first
    /// search over the round's arc lists (as in Dinic's algorithm: an arc found useless is
    /// skipped for the rest of the round, a vertex that leads nowhere is dead).
    fn admissible_path(
        &self,
        start: Vertex,
        state: &Slots,
        round: &mut Round,
    ) -> Option<Vec<(Vertex, Vertex)>> {
        if round.dead[start] {
            return None;
        }
        let mut path = vec![start];
        round.on_path[start] = true;
        while let Some(&a) = path.last() {
            if round.adj[a].is_none() {
                let mut arcs = Vec::new();
                self.arcs_out(a, state, &mut arcs);
                round.adj[a] = Some(arcs.into_iter().map(|(b, _)| b).collect());
            }
            let adj = round.adj[a].as_deref().unwrap_or(&[]);
            let mut found = None;
            while let Some(&b) = adj.get(round.next[a]) {
                let admissible = !round.dead[b]
                    && !round.on_path[b]
                    && self
                        .arc_cost(a, b, state)
                        .is_some_and(|c| c - state.potential[a] + state.potential[b] == 0);
                if admissible {
                    found = Some(b);
                    break;
                }
                round.next[a] += 1;
            }
            match found {
                Some(b) if self.imbalance(state, b) < 0 => {
                    let mut steps: Vec<(Vertex, Vertex)> =
                        path.windows(2).map(|w| (w[0], w[1])).collect();
                    steps.push((a, b));
                    for &v in &path {
                        round.on_path[v] = false;
                    }
                    return Some(steps);
                }
                Some(b) => {
                    round.on_path[b] = true;
                    path.push(b);
                }
                None => {
                    round.dead[a] = true;
                    round.on_path[a] = false;
                    path.pop();
                    if let Some(&parent) = path.last() {
                        round.next[parent] += 1;
                    }
                }
            }
        }
        None
    }

    /// Moves one unit along `steps`, each a (from, to) arc.
    fn shift(&mut self, steps: &[(Vertex, Vertex)], state: &mut Slots) {
        let n = self.count.len();
        // Pick the witnesses first, then move them: the arcs of a path are distinct.
        let mut moves = Vec::new();
        for &(from, to) in steps {
            if from == n {
                state.up[to] -= 1;
            } else if to == n {
                state.up[from] += 1;
            } else if let Some(&(_, p)) = self.arcs[from].get(&to).and_then(|s| s.first()) {
                moves.push((p, to));
            }
        }
        for (p, to) in moves {
            self.lead(p, to);
        }
    }

    /// Dijkstra over reduced costs from every vertex with too many units at once, until it
    /// reaches a vertex that wants more; updates the potentials so that every cheapest path
    /// has zero reduced cost, and returns that vertex, or `None` if none is reachable.
    ///
    /// Starting from all of them is sound: the distances still satisfy
    /// `d(b) <= d(a) + reduced(a, b)`, which is all the potential update needs.
    fn cheapest_path(&self, state: &mut Slots) -> Option<Vertex> {
        let v_count = self.count.len() + 1;
        let mut dist: Vec<i64> = (0..v_count)
            .map(|v| {
                if self.imbalance(state, v) > 0 {
                    0
                } else {
                    i64::MAX
                }
            })
            .collect();
        let mut done = vec![false; v_count];
        let mut arcs = Vec::new();
        let end = loop {
            let a = (0..v_count)
                .filter(|&v| !done[v] && dist[v] < i64::MAX)
                .min_by_key(|&v| (dist[v], v))?;
            done[a] = true;
            if self.imbalance(state, a) < 0 {
                break a;
            }
            self.arcs_out(a, state, &mut arcs);
            for &(b, cost) in &arcs {
                let d = dist[a] + cost - state.potential[a] + state.potential[b];
                if !done[b] && d < dist[b] {
                    dist[b] = d;
                }
            }
        };
        let reach = dist[end];
        for (pi, d) in state.potential.iter_mut().zip(&dist) {
            *pi -= (*d).min(reach);
        }
        Some(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("db-{i}")).collect()
    }

    fn copies(primary: &str, replicas: &[&str]) -> Copies {
        Copies {
            primary: Some(primary.to_string()),
            replicas: replicas.iter().map(|r| r.to_string()).collect(),
            epoch: 1,
        }
    }

    fn empty(parts: usize) -> Vec<Copies> {
        vec![Copies::default(); parts]
    }

    /// Properties 1 to 3 of every target: shape, distinct eligible copies, balance.
    fn check(
        nodes: &[String],
        current: &[Copies],
        rf: usize,
        out: &[Copies],
    ) -> Result<(), String> {
        if out.len() != current.len() {
            return Err(format!(
                "{} entries for {} partitions",
                out.len(),
                current.len()
            ));
        }
        let n = nodes.len();
        let k = rf.clamp(1, n.max(1)).min(n);
        let pos = |name: &String| nodes.iter().position(|x| x == name);
        let mut load = vec![0usize; n];
        let mut led = vec![0usize; n];
        for (p, (o, c)) in out.iter().zip(current).enumerate() {
            if o.epoch != c.epoch {
                return Err(format!(
                    "partition {p}: epoch {} became {}",
                    c.epoch, o.epoch
                ));
            }
            let held: Vec<Option<usize>> = o.nodes().map(pos).collect();
            if held.len() != k || held.iter().any(Option::is_none) {
                return Err(format!("partition {p}: {o:?} is not {k} eligible copies"));
            }
            let held: Vec<usize> = held.into_iter().flatten().collect();
            if n > 0 && o.primary.is_none() {
                return Err(format!("partition {p} has no primary"));
            }
            if held.iter().skip(1).any(|v| Some(v) == held.first()) {
                return Err(format!("partition {p}: the primary is also a replica"));
            }
            if held
                .iter()
                .skip(1)
                .zip(held.iter().skip(2))
                .any(|(a, b)| a >= b)
            {
                return Err(format!(
                    "partition {p}: replicas {:?} out of set order",
                    o.replicas
                ));
            }
            for &v in &held {
                load[v] += 1;
            }
            if let Some(&v) = held.first() {
                led[v] += 1;
            }
        }
        for (what, counts) in [("copies", &load), ("primaries", &led)] {
            let (lo, hi) = (counts.iter().min(), counts.iter().max());
            if let (Some(lo), Some(hi)) = (lo, hi)
                && hi - lo > 1
            {
                return Err(format!(
                    "{what} per node {counts:?} differ by more than one"
                ));
            }
        }
        Ok(())
    }

    /// Copies of the target that the current map does not have.
    fn added(current: &[Copies], out: &[Copies]) -> usize {
        out.iter()
            .zip(current)
            .map(|(o, c)| o.nodes().filter(|v| !c.holds(v)).count())
            .sum()
    }

    /// Per partition the eligible distinct current copies, the copies missing, and the total
    /// excess (copies beyond `k`).
    fn cleaned(nodes: &[String], current: &[Copies], k: usize) -> (Vec<Vec<usize>>, usize, usize) {
        let mut missing = 0;
        let mut excess = 0;
        let held = current
            .iter()
            .map(|c| {
                let mut held: Vec<usize> = Vec::new();
                for v in c.nodes().filter_map(|x| nodes.iter().position(|y| y == x)) {
                    if !held.contains(&v) {
                        held.push(v);
                    }
                }
                missing += k.saturating_sub(held.len());
                excess += held.len().saturating_sub(k);
                held
            })
            .collect();
        (held, missing, excess)
    }

    /// The load-only lower bound `max(m + E, D)` of the module docs, for maps without excess.
    fn lower_bound(nodes: &[String], current: &[Copies], rf: usize) -> (usize, usize) {
        let n = nodes.len();
        let k = rf.clamp(1, n);
        let (held, missing, _) = cleaned(nodes, current, k);
        let total = current.len() * k;
        let (floor, ceil) = (total / n, total.div_ceil(n));
        let mut load = vec![0usize; n];
        for v in held.iter().flatten() {
            load[*v] += 1;
        }
        let over: usize = load.iter().map(|&l| l.saturating_sub(ceil)).sum();
        let under: usize = load.iter().map(|&l| floor.saturating_sub(l)).sum();
        ((missing + over).max(under), missing)
    }

    /// A small min-cost flow (successive shortest paths with Bellman-Ford queues): the
    /// independent oracle the targets are measured against.
    #[derive(Default)]
    struct Flow {
        to: Vec<usize>,
        cap: Vec<i64>,
        cost: Vec<i64>,
        adj: Vec<Vec<usize>>,
    }

    impl Flow {
        fn edge(&mut self, a: usize, b: usize, cap: usize, cost: i64) {
            let need = a.max(b) + 1;
            if self.adj.len() < need {
                self.adj.resize(need, Vec::new());
            }
            for (x, y, c, w) in [(a, b, cap as i64, cost), (b, a, 0, -cost)] {
                self.adj[x].push(self.to.len());
                self.to.push(y);
                self.cap.push(c);
                self.cost.push(w);
            }
        }

        /// Cost of the cheapest flow of `units` from `s` to `t`.
        fn cheapest(&mut self, s: usize, t: usize, units: usize) -> i64 {
            let vs = self.adj.len();
            let mut total = 0;
            let mut left = units as i64;
            while left > 0 {
                let mut dist = vec![i64::MAX; vs];
                let mut prev = vec![usize::MAX; vs];
                let mut queued = vec![false; vs];
                dist[s] = 0;
                let mut queue = VecDeque::from([s]);
                while let Some(a) = queue.pop_front() {
                    queued[a] = false;
                    for &e in &self.adj[a] {
                        let b = self.to[e];
                        if self.cap[e] > 0 && dist[a] + self.cost[e] < dist[b] {
                            dist[b] = dist[a] + self.cost[e];
                            prev[b] = e;
                            if !queued[b] {
                                queued[b] = true;
                                queue.push_back(b);
                            }
                        }
                    }
                }
                assert!(dist[t] < i64::MAX, "no feasible flow");
                let mut push = left;
                let mut x = t;
                while x != s {
                    push = push.min(self.cap[prev[x]]);
                    x = self.to[prev[x] ^ 1];
                }
                let mut x = t;
                while x != s {
                    self.cap[prev[x]] -= push;
                    self.cap[prev[x] ^ 1] += push;
                    x = self.to[prev[x] ^ 1];
                }
                total += push * dist[t];
                left -= push;
            }
            total
        }
    }

    const BIG: i64 = 1_000_000_000;

    /// The fewest copies any balanced map over `nodes` adds to `current`.
    fn fewest_added(nodes: &[String], current: &[Copies], rf: usize) -> usize {
        let n = nodes.len();
        let k = rf.clamp(1, n);
        let parts = current.len();
        let total = parts * k;
        let (floor, ceil) = (total / n, total.div_ceil(n));
        let sink = parts + n + 1;
        let mut flow = Flow::default();
        for (p, c) in current.iter().enumerate() {
            flow.edge(0, 1 + p, k, 0);
            for (v, name) in nodes.iter().enumerate() {
                flow.edge(1 + p, 1 + parts + v, 1, i64::from(!c.holds(name)));
            }
        }
        for v in 0..n {
            flow.edge(1 + parts + v, sink, floor, -BIG);
            flow.edge(1 + parts + v, sink, ceil - floor, 0);
        }
        let cost = flow.cheapest(0, sink, total) + BIG * (n * floor) as i64;
        cost as usize
    }

    /// What a choice of primaries costs: `P + 1` per partition whose current primary holds a
    /// copy but no longer leads, 1 per primary on a copy the current map lacks.
    fn primary_cost(
        nodes: &[String],
        current: &[Copies],
        out: &[Copies],
        p: usize,
        v: &str,
    ) -> i64 {
        let change = current.len() as i64 + 1;
        let c = &current[p];
        let stays = c
            .primary
            .as_ref()
            .filter(|x| nodes.contains(x) && out[p].holds(x));
        let moved = if stays.is_some_and(|s| s != v) {
            change
        } else {
            0
        };
        moved + i64::from(!c.holds(v))
    }

    /// The cheapest balanced choice of primaries over the copies of `out`.
    fn cheapest_primaries(nodes: &[String], current: &[Copies], out: &[Copies]) -> i64 {
        let n = nodes.len();
        let parts = out.len();
        let (floor, ceil) = (parts / n, parts.div_ceil(n));
        let sink = parts + n + 1;
        let mut flow = Flow::default();
        for (p, o) in out.iter().enumerate() {
            flow.edge(0, 1 + p, 1, 0);
            for v in o.nodes() {
                let i = nodes.iter().position(|x| x == v).unwrap();
                flow.edge(
                    1 + p,
                    1 + parts + i,
                    1,
                    primary_cost(nodes, current, out, p, v),
                );
            }
        }
        for v in 0..n {
            flow.edge(1 + parts + v, sink, floor, -BIG);
            flow.edge(1 + parts + v, sink, ceil - floor, 0);
        }
        flow.cheapest(0, sink, parts) + BIG * (n * floor) as i64
    }

    fn primaries_cost(nodes: &[String], current: &[Copies], out: &[Copies]) -> i64 {
        (0..out.len())
            .filter_map(|p| out[p].primary.as_deref().map(|v| (p, v)))
            .map(|(p, v)| primary_cost(nodes, current, out, p, v))
            .sum()
    }

    /// Partitions whose current primary still holds a copy in `out` but no longer leads.
    fn primaries_moved(current: &[Copies], out: &[Copies]) -> usize {
        out.iter()
            .zip(current)
            .filter(|(o, c)| {
                c.primary
                    .as_ref()
                    .is_some_and(|x| o.holds(x) && o.primary.as_ref() != Some(x))
            })
            .count()
    }

    /// Everything the tests check of one target.
    fn verify(nodes: &[String], current: &[Copies], rf: usize) -> Vec<Copies> {
        let out = target(nodes, current, rf);
        check(nodes, current, rf, &out).unwrap();
        assert_eq!(target(nodes, current, rf), out, "not deterministic");
        assert_eq!(
            target(nodes, &out, rf),
            out,
            "a target is not its own target"
        );
        out
    }

    #[test]
    fn an_empty_map_is_placed_evenly_in_set_order() {
        let nodes = names(0..12);
        let out = verify(&nodes, &empty(30), 3);
        assert_eq!(
            out[0],
            Copies {
                epoch: 0,
                ..copies("db-0", &["db-1", "db-2"])
            }
        );
        // Ordinal order, not string order: db-9 comes before db-10.
        assert_eq!(
            out[3],
            Copies {
                epoch: 0,
                ..copies("db-9", &["db-10", "db-11"])
            }
        );
        assert_eq!(added(&empty(30), &out), 90);
    }

    #[test]
    fn scale_up_moves_the_fewest_copies_and_primaries() {
        let three = names(0..3);
        let start = verify(&three, &empty(28), 2);
        // 56 copies: 19, 19, 18 on three nodes. On five nodes one holds 12 and four 11, so the
        // old nodes keep at most 12 + 11 + 11 and 56 - 34 copies move; on six nodes two hold 10
        // and four 9, so they keep at most 10 + 10 + 9 and 56 - 29 move.
        for (n, moves) in [(5, 22), (6, 27)] {
            let nodes = names(0..n);
            let out = verify(&nodes, &start, 2);
            assert_eq!(added(&start, &out), moves, "3 -> {n} nodes");
            assert_eq!(lower_bound(&nodes, &start, 2).0, moves);
            assert_eq!(
                primaries_cost(&nodes, &start, &out),
                cheapest_primaries(&nodes, &start, &out)
            );
            // Only the primaries balance needs move: the old nodes lead 10, 9 and 9, and may
            // keep ceil(28/n) each (minus any whose copy had to move).
            let keep = 28usize.div_ceil(n);
            let still: Vec<usize> = (0..3)
                .map(|v| {
                    let name = format!("db-{v}");
                    (start.iter().zip(&out))
                        .filter(|(b, a)| b.primary.as_ref() == Some(&name) && a.holds(&name))
                        .count()
                })
                .collect();
            let over: usize = still.iter().map(|l| l.saturating_sub(keep)).sum();
            assert_eq!(primaries_moved(&start, &out), over);
        }
    }

    #[test]
    fn scale_down_drains_the_removed_node() {
        let all = names(0..5);
        let start = verify(&all, &empty(20), 3);
        let nodes: Vec<String> = all.iter().filter(|n| *n != "db-1").cloned().collect();
        let out = verify(&nodes, &start, 3);
        assert!(out.iter().all(|c| !c.holds("db-1")));
        // The 12 copies on db-1 are re-made elsewhere, and nothing else moves.
        assert_eq!(added(&start, &out), 12);
        // db-1's 4 primaries go one to each remaining node, and no other primary moves: an
        // existing replica is preferred only where that costs no second switchover.
        for (before, after) in start.iter().zip(&out) {
            if before.primary.as_deref() != Some("db-1") {
                assert_eq!(before.primary, after.primary);
            }
        }
        assert_eq!(
            primaries_cost(&nodes, &start, &out),
            cheapest_primaries(&nodes, &start, &out)
        );
        // A drained primary goes to an existing replica when balance allows it.
        let map = vec![
            copies("db-0", &["db-1"]),
            copies("db-1", &["db-2"]),
            copies("db-2", &["db-3"]),
            copies("db-3", &["db-0"]),
        ];
        let out = verify(&names(0..3), &map, 2);
        assert_eq!(out[3].primary.as_deref(), Some("db-0"));
        assert_eq!(added(&map, &out), 2);
    }

    #[test]
    fn a_replication_factor_above_the_node_count_puts_a_copy_everywhere() {
        let nodes = names(0..2);
        let out = verify(&nodes, &empty(5), 3);
        assert!(out.iter().all(|c| c.holds("db-0") && c.holds("db-1")));
        let led = out
            .iter()
            .filter(|c| c.primary.as_deref() == Some("db-0"))
            .count();
        assert!(led == 2 || led == 3);
        // No nodes: nothing to place on.
        assert_eq!(
            target(&[], &out, 3),
            vec![
                Copies {
                    epoch: 0,
                    ..Copies::default()
                };
                5
            ]
        );
    }

    #[test]
    fn a_balanced_map_is_left_unchanged() {
        let nodes = names(0..3);
        let map = vec![
            copies("db-0", &["db-1"]),
            copies("db-1", &["db-2"]),
            copies("db-2", &["db-0"]),
            copies("db-1", &["db-0"]),
        ];
        assert_eq!(verify(&nodes, &map, 2), map);
    }

    #[test]
    fn duplicate_and_unknown_copies_are_repaired() {
        let nodes = names(0..3);
        let map = vec![
            // The primary listed again, and a replica twice.
            copies("db-0", &["db-0", "db-1", "db-1"]),
            // A copy on a node that is not in the set.
            copies("db-7", &["db-2"]),
            // Nothing at all.
            Copies::default(),
        ];
        let out = verify(&nodes, &map, 2);
        assert_eq!(out[0], copies("db-0", &["db-1"]));
        assert!(out[1].holds("db-2") && !out[1].holds("db-7"));
        assert_eq!(added(&map, &out), 3);
    }

    #[test]
    fn a_missing_copy_with_no_room_costs_one_more_move() {
        // Loads 4, 4, 5, 5, 5 and partition 0 lacks a copy, but the only room is on the nodes
        // at 4, which already hold it: one more copy moves than `missing + max(E, D)` = 1.
        let nodes = names(0..5);
        let map = vec![
            copies("db-0", &["db-1", "db-2"]),
            copies("db-1", &["db-2", "db-3", "db-4"]),
            copies("db-1", &["db-2", "db-3", "db-4"]),
            copies("db-0", &["db-2", "db-3", "db-4"]),
            copies("db-0", &["db-2", "db-3", "db-4"]),
            copies("db-0", &["db-1", "db-3", "db-4"]),
        ];
        let out = verify(&nodes, &map, 4);
        assert_eq!(lower_bound(&nodes, &map, 4), (1, 1));
        assert_eq!(fewest_added(&nodes, &map, 4), 2);
        assert_eq!(added(&map, &out), 2);
    }

    #[test]
    fn four_thousand_partitions_over_sixty_four_nodes() {
        let parts = 4096;
        let mut nodes = names(0..64);
        let start = empty(parts);
        let mut map = verify(&nodes, &start, 3);
        assert_eq!(added(&start, &map), 3 * parts);
        // One node goes, then two come.
        nodes.retain(|n| n != "db-17");
        let out = verify(&nodes, &map, 3);
        assert_eq!(added(&map, &out), lower_bound(&nodes, &map, 3).0);
        assert_eq!(
            added(&map, &out),
            map.iter().filter(|c| c.holds("db-17")).count()
        );
        map = out;
        nodes.extend(names(64..66));
        let out = verify(&nodes, &map, 3);
        assert_eq!(added(&map, &out), lower_bound(&nodes, &map, 3).0);
        assert_eq!(
            primaries_cost(&nodes, &map, &out),
            primaries_cost(&nodes, &map, &target(&nodes, &map, 3))
        );
    }

    /// Maps of every kind: empty, partial, unbalanced, with duplicates, with copies outside
    /// `nodes` (the `extra` names) and with more copies than `rf`.
    fn any_map() -> impl Strategy<Value = (Vec<String>, Vec<Copies>, usize)> {
        (1usize..12, 1usize..64, 1usize..=4, 0usize..4).prop_flat_map(|(n, parts, rf, extra)| {
            let universe = n + extra;
            let entry = (
                proptest::option::of(0..universe),
                proptest::collection::vec(0..universe, 0..5),
                0u64..5,
            );
            let map = proptest::collection::vec(entry, parts).prop_map(|es| {
                es.into_iter()
                    .map(|(p, rs, epoch)| Copies {
                        primary: p.map(|i| format!("db-{i}")),
                        replicas: rs.into_iter().map(|i| format!("db-{i}")).collect(),
                        epoch,
                    })
                    .collect::<Vec<_>>()
            });
            (Just(names(0..n)), map, Just(rf))
        })
    }

    /// Maps as the operator records them: at most `rf` distinct copies per partition, some
    /// perhaps on nodes that left.
    fn tidy_map() -> impl Strategy<Value = (Vec<String>, Vec<Copies>, usize)> {
        (1usize..12, 1usize..64, 1usize..=4, 0usize..4).prop_flat_map(|(n, parts, rf, extra)| {
            let all: Vec<usize> = (0..n + extra).collect();
            let entry = (
                proptest::sample::subsequence(all, 0..=rf.min(n + extra)).prop_shuffle(),
                any::<bool>(),
            );
            let map = proptest::collection::vec(entry, parts).prop_map(|es| {
                es.into_iter()
                    .map(|(held, led)| {
                        let mut held = held.into_iter().map(|i| format!("db-{i}"));
                        let primary = if led { held.next() } else { None };
                        Copies {
                            primary,
                            replicas: held.collect(),
                            epoch: 0,
                        }
                    })
                    .collect::<Vec<_>>()
            });
            (Just(names(0..n)), map, Just(rf))
        })
    }

    /// A balanced map over `from` nodes, then the set scaled to `to` nodes (the first `to`
    /// names, or with the nodes in `gone` removed).
    fn rescaled() -> impl Strategy<Value = (Vec<String>, Vec<Copies>, usize)> {
        (
            1usize..12,
            1usize..12,
            1usize..64,
            1usize..=4,
            any::<bool>(),
        )
            .prop_map(|(from, to, parts, rf, holes)| {
                let start = target(&names(0..from), &empty(parts), rf);
                let nodes = if holes {
                    // Keep every node whose index is not a multiple of (from - to + 1).
                    let step = from.saturating_sub(to) + 1;
                    names(0..from.max(to))
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| step == 1 || i % step != 0)
                        .map(|(_, n)| n)
                        .collect()
                } else {
                    names(0..to)
                };
                (nodes, start, rf)
            })
            .prop_filter("some node stays", |(nodes, _, _)| !nodes.is_empty())
    }

    /// Copies: the fewest possible for maps without excess copies, within the excess otherwise.
    fn assert_fewest(
        nodes: &[String],
        current: &[Copies],
        rf: usize,
        out: &[Copies],
    ) -> Result<(), TestCaseError> {
        let k = rf.clamp(1, nodes.len());
        let (_, missing, excess) = cleaned(nodes, current, k);
        let got = added(current, out);
        let best = fewest_added(nodes, current, rf);
        prop_assert!(best <= got, "the oracle found {best} > {got}");
        if excess == 0 {
            let (lb, _) = lower_bound(nodes, current, rf);
            prop_assert_eq!(got, best);
            prop_assert!(
                lb <= got && got <= lb + missing,
                "{} outside [{}, {}]",
                got,
                lb,
                lb + missing
            );
        } else {
            // Dropping other excess copies than the best map would costs at most one each.
            prop_assert!(got <= best + excess, "{} > {} + {}", got, best, excess);
        }
        Ok(())
    }

    fn assert_cheapest_primaries(
        nodes: &[String],
        current: &[Copies],
        out: &[Copies],
    ) -> Result<(), TestCaseError> {
        let got = primaries_cost(nodes, current, out);
        let best = cheapest_primaries(nodes, current, out);
        let change = current.len() as i64 + 1;
        prop_assert_eq!(got, best);
        // In particular, as few primaries that still hold a copy move as balance allows.
        prop_assert_eq!(primaries_moved(current, out) as i64, best / change);
        Ok(())
    }

    proptest! {
        /// Properties 2, 3 and 5, and determinism, on any map.
        #[test]
        fn every_target_is_balanced_stable_and_deterministic((nodes, current, rf) in any_map()) {
            let out = target(&nodes, &current, rf);
            prop_assert_eq!(check(&nodes, &current, rf, &out), Ok(()));
            prop_assert_eq!(&target(&nodes, &current, rf), &out);
            prop_assert_eq!(&target(&nodes, &out, rf), &out);
        }

        /// Moves bounded, on any map.
        #[test]
        fn any_map_moves_the_fewest_copies_and_primaries((nodes, current, rf) in any_map()) {
            let out = target(&nodes, &current, rf);
            assert_fewest(&nodes, &current, rf, &out)?;
            assert_cheapest_primaries(&nodes, &current, &out)?;
        }

        /// Moves bounded, on maps as the operator records them.
        #[test]
        fn recorded_maps_move_the_fewest_copies_and_primaries((nodes, current, rf) in tidy_map()) {
            let out = target(&nodes, &current, rf);
            prop_assert_eq!(check(&nodes, &current, rf, &out), Ok(()));
            prop_assert_eq!(&target(&nodes, &out, rf), &out);
            assert_fewest(&nodes, &current, rf, &out)?;
            assert_cheapest_primaries(&nodes, &current, &out)?;
        }

        /// Scaling a balanced set up or down (the 3 -> 6 nodes, 28 partitions, rf 2 case among
        /// them).
        #[test]
        fn rescaling_a_balanced_set_moves_the_fewest((nodes, current, rf) in rescaled()) {
            let out = target(&nodes, &current, rf);
            prop_assert_eq!(check(&nodes, &current, rf, &out), Ok(()));
            prop_assert_eq!(&target(&nodes, &out, rf), &out);
            assert_fewest(&nodes, &current, rf, &out)?;
            assert_cheapest_primaries(&nodes, &current, &out)?;
        }
    }
}
