//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902), as kube-apiserver applies them.
//!
//! kube-runtime's finalizer helper sends JSON patches whose `test` operations guard against a
//! concurrent writer, and its event recorder sends merge patches; both must fail and succeed
//! exactly when the real server's would. One deliberate quirk is kept from the real server's
//! patch library: `test` of a missing path against `null` passes (the finalizer helper relies
//! on it to test that `/metadata/finalizers` is absent).
//!
//! Strategic merge patch is not implemented: it needs each built-in type's merge keys, and a
//! guess would silently merge lists the real server replaces or the other way round. It is
//! answered with 415, as the real server answers it for custom resources.

use serde_json::{Map, Value};

/// RFC 7386 JSON merge patch of `target` by `patch`.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The reference tokens of a JSON pointer, unescaped.
fn tokens(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok(rest
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn index(token: &str, len: usize, path: &str, for_add: bool) -> Result<usize, String> {
    if token == "-" && for_add {
        return Ok(len);
    }
    let i: usize = token
        .parse()
        .map_err(|_| format!("{path}: {token:?} is not an array index"))?;
    if i > len || (i == len && !for_add) {
        return Err(format!("{path}: index {i} out of bounds"));
    }
    Ok(i)
}

/// The value at `parents` inside `target`, mutably.
fn container<'a>(
    target: &'a mut Value,
    parents: &[String],
    path: &str,
) -> Result<&'a mut Value, String> {
    let mut at = target;
    for p in parents {
        at = match at {
            Value::Object(m) => m
                .get_mut(p)
                .ok_or_else(|| format!("{path}: missing value at {p:?}"))?,
            Value::Array(a) => {
                let i = index(p, a.len(), path, false)?;
                a.get_mut(i)
                    .ok_or_else(|| format!("{path}: index {i} out of bounds"))?
            }
            _ => {
                return Err(format!(
                    "{path}: {p:?} is inside a value that is not a container"
                ));
            }
        };
    }
    Ok(at)
}

fn add(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let parts = tokens(path)?;
    let Some((last, parents)) = parts.split_last() else {
        *target = value;
        return Ok(());
    };
    match container(target, parents, path)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = index(last, a.len(), path, true)?;
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("{path}: parent is not a container")),
    }
}

fn remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let parts = tokens(path)?;
    let (last, parents) = parts
        .split_last()
        .ok_or_else(|| "cannot remove the whole document".to_string())?;
    match container(target, parents, path)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| format!("{path}: no value to remove")),
        Value::Array(a) => {
            let i = index(last, a.len(), path, false)?;
            Ok(a.remove(i))
        }
        _ => Err(format!("{path}: parent is not a container")),
    }
}

fn get(target: &Value, path: &str) -> Result<Option<Value>, String> {
    tokens(path)?;
    Ok(target.pointer(path).cloned())
}

/// RFC 6902 JSON patch of `target` by the operations `ops`: add, remove, replace, move, copy
/// and test. On error `target` may be partly patched; callers patch a copy.
pub(crate) fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or_else(|| "a JSON patch must be a list of operations".to_string())?;
    for op in ops {
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("operation {op} has no path"))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("operation {op} has no value"))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("operation {op} has no from"))
        };
        match op.get("op").and_then(Value::as_str) {
            Some("add") => add(target, path, value()?)?,
            Some("remove") => {
                remove(target, path)?;
            }
            Some("replace") => {
                remove(target, path)?;
                add(target, path, value()?)?;
            }
            Some("move") => {
                let moved = remove(target, from()?)?;
                add(target, path, moved)?;
            }
            Some("copy") => {
                let copied = get(target, from()?)?
                    .ok_or_else(|| format!("copy from {:?}: no value", from().unwrap_or("")))?;
                add(target, path, copied)?;
            }
            Some("test") => {
                let actual = get(target, path)?.unwrap_or(Value::Null);
                if actual != value()? {
                    return Err(format!("testing value {path} failed: test failed"));
                }
            }
            other => return Err(format!("unexpected JSON patch operation {other:?}")),
        }
    }
    Ok(())
}
