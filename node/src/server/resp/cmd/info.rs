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
            let offset: u64 = engine.partitions().iter().map(|p| p.last().offset).sum();
            let _ = write!(
                t,
                "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:{offset}\r\n"
            );
            for p in engine.partitions() {
                let last = p.last();
                let _ = write!(
                    t,
                    "partition{}:role=primary,epoch={},offset={},durable_offset={},replicas=0\r\n",
                    p.id(),
                    p.epoch(),
                    last.offset,
                    p.durable_offset(),
                );
            }
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
