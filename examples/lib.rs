//! Runnable examples of the ferrosoup client SDK against a running server.
//!
//! - `two_peers`: alice publishes a synthetic VP8 stream, bob consumes it and reports what
//!   arrived. Start a server (`ferrosoup`), then
//!   `cargo run -p ferrosoup-examples --example two_peers -- ws://127.0.0.1:3000/ws`.
//! - `bot`: joins a room, plays a VP8 IVF file as video and answers chat over data
//!   channels (`!ping` → `pong`, other text → `echo: …`): [`bot`]. Run
//!   `cargo run -p ferrosoup-examples --example bot -- ws://127.0.0.1:3000/ws ROOM [video.ivf]`.
//!
//! The bot's logic is the library module [`bot`] (so the server's tests run it against
//! the real binary); the programs live beside it as Cargo examples.

pub mod bot;
