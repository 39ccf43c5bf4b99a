//! Requests a user makes of the operator through annotations on a set: pure parsing and
//! formatting of their values, shared by the operator (which acts on them) and the
//! `kubectl-partita` plugin (which writes them).
//!
//! A switchover is asked for with [`partita_api::SWITCHOVER_ANNOTATION`] set to
//! `<partition>=<pod>`, optionally followed by `@<nonce>`: `3=orders-1`, or
//! `3=orders-1@1764000000000`. The operator acts once per distinct value, so the same switchover
//! asked for twice needs a different nonce; the plugin always appends the current time in
//! milliseconds. The nonce carries no meaning beyond making the value new.

use thiserror::Error;

/// Why an annotation's value is not a request the operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// The value has no `=` between partition and pod.
    #[error("switchover request {value:?} is not <partition>=<pod>[@<nonce>]: no '='")]
    MissingEquals {
        /// The value as given.
        value: String,
    },
    /// The partition is not a non-negative integer.
    #[error("switchover request {value:?}: partition {partition:?} is not a non-negative integer")]
    BadPartition {
        /// The value as given.
        value: String,
        /// The partition part.
        partition: String,
    },
    /// Nothing names the pod.
    #[error("switchover request {value:?} names no pod after '='")]
    EmptyPod {
        /// The value as given.
        value: String,
    },
    /// The pod part cannot be a pod name.
    #[error(
        "switchover request {value:?}: {pod:?} is not a pod name (lowercase letters, digits, '-' and '.')"
    )]
    BadPod {
        /// The value as given.
        value: String,
        /// The pod part.
        pod: String,
    },
    /// An `@` with nothing after it.
    #[error("switchover request {value:?} has an empty nonce after '@'")]
    EmptyNonce {
        /// The value as given.
        value: String,
    },
}

/// Parses a [`partita_api::SWITCHOVER_ANNOTATION`] value, `<partition>=<pod>[@<nonce>]`, into
/// the partition and the pod that should become its primary. Surrounding whitespace is ignored;
/// the nonce is checked to be present when `@` is, and otherwise dropped.
pub fn parse_switchover(value: &str) -> Result<(u32, String), Error> {
    let trimmed = value.trim();
    let body = match trimmed.split_once('@') {
        Some((_, "")) => {
            return Err(Error::EmptyNonce {
                value: value.into(),
            });
        }
        Some((body, _nonce)) => body,
        None => trimmed,
    };
    let (partition, pod) = body.split_once('=').ok_or_else(|| Error::MissingEquals {
        value: value.into(),
    })?;
    let partition_text = partition.trim();
    let partition = partition_text
        .parse::<u32>()
        .ok()
        .filter(|_| partition_text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| Error::BadPartition {
            value: value.into(),
            partition: partition_text.into(),
        })?;
    let pod = pod.trim();
    if pod.is_empty() {
        return Err(Error::EmptyPod {
            value: value.into(),
        });
    }
    let valid = pod.len() <= 253
        && pod
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && pod.starts_with(|c: char| c.is_ascii_alphanumeric())
        && pod.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid {
        return Err(Error::BadPod {
            value: value.into(),
            pod: pod.into(),
        });
    }
    Ok((partition, pod.to_string()))
}

/// The [`partita_api::SWITCHOVER_ANNOTATION`] value asking for `pod` to become primary of
/// `partition`, made distinct from earlier requests by `nonce`: `<partition>=<pod>@<nonce>`.
pub fn switchover_value(partition: u32, pod: &str, nonce: u64) -> String {
    format!("{partition}={pod}@{nonce}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_request_parses() {
        assert_eq!(parse_switchover("3=orders-1"), Ok((3, "orders-1".into())));
        assert_eq!(parse_switchover("0=db-0"), Ok((0, "db-0".into())));
        assert_eq!(parse_switchover(" 12 = db-2 \n"), Ok((12, "db-2".into())));
    }

    #[test]
    fn the_nonce_is_dropped() {
        assert_eq!(
            parse_switchover("3=orders-1@1764000000000"),
            Ok((3, "orders-1".into()))
        );
        assert_eq!(
            parse_switchover("3=orders-1@again"),
            Ok((3, "orders-1".into()))
        );
        assert!(matches!(
            parse_switchover("3=orders-1@"),
            Err(Error::EmptyNonce { .. })
        ));
    }

    #[test]
    fn what_the_plugin_writes_parses_back() {
        let value = switchover_value(7, "orders-2", 1_764_000_000_123);
        assert_eq!(value, "7=orders-2@1764000000123");
        assert_eq!(parse_switchover(&value), Ok((7, "orders-2".into())));
    }

    #[test]
    fn a_missing_equals_sign_is_refused() {
        for value in ["3", "orders-1", "3:orders-1", "", "3orders-1@5"] {
            assert!(
                matches!(parse_switchover(value), Err(Error::MissingEquals { .. })),
                "{value:?}"
            );
        }
        let message = parse_switchover("3").unwrap_err().to_string();
        assert!(message.contains("<partition>=<pod>"), "{message}");
    }

    #[test]
    fn a_partition_that_is_not_a_number_is_refused() {
        for value in [
            "x=orders-1",
            "-1=orders-1",
            "+1=orders-1",
            "=orders-1",
            "1.5=a",
            "99999999999=a",
        ] {
            assert!(
                matches!(parse_switchover(value), Err(Error::BadPartition { .. })),
                "{value:?}"
            );
        }
    }

    #[test]
    fn an_empty_or_impossible_pod_is_refused() {
        for value in ["3=", "3= ", "3=@5"] {
            assert!(
                matches!(parse_switchover(value), Err(Error::EmptyPod { .. })),
                "{value:?}"
            );
        }
        for value in ["3=Orders-1", "3=orders_1", "3=-orders", "3=a b", "3=a=b"] {
            assert!(
                matches!(parse_switchover(value), Err(Error::BadPod { .. })),
                "{value:?}"
            );
        }
    }
}
