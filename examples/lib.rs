//! Runnable examples of the ferrosoup client SDK against a running server.
//!
//! - `two_peers`: alice publishes a synthetic VP8 stream, bob consumes it and reports what
//!   arrived. Start a server (`ferrosoup`), then
//!   `cargo run -p ferrosoup-examples --example two_peers -- ws://127.0.0.1:3000/ws`.
//!
//! The library itself is empty; the programs live beside it as Cargo examples.
