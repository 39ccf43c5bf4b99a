//! How the CLI reaches a node and how it words a failed call. Every subcommand shares this, so
//! a connection failure always names the address and a failed call always shows the gRPC code,
//! the node's message and the [`ErrorInfo`] the node put in the status details: operators act
//! on the code and the addresses it carries, not on message text.

use partita_node::proto::{ErrorCode, ErrorInfo, NodeAddress};
use prost::Message;
use std::time::Duration;
use tonic::transport::Channel;

/// Opens a channel to `addr` (host:port, or a URI with a scheme), giving up after `timeout`.
pub async fn channel(addr: &str, timeout: Duration) -> Result<Channel, String> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Channel::from_shared(uri)
        .map_err(|e| format!("bad address {addr}: {e}"))?
        .connect_timeout(timeout);
    // The connect timeout bounds the TCP connect only; this bounds the HTTP/2 handshake too.
    match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(format!("cannot reach {addr}: {}", chain(&e))),
        Err(_) => Err(format!(
            "cannot reach {addr}: no connection within {} ms",
            timeout.as_millis()
        )),
    }
}

/// An error and its sources, joined with ": " (tonic's own text is just "transport error").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// One line describing a failed call: the node's error code (from the ErrorInfo in the status
/// details) and partition when it sent one, the message, then the ErrorInfo's other fields and
/// the gRPC code. For example
/// `STALE_EPOCH partition 3: epoch 4 is lower than held 5 (node holds epoch 5, primary n1 at
/// 127.0.0.1:7001; grpc FAILED_PRECONDITION)`, or `UNIMPLEMENTED: ...` without an ErrorInfo.
pub fn describe(status: &tonic::Status) -> String {
    let grpc = grpc_code_name(status.code());
    let message = status.message();
    let info = match error_info(status) {
        Some(Ok(info)) => info,
        None => return format!("{grpc}: {message}"),
        Some(Err(e)) => {
            return format!("{grpc}: {message} (undecodable ErrorInfo in details: {e})");
        }
    };
    let code = ErrorCode::try_from(info.code).ok();
    let name = code.map_or_else(
        || format!("ERROR_CODE_{}", info.code),
        |c| {
            c.as_str_name()
                .trim_start_matches("ERROR_CODE_")
                .to_string()
        },
    );
    let mut head = name;
    if info.partition != 0 || code.is_some_and(concerns_partition) {
        head.push_str(&format!(" partition {}", info.partition));
    }
    let mut notes = Vec::new();
    if info.epoch != 0 {
        notes.push(format!("node holds epoch {}", info.epoch));
    }
    if let Some(p) = info.primary.as_ref().filter(|p| !is_empty(p)) {
        notes.push(format!("primary {}", address(p)));
    }
    if info.slot != 0 || code == Some(ErrorCode::Moved) {
        notes.push(format!("slot {}", info.slot));
    }
    if info.acked_copies != 0 || info.required_copies != 0 {
        notes.push(format!(
            "acked copies {}, required {}",
            info.acked_copies, info.required_copies
        ));
    }
    if !info.limit.is_empty() {
        notes.push(format!("limit {}", info.limit));
    }
    if info.topology_version != 0 {
        notes.push(format!("topology version {}", info.topology_version));
    }
    format!(
        "{head}: {message} ({}grpc {grpc})",
        notes.iter().map(|n| format!("{n}; ")).collect::<String>()
    )
}

/// The ErrorInfo in a status's details: None when there is none (no details, or no code set),
/// Err when the details are not an ErrorInfo.
pub fn error_info(status: &tonic::Status) -> Option<Result<ErrorInfo, prost::DecodeError>> {
    match ErrorInfo::decode(status.details()) {
        Ok(info) if info.code == ErrorCode::Unspecified as i32 => None,
        decoded => Some(decoded),
    }
}

/// Whether the ErrorInfo's partition field means something for this code (0 is a partition id
/// too, so it cannot be left out by value alone).
fn concerns_partition(code: ErrorCode) -> bool {
    !matches!(
        code,
        ErrorCode::Unspecified
            | ErrorCode::LimitExceeded
            | ErrorCode::CrossPartition
            | ErrorCode::BadTopology
    )
}

fn is_empty(a: &NodeAddress) -> bool {
    a.node_id.is_empty() && a.grpc_addr.is_empty() && a.resp_addr.is_empty()
}

/// "n1 at 10.0.0.1:7379 (resp 10.0.0.1:6379)", leaving out what is empty.
fn address(a: &NodeAddress) -> String {
    let mut text = if a.node_id.is_empty() {
        "(unnamed)".to_string()
    } else {
        a.node_id.clone()
    };
    if !a.grpc_addr.is_empty() && a.grpc_addr != a.node_id {
        text.push_str(&format!(" at {}", a.grpc_addr));
    }
    if !a.resp_addr.is_empty() {
        text.push_str(&format!(" (resp {})", a.resp_addr));
    }
    text
}

/// The canonical gRPC name of a status code, as in the gRPC specification.
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn status(code: tonic::Code, message: &str, info: &ErrorInfo) -> tonic::Status {
        tonic::Status::with_details(code, message, Bytes::from(info.encode_to_vec()))
    }

    #[test]
    fn a_stale_epoch_names_the_code_partition_held_epoch_and_primary() {
        let s = status(
            tonic::Code::FailedPrecondition,
            "epoch 4 is lower than held 5",
            &ErrorInfo {
                code: ErrorCode::StaleEpoch as i32,
                partition: 3,
                epoch: 5,
                primary: Some(NodeAddress {
                    node_id: "n1".into(),
                    grpc_addr: "127.0.0.1:7001".into(),
                    resp_addr: String::new(),
                }),
                ..Default::default()
            },
        );
        assert_eq!(
            describe(&s),
            "STALE_EPOCH partition 3: epoch 4 is lower than held 5 (node holds epoch 5; \
             primary n1 at 127.0.0.1:7001; grpc FAILED_PRECONDITION)"
        );
    }

    #[test]
    fn partition_zero_is_shown_for_partition_errors_and_hidden_for_limits() {
        let s = status(
            tonic::Code::NotFound,
            "no such partition",
            &ErrorInfo {
                code: ErrorCode::UnknownPartition as i32,
                ..Default::default()
            },
        );
        assert_eq!(
            describe(&s),
            "UNKNOWN_PARTITION partition 0: no such partition (grpc NOT_FOUND)"
        );
        let s = status(
            tonic::Code::InvalidArgument,
            "key too long",
            &ErrorInfo {
                code: ErrorCode::LimitExceeded as i32,
                limit: "max-key-bytes=512".into(),
                ..Default::default()
            },
        );
        assert_eq!(
            describe(&s),
            "LIMIT_EXCEEDED: key too long (limit max-key-bytes=512; grpc INVALID_ARGUMENT)"
        );
    }

    #[test]
    fn without_details_the_grpc_code_leads() {
        let s = tonic::Status::unimplemented("not yet");
        assert_eq!(describe(&s), "UNIMPLEMENTED: not yet");
        let s = tonic::Status::with_details(
            tonic::Code::Internal,
            "boom",
            Bytes::from_static(&[0xff, 0xff]),
        );
        assert!(describe(&s).starts_with("INTERNAL: boom (undecodable ErrorInfo"));
    }
}
