//! The partition map as a file: what `partita admin topology get` prints and `topology set`
//! reads. The format is the `Topology` message of `partita.proto` as JSON, with its snake_case
//! field names:
//!
//! ```json
//! {"version": 2, "partitions": 4,
//!  "nodes": [{"node_id": "a", "grpc_addr": "127.0.0.1:7001", "resp_addr": "127.0.0.1:6001"}],
//!  "routes": [{"partition": 0, "slot_start": 0, "slot_end": 4095, "primary": "a",
//!              "replicas": ["b"], "epoch": 1}]}
//! ```
//!
//! Reading is strict, because a typo in a map that is pushed to every node must not pass
//! silently: an unknown field is an error naming it, every field is required except a route's
//! `replicas` (default none) and `epoch` (default 0), and a number must fit its proto type.
//! Whether the map is consistent (slots covered once, nodes known, partition count) is for the
//! node to say: it checks every push against its own slot map.

use partita_node::proto::{NodeAddress, PartitionRoute, Topology};
use serde_json::{Map, Value, json};
use std::io::Read as _;
use std::path::Path;

/// Most bytes a topology file may hold: 16 MiB (the largest map, 16384 routes over 1000 nodes
/// with a few replicas each, is a few MiB).
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Reads the map in `path` (`-` for standard input), refusing more than [`MAX_FILE_BYTES`]
/// before parsing. Err names the file and what is wrong with it.
pub fn read_file(path: &Path) -> Result<Topology, String> {
    let stdin = path == Path::new("-");
    let name = if stdin {
        "standard input".to_string()
    } else {
        path.display().to_string()
    };
    let too_big = |size: String| {
        format!(
            "{name}: the file is {size} bytes; a topology file may be at most {} MiB ({MAX_FILE_BYTES} bytes)",
            MAX_FILE_BYTES >> 20
        )
    };
    let mut bytes = Vec::new();
    let read = if stdin {
        std::io::stdin()
            .lock()
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
    } else {
        let file = std::fs::File::open(path).map_err(|e| format!("{name}: {e}"))?;
        // Refuse a file that is too big without reading it; `take` below also bounds a file
        // that grows meanwhile, or a pipe or device that reports no length.
        let len = file.metadata().map_err(|e| format!("{name}: {e}"))?.len();
        if len > MAX_FILE_BYTES {
            return Err(too_big(len.to_string()));
        }
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)
    };
    read.map_err(|e| format!("{name}: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big(format!("more than {MAX_FILE_BYTES}")));
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| format!("{name}: not UTF-8: {e}"))?;
    from_json(text).map_err(|e| format!("{name}: {e}"))
}

/// The map as JSON, in the file format: every field, names as in the proto. Destructures each
/// message without `..`, so a field added to the proto fails to compile here until it is
/// converted too (and [`from_json`] learns it).
pub fn to_json(t: &Topology) -> Value {
    let Topology {
        version,
        partitions,
        nodes,
        routes,
    } = t;
    let nodes: Vec<Value> = nodes
        .iter()
        .map(|n| {
            let NodeAddress {
                node_id,
                grpc_addr,
                resp_addr,
            } = n;
            json!({ "node_id": node_id, "grpc_addr": grpc_addr, "resp_addr": resp_addr })
        })
        .collect();
    let routes: Vec<Value> = routes
        .iter()
        .map(|r| {
            let PartitionRoute {
                partition,
                slot_start,
                slot_end,
                primary,
                replicas,
                epoch,
            } = r;
            json!({
                "partition": partition,
                "slot_start": slot_start,
                "slot_end": slot_end,
                "primary": primary,
                "replicas": replicas,
                "epoch": epoch,
            })
        })
        .collect();
    json!({ "version": version, "partitions": partitions, "nodes": nodes, "routes": routes })
}

