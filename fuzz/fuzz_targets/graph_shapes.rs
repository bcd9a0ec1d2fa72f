//! Graph preparation and execution on hand-built hostile shapes (see `graph_from_bytes.rs`).
//! Preparation may refuse; when it accepts and the tensors are small, the CPU plan runs in f32
//! and f16 storage. Errors are fine; panics, hangs and out-of-memory kills are not.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../graph_from_bytes.rs"]
mod graph_from_bytes;

fuzz_target!(|data: &[u8]| graph_from_bytes::run_graph_bytes(data));
