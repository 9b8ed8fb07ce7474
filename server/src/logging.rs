//! Structured logs to stderr, as text or JSON lines.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, Layer, filter::filter_fn, fmt, prelude::*};

use crate::{config::LogFormat, span_timings};

/// Installs the global subscriber. `filter` was validated with the config. Span fields
/// (the RPC name and object ids) are printed with every event inside the span. With
/// `CRUST_SPAN_TIMINGS` set, span timings go to that file too (see
/// [`span_timings`]); without it the subscriber is the plain formatter.
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::builder().parse_lossy(filter);
    if let Some(path) = std::env::var_os(span_timings::ENV) {
        init_with_timings(filter, format, std::path::Path::new(&path));
        return;
    }
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    // Only fails if a subscriber is already set (tests running several daemons).
    let _ = result;
}

/// The same formatter, filtered on its own, beside the timings layer, which sees only
/// RPC and step spans.
fn init_with_timings(filter: EnvFilter, format: LogFormat, path: &std::path::Path) {
    let timings = match span_timings::SpanTimings::open(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: cannot open {}: {e}", span_timings::ENV, path.display());
            std::process::exit(2);
        }
    };
    let fmt_layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let result = match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(fmt_layer.with_filter(filter))
            .with(timings.with_filter(filter_fn(timed)))
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(
                fmt_layer
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(filter),
            )
            .with(timings.with_filter(filter_fn(timed)))
            .try_init(),
    };
    let _ = result;
}

/// What the timings layer sees: RPC spans and step spans.
fn timed(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && (meta.target() == span_timings::STEP_TARGET || meta.name() == "rpc")
}