/// Parses the file format. Err is one line naming the field at fault, e.g.
/// `routes[2]: unknown field "primry" (expected one of: partition, slot_start, ...)`.
pub fn from_json(text: &str) -> Result<Topology, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let top = Object::new(
        &value,
        String::new(),
        &["version", "partitions", "nodes", "routes"],
    )?;
    let nodes = top
        .array("nodes")?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let n = Object::new(
                v,
                format!("nodes[{i}]"),
                &["node_id", "grpc_addr", "resp_addr"],
            )?;
            Ok(NodeAddress {
                node_id: n.string("node_id")?,
                grpc_addr: n.string("grpc_addr")?,
                resp_addr: n.string("resp_addr")?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let routes = top
        .array("routes")?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let r = Object::new(
                v,
                format!("routes[{i}]"),
                &[
                    "partition",
                    "slot_start",
                    "slot_end",
                    "primary",
                    "replicas",
                    "epoch",
                ],
            )?;
            Ok(PartitionRoute {
                partition: r.u32("partition")?,
                slot_start: r.u32("slot_start")?,
                slot_end: r.u32("slot_end")?,
                primary: r.string("primary")?,
                replicas: r.strings_or_none("replicas")?,
                epoch: r.u64_or_zero("epoch")?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Topology {
        version: top.u64("version")?,
        partitions: top.u32("partitions")?,
        nodes,
        routes,
    })
}

/// A JSON object whose fields are all known, read field by field with its path for errors.
struct Object<'a> {
    /// Where the object is, e.g. `routes[2]`; empty for the top level.
    path: String,
    fields: &'a Map<String, Value>,
}

impl<'a> Object<'a> {
    /// `value` as an object with no field outside `known`.
    fn new(value: &'a Value, path: String, known: &[&str]) -> Result<Self, String> {
        let Some(fields) = value.as_object() else {
            let at = if path.is_empty() {
                "the map".to_string()
            } else {
                path
            };
            return Err(format!(
                "{at}: expected an object, found {}",
                kind_of(value)
            ));
        };
        let this = Self { path, fields };
        if let Some(unknown) = fields.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!(
                "{}unknown field {unknown:?} (expected one of: {})",
                this.prefix(),
                known.join(", ")
            ));
        }
        Ok(this)
    }

    /// `path: `, or nothing at the top level.
    fn prefix(&self) -> String {
        if self.path.is_empty() {
            String::new()
        } else {
            format!("{}: ", self.path)
        }
    }

    /// The full name of field `name`, e.g. `routes[2].epoch`.
    fn name(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn required(&self, name: &str) -> Result<&'a Value, String> {
        self.fields
            .get(name)
            .ok_or_else(|| format!("{}missing field {name:?}", self.prefix()))
    }

    fn wrong(&self, name: &str, expected: &str, found: &Value) -> String {
        format!(
            "{}: expected {expected}, found {}",
            self.name(name),
            kind_of(found)
        )
    }

    fn u64_of(&self, name: &str, v: &Value) -> Result<u64, String> {
        v.as_u64()
            .ok_or_else(|| self.wrong(name, "an integer from 0 to 18446744073709551615", v))
    }

    fn u64(&self, name: &str) -> Result<u64, String> {
        self.u64_of(name, self.required(name)?)
    }

    fn u64_or_zero(&self, name: &str) -> Result<u64, String> {
        self.fields
            .get(name)
            .map_or(Ok(0), |v| self.u64_of(name, v))
    }

    fn u32(&self, name: &str) -> Result<u32, String> {
        let v = self.required(name)?;
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| self.wrong(name, "an integer from 0 to 4294967295", v))
    }

    fn string(&self, name: &str) -> Result<String, String> {
        let v = self.required(name)?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| self.wrong(name, "a string", v))
    }

    fn array(&self, name: &str) -> Result<&'a Vec<Value>, String> {
        let v = self.required(name)?;
        v.as_array().ok_or_else(|| self.wrong(name, "an array", v))
    }

    fn strings_or_none(&self, name: &str) -> Result<Vec<String>, String> {
        let Some(v) = self.fields.get(name) else {
            return Ok(Vec::new());
        };
        let items = v
            .as_array()
            .ok_or_else(|| self.wrong(name, "an array of strings", v))?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.wrong(&format!("{name}[{i}]"), "a string", item))
            })
            .collect()
    }
}

