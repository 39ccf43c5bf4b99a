//! INFO [section ...]: the node's state in Redis's `field:value` format. Sections: server,
//! clients, persistence, replication, keyspace (the default and `all` give every one).
//! Fields Redis tools read keep Redis's names; Partita's own are prefixed `partita_`.

use super::{Ctx, Flow};
use crate::engine::Engine;
use crate::metrics;
use crate::server::resp::codec::write_bulk;
use bytes::Bytes;
use std::fmt::Write;

const SECTIONS: [&str; 5] = [
    "server",
    "clients",
    "persistence",
    "replication",
    "keyspace",
];

/// Runs INFO.
pub fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    let wanted: Vec<String> = args[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| w == "all" || w == "default" || w == "everything");
    let mut text = String::new();
    for section in SECTIONS {
        if all || wanted.iter().any(|w| w == section) {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            write_section(&mut text, section, ctx.engine);
        }
    }
    write_bulk(ctx.out, text);
    Flow::Continue
}

/// The replication section: Redis's summary fields, then one line per partition with its role,
/// epoch, offsets and, as a primary, every replica's lag or, as a replica, its link.
fn write_replication(t: &mut String, engine: &Engine) {
    use crate::replication::role::Role;
    let now = crate::engine::now_ms();
    let parts = engine.partitions();
    let roles: Vec<_> = parts.iter().map(|p| p.role()).collect();
    let primaries = roles
        .iter()
        .filter(|r| matches!(r.role, Role::Primary(_)))
        .count();
    let replicas = roles
        .iter()
        .filter(|r| matches!(r.role, Role::Replica(_)))
        .count();
    let offset: u64 = parts.iter().map(|p| p.last().offset).sum();
    // Replicas connected to any partition this node leads, by node id.
    let mut connected: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for p in parts.iter().filter(|p| p.is_primary()) {
        let t = p.tracker();
        for r in t.replicas.iter().filter(|r| r.session.is_some()) {
            let e = connected.entry(r.node_id.clone()).or_default();
            e.0 += r.acked;
            e.1 = e.1.max(t.lag_ms(r.acked, now));
        }
    }
    let role = if primaries == 0 && replicas > 0 {
        "slave"
    } else {
        "master"
    };
    let _ = write!(t, "# Replication\r\nrole:{role}\r\n");
    if role == "slave" {
        let first = roles.iter().find_map(|r| match &r.role {
            Role::Replica(a) => Some(a.clone()),
            _ => None,
        });
        let all_up = parts
            .iter()
            .zip(&roles)
            .filter(|(_, r)| matches!(r.role, Role::Replica(_)))
            .all(|(p, _)| p.link().state == crate::proto::LinkState::Streaming);
        if let Some(a) = first {
            let (host, port) = a
                .resp_addr
                .rsplit_once(':')
                .unwrap_or((a.grpc_addr.as_str(), "0"));
            let _ = write!(t, "master_host:{host}\r\nmaster_port:{port}\r\n");
        }
        let _ = write!(
            t,
            "master_link_status:{}\r\nslave_repl_offset:{offset}\r\nslave_read_only:1\r\n",
            if all_up { "up" } else { "down" }
        );
    }
    let _ = write!(t, "connected_slaves:{}\r\n", connected.len());
    for (i, (id, (acked, lag_ms))) in connected.iter().enumerate() {
        let _ = write!(
            t,
            "slave{i}:id={id},state=online,offset={acked},lag={}\r\n",
            lag_ms / 1000
        );
    }
    let _ = write!(
        t,
        "master_repl_offset:{offset}\r\npartita_primaries:{primaries}\r\npartita_replicas:{replicas}\r\n"
    );
    for (p, role) in parts.iter().zip(&roles) {
        let last = p.last();
        let _ = write!(
            t,
            "partition{}:role={},epoch={},offset={},durable_offset={}",
            p.id(),
            role.role.name(),
            role.epoch,
            last.offset,
            p.durable_offset(),
        );
        match &role.role {
            Role::Primary(s) => {
                let tr = p.tracker();
                let _ = write!(
                    t,
                    ",commit_offset={},copies={},min_in_sync={},in_sync={},replicas=",
                    tr.commit_offset().min(last.offset),
                    s.copies,
                    s.min_in_sync,
                    tr.in_sync_count(now),
                );
                let lags: Vec<String> = tr
                    .replicas
                    .iter()
                    .map(|r| {
                        format!(
                            "{}/{}/{}/{}ms/{}",
                            r.node_id,
                            if r.session.is_some() {
                                "connected"
                            } else {
                                "disconnected"
                            },
                            last.offset.saturating_sub(r.acked),
                            tr.lag_ms(r.acked, now),
                            if tr.in_sync(r, now) {
                                "in_sync"
                            } else {
                                "behind"
                            },
                        )
                    })
                    .collect();
                let _ = write!(t, "{}", lags.join(";"));
            }
            Role::Replica(a) => {
                let l = p.link();
                let _ = write!(
                    t,
                    ",primary={}@{},link={},last_sync={},lag_entries={},lag_ms={},full_syncs={},partial_syncs={}",
                    a.node_id,
                    a.grpc_addr,
                    l.state
                        .as_str_name()
                        .trim_start_matches("LINK_STATE_")
                        .to_ascii_lowercase(),
                    l.last_sync
                        .as_str_name()
                        .trim_start_matches("SYNC_KIND_")
                        .to_ascii_lowercase(),
                    l.lag_entries,
                    l.lag_ms,
                    l.full_syncs,
                    l.partial_syncs,
                );
            }
            Role::Fenced | Role::Unassigned => {}
        }
        let _ = write!(t, "\r\n");
    }
}

