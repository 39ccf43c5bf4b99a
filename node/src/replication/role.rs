//! A partition's role on this node, the rules for changing it, and the small file that keeps it
//! across restarts.
//!
//! The rules are pure functions of the held role and the request, so they can be tested as a
//! table and so every admin call applies them the same way (DESIGN.md, invariant 1): a lower
//! epoch than the one held is rejected; a higher one is accepted; an equal one only when it
//! repeats what is already held (a retry), or for the calls the proto allows at an equal epoch
//! (follow, fence). The file is written to a temporary name, synced and renamed, so a crash
//! leaves the old role or the new one, never half of one.

use crate::Error;
use crate::proto::NodeAddress;
use std::path::Path;

/// The settings of the primary role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrimarySettings {
    /// node_ids of the replicas expected to follow; empty accepts any replica.
    pub replicas: Vec<String>,
    /// Copies the partition is configured with, the primary included (QUORUM is a majority).
    pub copies: u32,
    /// Writes are refused while fewer replicas than this are in sync.
    pub min_in_sync: u32,
}

/// What a node does for one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Role {
    /// No role was assigned yet: the copy serves reads of what it holds and refuses writes.
    #[default]
    Unassigned,
    /// Accepts writes and streams them to replicas.
    Primary(PrimarySettings),
    /// Follows a primary; serves reads and refuses writes.
    Replica(NodeAddress),
    /// Accepts no writes and follows nobody until given a role at a newer epoch.
    Fenced,
}

impl Role {
    /// The proto enum value.
    pub fn proto(&self) -> crate::proto::Role {
        match self {
            Role::Unassigned => crate::proto::Role::Unspecified,
            Role::Primary(_) => crate::proto::Role::Primary,
            Role::Replica(_) => crate::proto::Role::Replica,
            Role::Fenced => crate::proto::Role::Fenced,
        }
    }

    /// A short name for logs and INFO.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Unassigned => "unassigned",
            Role::Primary(_) => "primary",
            Role::Replica(_) => "replica",
            Role::Fenced => "fenced",
        }
    }
}

/// What a replica's stream was opened for: the primary it follows and the epoch it follows it
/// at. Whatever the stream carries (entries, a truncation, a snapshot) is applied, and
/// acknowledged, only while the copy's role is still exactly this one: a role change can land
/// while a message of the old stream is being handled, and from then on that stream speaks for
/// a history the copy no longer follows (invariant 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The epoch the copy follows at.
    pub epoch: u64,
    /// The primary it follows.
    pub primary: NodeAddress,
}

/// A role at an epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleState {
    /// The epoch the node holds for the partition.
    pub epoch: u64,
    /// The role.
    pub role: Role,
}

impl RoleState {
    /// A standalone node's role: primary at epoch 1, the only copy.
    pub fn standalone() -> Self {
        Self::standalone_at(1)
    }

    /// Why a copy in this role refuses to act as the partition's primary (a client write, a
    /// replica's stream); `None` for a primary. A replica names the primary it follows.
    pub fn refusal(&self, partition: u32) -> Option<Error> {
        let epoch = self.epoch;
        match &self.role {
            Role::Primary(_) => None,
            Role::Replica(p) => Some(Error::NotPrimary {
                partition,
                epoch,
                primary: Some(p.clone()),
            }),
            Role::Unassigned => Some(Error::NotPrimary {
                partition,
                epoch,
                primary: None,
            }),
            Role::Fenced => Some(Error::Fenced { partition, epoch }),
        }
    }

    /// Whether this is the replica role `up` was opened for: following the same primary at the
    /// same epoch.
    pub fn follows(&self, up: &Upstream) -> bool {
        self.epoch == up.epoch && matches!(&self.role, Role::Replica(a) if *a == up.primary)
    }