/// What a JSON value is, for error messages: `a string ("x")`, `a negative number (-1)`.
fn kind_of(v: &Value) -> String {
    let shown = v.to_string();
    let shown = if shown.len() > 40 {
        let cut = (0..=37)
            .rev()
            .find(|&i| shown.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}...", &shown[..cut])
    } else {
        shown
    };
    let what = match v {
        Value::Null => return "null".to_string(),
        Value::Bool(_) => "a boolean",
        // Integers beyond 64 bits are read as floating point too.
        Value::Number(n) if n.is_f64() => "a fractional or out-of-range number",
        Value::Number(n) if n.as_u64().is_none() => "a negative number",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    format!("{what} ({shown})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Topology {
        Topology {
            version: 2,
            partitions: 2,
            nodes: vec![
                NodeAddress {
                    node_id: "a".into(),
                    grpc_addr: "127.0.0.1:7001".into(),
                    resp_addr: "127.0.0.1:6001".into(),
                },
                NodeAddress {
                    node_id: "b".into(),
                    grpc_addr: "127.0.0.1:7002".into(),
                    resp_addr: "127.0.0.1:6002".into(),
                },
            ],
            routes: vec![
                PartitionRoute {
                    partition: 0,
                    slot_start: 0,
                    slot_end: 8191,
                    primary: "a".into(),
                    replicas: vec!["b".into()],
                    epoch: 3,
                },
                PartitionRoute {
                    partition: 1,
                    slot_start: 8192,
                    slot_end: 16383,
                    primary: String::new(),
                    replicas: vec![],
                    epoch: 0,
                },
            ],
        }
    }

    #[test]
    fn topology_json_converts_every_field_with_proto_names_and_parses_back() {
        let t = example();
        let j = to_json(&t);
        assert_eq!(
            j,
            json!({
                "version": 2,
                "partitions": 2,
                "nodes": [
                    {"node_id": "a", "grpc_addr": "127.0.0.1:7001", "resp_addr": "127.0.0.1:6001"},
                    {"node_id": "b", "grpc_addr": "127.0.0.1:7002", "resp_addr": "127.0.0.1:6002"},
                ],
                "routes": [
                    {"partition": 0, "slot_start": 0, "slot_end": 8191, "primary": "a",
                     "replicas": ["b"], "epoch": 3},
                    {"partition": 1, "slot_start": 8192, "slot_end": 16383, "primary": "",
                     "replicas": [], "epoch": 0},
                ],
            })
        );
        // What `get` prints, compact or pretty, is what `set` reads.
        assert_eq!(from_json(&j.to_string()), Ok(t.clone()));
        let pretty = serde_json::to_string_pretty(&j).unwrap();
        assert_eq!(from_json(&pretty), Ok(t));
    }

    #[test]
    fn replicas_and_epoch_may_be_left_out() {
        let t = from_json(
            r#"{"version": 1, "partitions": 1,
                "nodes": [{"node_id": "a", "grpc_addr": "h:1", "resp_addr": "h:2"}],
                "routes": [{"partition": 0, "slot_start": 0, "slot_end": 16383, "primary": "a"}]}"#,
        )
        .unwrap();
        assert_eq!(t.routes[0].replicas, Vec::<String>::new());
        assert_eq!(t.routes[0].epoch, 0);
        assert_eq!(t.routes[0].primary, "a");
        assert_eq!(t.nodes[0].resp_addr, "h:2");
    }

    /// `example()` as JSON with `edit` applied, parsed; the error.
    fn refused(edit: impl FnOnce(&mut Value)) -> String {
        let mut j = to_json(&example());
        edit(&mut j);
        from_json(&j.to_string()).unwrap_err()
    }

    fn obj(v: &mut Value) -> &mut Map<String, Value> {
        v.as_object_mut().unwrap()
    }

    #[test]
    fn unknown_fields_are_refused_by_name_at_every_level() {
        let e = refused(|j| {
            obj(j).insert("verison".into(), json!(3));
        });
        assert_eq!(
            e,
            "unknown field \"verison\" (expected one of: version, partitions, nodes, routes)"
        );
        let e = refused(|j| {
            obj(&mut j["nodes"][1]).insert("zone".into(), json!("eu"));
        });
        assert!(
            e.starts_with("nodes[1]: unknown field \"zone\" (expected one of: node_id,"),
            "{e}"
        );
        let e = refused(|j| {
            let r = obj(&mut j["routes"][1]);
            let p = r.remove("primary").unwrap();
            r.insert("primry".into(), p);
        });
        assert!(e.starts_with("routes[1]: unknown field \"primry\""), "{e}");
    }

    #[test]
    fn required_fields_are_named_when_missing() {
        for field in ["version", "partitions", "nodes", "routes"] {
            let e = refused(|j| {
                obj(j).remove(field);
            });
            assert_eq!(e, format!("missing field {field:?}"));
        }
        for field in ["node_id", "grpc_addr", "resp_addr"] {
            let e = refused(|j| {
                obj(&mut j["nodes"][0]).remove(field);
            });
            assert_eq!(e, format!("nodes[0]: missing field {field:?}"));
        }
        for field in ["partition", "slot_start", "slot_end", "primary"] {
            let e = refused(|j| {
                obj(&mut j["routes"][1]).remove(field);
            });
            assert_eq!(e, format!("routes[1]: missing field {field:?}"));
        }
    }

    #[test]
    fn values_must_have_the_proto_type_and_fit_it() {
        let e = refused(|j| j["version"] = json!(-1));
        assert_eq!(
            e,
            "version: expected an integer from 0 to 18446744073709551615, found a negative number (-1)"
        );
        let e = refused(|j| j["partitions"] = json!(4294967296u64));
        assert_eq!(
            e,
            "partitions: expected an integer from 0 to 4294967295, found a number (4294967296)"
        );
        let e = refused(|j| j["routes"][0]["slot_end"] = json!(1.5));
        assert!(
            e.starts_with("routes[0].slot_end: expected an integer"),
            "{e}"
        );
        let e = refused(|j| j["routes"][0]["replicas"] = json!(["b", 7]));
        assert_eq!(
            e,
            "routes[0].replicas[1]: expected a string, found a number (7)"
        );
        let e = refused(|j| j["routes"][0]["epoch"] = json!("3"));
        assert!(e.starts_with("routes[0].epoch: expected an integer"), "{e}");
        assert!(e.ends_with("found a string (\"3\")"), "{e}");
        let e = refused(|j| j["nodes"] = json!({}));
        assert_eq!(e, "nodes: expected an array, found an object ({})");
        let e = refused(|j| j["nodes"][0] = json!("a"));
        assert_eq!(e, "nodes[0]: expected an object, found a string (\"a\")");
        let e = refused(|j| j["nodes"][0]["node_id"] = Value::Null);
        assert_eq!(e, "nodes[0].node_id: expected a string, found null");

        assert_eq!(
            from_json("[1, 2]").unwrap_err(),
            "the map: expected an object, found an array ([1,2])"
        );
        assert!(
            from_json("{\"version\": 1,")
                .unwrap_err()
                .starts_with("not valid JSON: "),
        );
    }

    #[test]
    fn a_file_over_the_limit_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.json");
        // Sparse: the size is what counts, and it is refused without reading.
        std::fs::File::create(&path)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        let e = read_file(&path).unwrap_err();
        assert!(
            e.contains("the file is 16777217 bytes; a topology file may be at most 16 MiB"),
            "{e}"
        );
        assert!(e.starts_with(&path.display().to_string()), "{e}");

        let good = dir.path().join("good.json");
        std::fs::write(&good, to_json(&example()).to_string()).unwrap();
        assert_eq!(read_file(&good), Ok(example()));

        let e = read_file(&dir.path().join("missing.json")).unwrap_err();
        assert!(e.contains("missing.json: No such file"), "{e}");

        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, b"{\"version\": 1, \"x\": 2}").unwrap();
        let e = read_file(&bad).unwrap_err();
        assert!(e.contains("bad.json: unknown field \"x\""), "{e}");
    }
}
