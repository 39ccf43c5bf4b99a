//! Rust types generated from `proto/partita.proto`, the wire contract between clients, nodes
//! and the operator. The `.proto` file is the source of truth: read its comments for what every
//! field means.
//!
//! The generated code is kept in its own module so its lint exceptions stay here.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("partita.v1");