    /// Primary at `epoch`, the only copy.
    pub fn standalone_at(epoch: u64) -> Self {
        Self {
            epoch,
            role: Role::Primary(PrimarySettings {
                replicas: Vec::new(),
                copies: 1,
                min_in_sync: 0,
            }),
        }
    }
}

/// Which admin call asks for a change; the epoch rule differs between them (see the proto).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// AssignRole: an equal epoch only as an identical retry.
    Assign,
    /// Promote: the epoch must be higher (an equal epoch as an identical retry).
    Promote,
    /// Follow: an equal epoch is allowed.
    Follow,
    /// Fence: an equal epoch is allowed.
    Fence,
    /// Drop: an equal epoch is allowed.
    Drop,
}

/// Checks a role change against the held role and the last epoch in the log. Pure.
///
/// - A lower epoch than held: [`Error::StaleEpoch`].
/// - Becoming primary at an epoch below the last entry's epoch would write entries older than
///   ones already held: refused.
/// - An equal epoch: accepted when the role is identical (a retry), or for follow, fence and
///   drop. A different primary or replica assignment at the same epoch would let two nodes
///   believe they lead one epoch, which invariant 1 forbids.
pub fn check_change(
    partition: u32,
    held: &RoleState,
    last_entry_epoch: u64,
    change: Change,
    epoch: u64,
    role: &Role,
) -> Result<(), Error> {
    if epoch < held.epoch {
        return Err(Error::StaleEpoch {
            partition,
            got: epoch,
            held: held.epoch,
        });
    }
    if epoch == 0 && !matches!(role, Role::Unassigned | Role::Fenced) {
        return Err(Error::BadRole {
            partition,
            reason: "roles are assigned at epoch 1 or higher; epoch 0 means never assigned".into(),
        });
    }
    if matches!(role, Role::Primary(_)) && epoch < last_entry_epoch {
        return Err(Error::BadRole {
            partition,
            reason: format!(
                "cannot lead at epoch {epoch}: the log already holds entries of epoch \
                 {last_entry_epoch}"
            ),
        });
    }
    if epoch > held.epoch || held.role == *role {
        return Ok(());
    }
    match change {
        Change::Follow | Change::Fence | Change::Drop => Ok(()),
        Change::Assign | Change::Promote => Err(Error::BadRole {
            partition,
            reason: format!(
                "epoch {epoch} is already held as {}; a different role needs a newer epoch",
                held.role.name()
            ),
        }),
    }
}

/// The role file of a partition directory.
pub const ROLE_FILE: &str = "role";

/// Encodes a role as `key=value` lines.
pub fn encode(state: &RoleState) -> String {
    let mut s = format!("epoch={}\nrole={}\n", state.epoch, state.role.name());
    match &state.role {
        Role::Primary(p) => {
            s.push_str(&format!(
                "replicas={}\ncopies={}\nmin_in_sync={}\n",
                p.replicas.join(","),
                p.copies,
                p.min_in_sync
            ));
        }
        Role::Replica(a) => {
            s.push_str(&format!(
                "primary_id={}\nprimary_grpc={}\nprimary_resp={}\n",
                a.node_id, a.grpc_addr, a.resp_addr
            ));
        }
        Role::Unassigned | Role::Fenced => {}
    }
    s
}

/// Decodes what [`encode`] wrote.
pub fn decode(text: &str) -> Result<RoleState, String> {
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
    };
    let num = |k: &str| -> Result<u64, String> {
        get(k)
            .ok_or_else(|| format!("missing {k}"))?
            .parse()
            .map_err(|e| format!("bad {k}: {e}"))
    };
    let epoch = num("epoch")?;
    let role = match get("role").ok_or("missing role")? {
        "unassigned" => Role::Unassigned,
        "fenced" => Role::Fenced,
        "primary" => Role::Primary(PrimarySettings {
            replicas: get("replicas")
                .unwrap_or("")
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            copies: u32::try_from(num("copies")?).map_err(|e| e.to_string())?,
            min_in_sync: u32::try_from(num("min_in_sync")?).map_err(|e| e.to_string())?,
        }),
        "replica" => Role::Replica(NodeAddress {
            node_id: get("primary_id").unwrap_or("").to_string(),
            grpc_addr: get("primary_grpc")
                .ok_or("missing primary_grpc")?
                .to_string(),
            resp_addr: get("primary_resp").unwrap_or("").to_string(),
        }),
        other => return Err(format!("unknown role {other:?}")),
    };
    Ok(RoleState { epoch, role })
}

