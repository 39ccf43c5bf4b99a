//! Label and field selectors, parsed as kube-apiserver parses them. Controllers narrow their
//! watches with selectors (the operator watches only what it manages), so a selector that
//! matched too much or too little here would hide bugs or invent them; one that does not parse
//! is a 400, never "match everything".

use super::status::{ApiError, ApiResult};
use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    /// `key=value`, `key==value`.
    Equals(String, String),
    /// `key!=value` (also true without the label).
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)` (also true without the label).
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
    /// `key>n`.
    Greater(String, i64),
    /// `key<n`.
    Less(String, i64),
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LabelSelector(Vec<Requirement>);

fn bad(selector: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!(
        "unable to parse requirement: label selector {selector:?}: {why}"
    ))
}

/// Whether `s` is a valid label name part: at most 63 characters, alphanumeric at both ends,
/// `-`, `_` and `.` inside.
fn valid_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Whether `s` is a DNS subdomain: at most 253 characters of lowercase alphanumerics, `-` and
/// `.`, alphanumeric at both ends.
pub(crate) fn valid_subdomain(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.'))
}

/// Whether `key` is a valid label key: an optional DNS-subdomain prefix and `/`, then a name.
pub(crate) fn valid_label_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => valid_subdomain(prefix) && valid_name_part(name),
        None => valid_name_part(key),
    }
}

/// Whether `value` is a valid label value: empty, or a valid name part.
pub(crate) fn valid_label_value(value: &str) -> bool {
    value.is_empty() || valid_name_part(value)
}

/// Splits at commas outside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    terms
}

impl LabelSelector {
    /// Parses `selector`; an empty one selects everything.
    pub fn parse(selector: &str) -> ApiResult<Self> {
        let mut reqs = Vec::new();
        if selector.trim().is_empty() {
            return Ok(Self(reqs));
        }
        for term in split_terms(selector) {
            reqs.push(Self::requirement(selector, term.trim())?);
        }
        Ok(Self(reqs))
    }

    fn requirement(selector: &str, term: &str) -> ApiResult<Requirement> {
        if let Some(key) = term.strip_prefix('!') {
            let key = key.trim();
            return Self::key(selector, key).map(|k| Requirement::DoesNotExist(k.into()));
        }
        let end = term
            .find(|c: char| c.is_whitespace() || "=!<>(".contains(c))
            .unwrap_or(term.len());
        let key = Self::key(selector, &term[..end])?.to_string();
        let rest = term[end..].trim_start();
        if rest.is_empty() {
            return Ok(Requirement::Exists(key));
        }
        let value = |v: &str| -> ApiResult<String> {
            let v = v.trim();
            if valid_label_value(v) {
                Ok(v.to_string())
            } else {
                Err(bad(selector, format!("invalid label value {v:?}")))
            }
        };
        let number = |v: &str| -> ApiResult<i64> {
            v.trim()
                .parse()
                .map_err(|_| bad(selector, format!("{v:?} is not an integer")))
        };
        if let Some(v) = rest.strip_prefix("==") {
            return Ok(Requirement::Equals(key, value(v)?));
        }
        if let Some(v) = rest.strip_prefix("!=") {
            return Ok(Requirement::NotEquals(key, value(v)?));
        }
        if let Some(v) = rest.strip_prefix('=') {
            return Ok(Requirement::Equals(key, value(v)?));
        }
        if let Some(v) = rest.strip_prefix('>') {
            return Ok(Requirement::Greater(key, number(v)?));
        }
        if let Some(v) = rest.strip_prefix('<') {
            return Ok(Requirement::Less(key, number(v)?));
        }
        let (negated, list) = if let Some(l) = rest.strip_prefix("notin") {
            (true, l)
        } else if let Some(l) = rest.strip_prefix("in") {
            (false, l)
        } else {
            return Err(bad(selector, format!("unexpected {rest:?} after {key:?}")));
        };
        let list = list.trim();
        let inner = list
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .ok_or_else(|| bad(selector, "a set must be in parentheses"))?;
        let values = inner
            .split(',')
            .map(value)
            .collect::<ApiResult<Vec<String>>>()?;
        if inner.trim().is_empty() {
            return Err(bad(selector, "a set needs at least one value"));
        }
        Ok(if negated {
            Requirement::NotIn(key, values)
        } else {
            Requirement::In(key, values)
        })
    }

    fn key<'a>(selector: &str, key: &'a str) -> ApiResult<&'a str> {
        if valid_label_key(key) {
            Ok(key)
        } else {
            Err(bad(selector, format!("invalid label key {key:?}")))
        }
    }

    /// Whether `obj`'s labels satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::DoesNotExist(k) => label(k).is_none(),
            Requirement::Greater(k, n) => label(k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l > *n),
            Requirement::Less(k, n) => label(k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l < *n),
        })
    }
}

/// A parsed field selector: `field=value`, `field==value`, `field!=value`, comma-separated.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSelector(Vec<(Vec<String>, bool, String)>);

/// The fields a selector may name for a resource, beyond `metadata.name` and
/// `metadata.namespace`: the ones kube-apiserver supports that box components use.
fn extra_fields(group: &str, plural: &str) -> &'static [&'static str] {
    match (group, plural) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
        ],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.name",
            "involvedObject.namespace",
            "involvedObject.uid",
            "reason",
            "type",
        ],
        ("events.k8s.io", "events") => &[
            "regarding.kind",
            "regarding.name",
            "regarding.namespace",
            "regarding.uid",
            "reason",
            "type",
        ],
        _ => &[],
    }
}

impl FieldSelector {
    /// Parses `selector` for resource `plural` of `group`; a field it does not support is a
    /// 400, as on the real server.
    pub fn parse(selector: &str, group: &str, plural: &str) -> ApiResult<Self> {
        let mut terms = Vec::new();
        if selector.trim().is_empty() {
            return Ok(Self(terms));
        }
        for term in selector.split(',') {
            let term = term.trim();
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector {selector:?}: {term:?} is not field=value"
                )));
            };
            let field = field.trim();
            let extra = extra_fields(group, plural);
            if !matches!(field, "metadata.name" | "metadata.namespace") && !extra.contains(&field) {
                let mut known = vec!["\"metadata.name\"", "\"metadata.namespace\""];
                let quoted: Vec<String> = extra.iter().map(|f| format!("{f:?}")).collect();
                known.extend(quoted.iter().map(String::as_str));
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field:?} is not a known field selector: only {}",
                    known.join(", ")
                )));
            }
            terms.push((
                field.split('.').map(String::from).collect(),
                equal,
                value.trim().to_string(),
            ));
        }
        Ok(Self(terms))
    }

    /// Whether `obj` satisfies every term; an absent field counts as `""`.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, equal, value)| {
            let mut at = Some(obj);
            for p in path {
                at = at.and_then(|v| v.get(p));
            }
            let actual = match at {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}