fn write_section(t: &mut String, section: &str, engine: &Engine) {
    let cfg = engine.config();
    // Writing to a String cannot fail.
    let _ = match section {
        "server" => {
            let up = engine.uptime().as_secs();
            write!(
                t,
                "# Server\r\nredis_version:7.0.0\r\npartita_version:{}\r\nredis_mode:standalone\r\n\
                 os:{}\r\narch_bits:64\r\nprocess_id:{}\r\nuptime_in_seconds:{up}\r\n\
                 uptime_in_days:{}\r\npartita_partitions:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::process::id(),
                up / 86_400,
                cfg.partitions,
            )
        }
        "clients" => write!(
            t,
            "# Clients\r\nconnected_clients:{}\r\n",
            metrics::get().connections.get()
        ),
        "persistence" => {
            let (log_bytes, oldest_snapshot_age) = engine
                .partitions()
                .iter()
                .map(|p| (p.log_info().0, metrics::snapshot_age_seconds(p.id())))
                .fold((0, 0), |(b, a), (pb, pa)| (b + pb, a.max(pa)));
            write!(
                t,
                "# Persistence\r\nloading:0\r\naof_enabled:{}\r\npartita_fsync:{}\r\n\
                 partita_data_dir:{}\r\npartita_log_bytes:{log_bytes}\r\n\
                 partita_snapshot_age_seconds:{oldest_snapshot_age}\r\n\
                 partita_recovery_ms:{}\r\npartita_recovery_warnings:{}\r\n",
                u8::from(cfg.data_dir.is_some()),
                cfg.fsync,
                cfg.data_dir
                    .as_ref()
                    .map_or("(none: persistence off)".into(), |d| d
                        .display()
                        .to_string()),
                engine.recovery.as_millis(),
                engine.recovery_warnings.len(),
            )
        }
        "replication" => {
            write_replication(t, engine);
            Ok(())
        }
        "keyspace" => {
            let (keys, expires) = engine
                .partitions()
                .iter()
                .map(|p| p.read(|s| (s.len(), s.expiring())))
                .fold((0, 0), |(k, e), (pk, pe)| (k + pk, e + pe));
            let _ = write!(t, "# Keyspace\r\n");
            if keys > 0 {
                let _ = write!(t, "db0:keys={keys},expires={expires},avg_ttl=0\r\n");
            }
            Ok(())
        }
        _ => Ok(()),
    };
}