/// Reads the role file of `partition` in `dir`; `None` when there is none.
pub fn load(dir: &Path, partition: u32) -> Result<Option<RoleState>, Error> {
    let path = dir.join(ROLE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => decode(&text)
            .map(Some)
            .map_err(|reason| Error::Unrecoverable {
                partition,
                dir: dir.to_path_buf(),
                reason: format!("the role file {} is damaged: {reason}", path.display()),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading role file", path, e)),
    }
}

/// Writes the role file in `dir` atomically and durably.
pub fn save(dir: &Path, state: &RoleState) -> Result<(), Error> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating partition directory", dir, e))?;
    let tmp = dir.join(format!("{ROLE_FILE}.tmp"));
    let path = dir.join(ROLE_FILE);
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("writing role file", &tmp, e))?;
    f.write_all(encode(state).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("writing role file", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("renaming role file", &path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing partition directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary() -> Role {
        Role::Primary(PrimarySettings {
            replicas: vec!["b".into(), "c".into()],
            copies: 3,
            min_in_sync: 1,
        })
    }

    fn replica(of: &str) -> Role {
        Role::Replica(NodeAddress {
            node_id: of.into(),
            grpc_addr: format!("{of}:7379"),
            resp_addr: String::new(),
        })
    }

    #[test]
    fn epoch_rules_as_a_table() {
        let held = RoleState {
            epoch: 5,
            role: primary(),
        };
        // (change, epoch, role, accepted)
        let cases = [
            (Change::Assign, 4, primary(), false),
            (Change::Follow, 4, replica("b"), false),
            (Change::Fence, 4, Role::Fenced, false),
            (Change::Assign, 5, primary(), true),
            (Change::Assign, 5, replica("b"), false),
            (Change::Promote, 5, primary(), true),
            (Change::Follow, 5, replica("b"), true),
            (Change::Fence, 5, Role::Fenced, true),
            (Change::Assign, 6, replica("b"), true),
            (Change::Promote, 6, primary(), true),
        ];
        for (change, epoch, role, ok) in cases {
            let got = check_change(0, &held, 5, change, epoch, &role);
            assert_eq!(got.is_ok(), ok, "{change:?} at {epoch} as {}", role.name());
        }
        let stale = check_change(0, &held, 5, Change::Assign, 4, &primary());
        assert!(matches!(
            stale,
            Err(Error::StaleEpoch {
                got: 4,
                held: 5,
                ..
            })
        ));
    }

    #[test]
    fn leading_below_the_logs_last_epoch_is_refused() {
        let held = RoleState::default();
        assert!(check_change(0, &held, 3, Change::Assign, 2, &primary()).is_err());
        assert!(check_change(0, &held, 3, Change::Assign, 3, &primary()).is_ok());
        assert!(check_change(0, &held, 0, Change::Assign, 0, &primary()).is_err());
    }

    #[test]
    fn roles_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), 0).unwrap(), None);
        for role in [primary(), replica("a"), Role::Fenced, Role::Unassigned] {
            let state = RoleState { epoch: 7, role };
            save(dir.path(), &state).unwrap();
            assert_eq!(load(dir.path(), 0).unwrap(), Some(state));
        }
        std::fs::write(dir.path().join(ROLE_FILE), "epoch=x\n").unwrap();
        assert!(load(dir.path(), 0).is_err());
    }
}
