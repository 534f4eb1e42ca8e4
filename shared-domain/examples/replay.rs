//! Replays a JSON event log (an array of `EventEnvelope`s, as served by
//! `GET /api/aggregates/QuerySession/{id}/events`) into a `QuerySession`
//! and prints the resulting state.
//!
//! ```text
//! cargo run -p shared-domain --example replay -- shared-domain/examples/session-log.json
//! ```

use shared_domain::{Aggregate, EventEnvelope, QuerySession};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/session-log.json").into()
    });
    let log: Vec<EventEnvelope> = serde_json::from_str(&std::fs::read_to_string(&path)?)?;

    let mut session = QuerySession::default();
    for envelope in &log {
        if envelope.aggregate_sequence != session.version() + 1 {
            return Err(format!(
                "gap in the log: expected sequence {}, found {}",
                session.version() + 1,
                envelope.aggregate_sequence
            )
            .into());
        }
        // Upcasting happens here: old payloads arrive in the current shape.
        session.apply(&envelope.decode::<QuerySession>()?);
    }
    println!("{}", serde_json::to_string_pretty(&session)?);
    Ok(())
}
