//! The chat and playback bot of [`ferrosoup_examples::bot`]:
//!
//! ```text
//! cargo run -p ferrosoup-examples --example bot -- ws://127.0.0.1:3000/ws ROOM [video.ivf]
//! ```
//!
//! It runs until Ctrl-C, then leaves the room.

use ferrosoup_examples::bot::{BotError, BotOptions, run};

#[tokio::main]
async fn main() -> Result<(), BotError> {
    let mut args = std::env::args().skip(1);
    let options = BotOptions {
        url: args
            .next()
            .unwrap_or_else(|| "ws://127.0.0.1:3000/ws".to_owned()),
        room: args.next().unwrap_or_else(|| "bot".to_owned()),
        name: "bot".to_owned(),
        video: args.next().map(Into::into),
    };
    run(options, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
