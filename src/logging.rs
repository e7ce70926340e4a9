//! Structured logs through `tracing`: human-readable or JSON lines on stderr. `RUST_LOG`, when
//! set, overrides the configured level.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The DNS libraries log every query at info; their warnings are what an operator wants.
const QUIET_DEPENDENCIES: &str =
    "hickory_server=warn,hickory_resolver=warn,hickory_net=warn,hickory_proto=warn";

pub fn init(format: LogFormat, level: &str) {
    let directives = if level.contains("hickory") {
        level.to_string()
    } else {
        format!("{level},{QUIET_DEPENDENCIES}")
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    // Colours only on a terminal: journald, `kubectl logs` and log shippers would otherwise
    // keep the escape codes in every line.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second init (tests, embedding) keeps the first subscriber; that is fine.
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
