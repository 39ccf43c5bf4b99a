//! The planner: pure decisions from observations, with no kube, tokio or tonic inside
//! (DESIGN.md, "Operator"). The controller observes, asks the planner, and carries out the
//! actions it returns.
//!
//! - [`failover`]: which replica replaces a lost primary, or why none may.
//! - [`placement`]: the map a set should converge to, with as few changes as possible.
//! - [`plan`]: the next map to record and the node calls that carry it out.

pub mod failover;
pub mod placement;
pub mod plan;

/// Where one partition's copies live: the partition map's entry, as the planner sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Copies {
    /// The node (pod name) that is primary; `None` while the partition has none.
    pub primary: Option<String>,
    /// The nodes holding replicas, in the set's order (pod ordinal), never including the primary.
    pub replicas: Vec<String>,
    /// The partition's epoch.
    pub epoch: u64,
}

impl Copies {
    /// Every node holding a copy: the primary first, then the replicas.
    pub fn nodes(&self) -> impl Iterator<Item = &String> {
        self.primary.iter().chain(self.replicas.iter())
    }

    /// Whether `node` holds a copy.
    pub fn holds(&self, node: &str) -> bool {
        self.nodes().any(|n| n == node)
    }
}
