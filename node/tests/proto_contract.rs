//! The wire contract documents itself: every service, method, message, field, oneof, enum and
//! enum value in `proto/partita.proto` carries a comment saying what it means. This test reads
//! the file the way the build does (protox, with source info) and names anything left bare.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking, with a message saying what broke"
)]

use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto};
use std::collections::HashMap;

// Field numbers of descriptor.proto, which is how source-info paths address elements.
const FILE_MESSAGE_TYPE: i32 = 4;
const FILE_ENUM_TYPE: i32 = 5;
const FILE_SERVICE: i32 = 6;
const MESSAGE_FIELD: i32 = 2;
const MESSAGE_NESTED_TYPE: i32 = 3;
const MESSAGE_ENUM_TYPE: i32 = 4;
const MESSAGE_ONEOF_DECL: i32 = 8;
const ENUM_VALUE: i32 = 2;
const SERVICE_METHOD: i32 = 2;

fn compile() -> FileDescriptorProto {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let mut compiler = protox::Compiler::new([dir]).expect("proto include dir");
    compiler.include_source_info(true);
    compiler
        .open_file("partita.proto")
        .expect("partita.proto compiles");
    let set = compiler.file_descriptor_set();
    set.file
        .into_iter()
        .find(|f| f.name() == "partita.proto")
        .expect("partita.proto in the set")
}

struct Checker {
    comments: HashMap<Vec<i32>, String>,
    missing: Vec<String>,
    checked: usize,
}

impl Checker {
    fn require(&mut self, path: &[i32], what: String) {
        self.checked += 1;
        let ok = self
            .comments
            .get(path)
            .is_some_and(|c| !c.trim().is_empty());
        if !ok {
            self.missing.push(what);
        }
    }

    fn message(&mut self, path: Vec<i32>, msg: &DescriptorProto, scope: &str) {
        let name = format!("{scope}{}", msg.name());
        self.require(&path, format!("message {name}"));
        for (i, field) in msg.field.iter().enumerate() {
            let p = [path.as_slice(), &[MESSAGE_FIELD, i as i32]].concat();
            self.require(&p, format!("field {name}.{}", field.name()));
        }
        for (i, oneof) in msg.oneof_decl.iter().enumerate() {
            let p = [path.as_slice(), &[MESSAGE_ONEOF_DECL, i as i32]].concat();
            self.require(&p, format!("oneof {name}.{}", oneof.name()));
        }
        for (i, nested) in msg.nested_type.iter().enumerate() {
            let p = [path.as_slice(), &[MESSAGE_NESTED_TYPE, i as i32]].concat();
            self.message(p, nested, &format!("{name}."));
        }
        for (i, e) in msg.enum_type.iter().enumerate() {
            let p = [path.as_slice(), &[MESSAGE_ENUM_TYPE, i as i32]].concat();
            self.enumeration(p, e, &format!("{name}."));
        }
    }

    fn enumeration(&mut self, path: Vec<i32>, e: &EnumDescriptorProto, scope: &str) {
        let name = format!("{scope}{}", e.name());
        self.require(&path, format!("enum {name}"));
        for (i, v) in e.value.iter().enumerate() {
            let p = [path.as_slice(), &[ENUM_VALUE, i as i32]].concat();
            self.require(&p, format!("enum value {name}.{}", v.name()));
        }
    }
}

#[test]
fn every_element_of_the_wire_contract_has_a_comment() {
    let file = compile();
    let info = file.source_code_info.clone().expect("source info kept");
    let comments = info
        .location
        .iter()
        .map(|l| (l.path.clone(), l.leading_comments().to_string()))
        .collect();
    let mut checker = Checker {
        comments,
        missing: Vec::new(),
        checked: 0,
    };
    for (i, msg) in file.message_type.iter().enumerate() {
        checker.message(vec![FILE_MESSAGE_TYPE, i as i32], msg, "");
    }
    for (i, e) in file.enum_type.iter().enumerate() {
        checker.enumeration(vec![FILE_ENUM_TYPE, i as i32], e, "");
    }
    for (i, svc) in file.service.iter().enumerate() {
        checker.require(&[FILE_SERVICE, i as i32], format!("service {}", svc.name()));
        for (j, m) in svc.method.iter().enumerate() {
            checker.require(
                &[FILE_SERVICE, i as i32, SERVICE_METHOD, j as i32],
                format!("rpc {}.{}", svc.name(), m.name()),
            );
        }
    }
    assert!(
        checker.checked > 200,
        "the walk reached only {} elements; is the file being read?",
        checker.checked
    );
    assert!(
        checker.missing.is_empty(),
        "elements without a comment:\n  {}",
        checker.missing.join("\n  ")
    );
}

#[test]
fn the_contract_has_the_three_services_with_their_calls() {
    let file = compile();
    assert_eq!(file.package(), "partita.v1");
    let methods = |service: &str| -> Vec<String> {
        file.service
            .iter()
            .find(|s| s.name() == service)
            .unwrap_or_else(|| panic!("service {service} missing"))
            .method
            .iter()
            .map(|m| m.name().to_string())
            .collect()
    };
    for m in ["Get", "Put", "Delete", "Scan", "Batch", "GetTopology"] {
        assert!(methods("KV").contains(&m.to_string()), "KV.{m} missing");
    }
    let replicate = file
        .service
        .iter()
        .find(|s| s.name() == "Replication")
        .and_then(|s| s.method.iter().find(|m| m.name() == "Replicate"))
        .expect("Replication.Replicate");
    assert!(
        replicate.client_streaming() && replicate.server_streaming(),
        "replication is one bidirectional stream"
    );
    for m in [
        "Status",
        "AssignRole",
        "Promote",
        "Follow",
        "Fence",
        "Drop",
        "Digest",
        "SetTopology",
    ] {
        assert!(
            methods("Admin").contains(&m.to_string()),
            "Admin.{m} missing"
        );
    }
}

#[test]
fn log_entries_round_trip_through_the_generated_types() {
    use partita_node::proto::{Command, LogEntry, PutCommand, command};
    use prost::Message;

    let cmd = Command {
        cmd: Some(command::Cmd::Put(PutCommand {
            key: b"key:000000000001".to_vec(),
            value: vec![7; 100],
            expire_at_ms: 1_800_000_000_000,
        })),
    };
    let entry = LogEntry {
        epoch: 3,
        offset: 42,
        timestamp_ms: 1_700_000_000_000,
        command: cmd.encode_to_vec(),
        crc32c: 0,
    };
    let decoded = LogEntry::decode(entry.encode_to_vec().as_slice()).expect("decodes");
    assert_eq!(decoded, entry);
    assert_eq!(
        Command::decode(decoded.command.as_slice()).expect("command decodes"),
        cmd
    );
}
