//! Tetragon's API, spoken as Tetragon speaks it: the message types of
//! `proto/tetragon/` (vendored from cilium/tetragon), decoded and encoded
//! with protobuf's JSON mapping, and the `tetragon.FineGuidanceSensors`
//! gRPC service, so that tools generated from Tetragon's `.proto` files
//! (`tetra`, pipelines decoding `GetEventsResponse`) work with vardr.

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("tetragon");
    include!(concat!(env!("OUT_DIR"), "/tetragon.serde.rs"));
}

#[cfg(test)]
mod decode_tests;

/// Decodes one of vardr's JSON event lines as Tetragon's
/// `GetEventsResponse` (protobuf JSON mapping; vardr's own additions are
/// fields Tetragon does not know, which the mapping skips).
pub fn decode(line: &str) -> Result<pb::GetEventsResponse, serde_json::Error> {
    serde_json::from_str(line)
}

pub mod client;
pub mod filter;
pub mod policies;
pub mod service;

/// The socket name in the runtime directory.
pub const SOCKET_NAME: &str = "tetragon.sock";
