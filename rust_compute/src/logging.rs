//! Structured logs: one JSON object per line on stderr.
//!
//! stderr because stdout is reserved for the single `listening on` line that
//! tools parse; JSON because the stack runner and log collectors read it.
//!
//! Every line logged while a call is served carries the call's span as a
//! `span` object: `name` `rpc`, the gRPC `method`, `request_id`,
//! `trace_id` and `span_id` (see [`telemetry`](crate::telemetry)). Request
//! text is never logged, only its size.

use tracing_subscriber::EnvFilter;

/// Installs the global JSON subscriber with `filter` (`RUST_LOG` syntax,
/// already validated by [`Config`](crate::config::Config)), and routes
/// panic reports through it.
///
/// Fails if the filter does not parse or a subscriber is already installed.
pub fn init(filter: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .json()
        // Fields at the top level, so `jq .addr` works on the listening line.
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::builder().parse(filter)?)
        .try_init()?;
    // A panic inside one computation is caught and answered INTERNAL (see
    // `workers`); its report must still be a JSON line, not free text
    // that breaks whoever parses stderr, and must not quote request text.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|at| format!("{}:{}:{}", at.file(), at.line(), at.column()));
        tracing::error!(
            panic = crate::workers::panic_message(info.payload()),
            location = location.as_deref(),
            "panic"
        );
    }));
    Ok(())
}
