//! The agent's log, through `tracing`: one span per downstream connection (its fields prefix
//! every line logged inside it), lines as text or JSON (`--log-format`), and a filter that can
//! change while it runs (admin `POST /logging?level=`, as Envoy's admin offers). Records of the
//! `log` crate (most of the agent's lines, and those of aya, kube and hyper) are bridged in.

use std::sync::OnceLock;

use tracing_subscriber::{
    filter::EnvFilter, fmt, layer::SubscriberExt as _, registry::Registry, reload,
    util::SubscriberInitExt as _, Layer as _,
};

/// How log lines are written (to stderr).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `2026-12-07T09:19:19.123Z  INFO conn{peer=..}: gateway::l7: message`.
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, fields, and the connection span.
    Json,
}

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

fn parse(filter: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .parse(filter)
        .map_err(|e| format!("{filter:?}: {e}"))
}

/// Installs the log: `RUST_LOG` if set (and valid), else `info`.
pub fn init(format: Format) {
    let wanted = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string());
    let filter = parse(&wanted).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let out = match format {
        Format::Text => fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
        Format::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    // try_init also installs the bridge for `log` records (tracing-log).
    if tracing_subscriber::registry()
        .with(filter)
        .with(out)
        .try_init()
        .is_ok()
    {
        let _ = FILTER.set(handle);
        sync_log_max_level();
    }
}

/// `log`'s own max level follows the filter, so that a disabled `log::debug!` costs one load.
fn sync_log_max_level() {
    let max = tracing_subscriber::filter::LevelFilter::current();
    log::set_max_level(tracing_log::AsLog::as_log(&max));
}

/// Replaces the filter (`debug`, `warn`, `gateway::l7=trace,info`: `RUST_LOG`'s syntax).
/// Err: not a filter, or the log was not installed by [`init`].
pub fn set_filter(filter: &str) -> Result<log::LevelFilter, String> {
    let valid = ["off", "error", "warn", "info", "debug", "trace"];
    // A bare word must be a level (a module needs `module=level`): a typo must not silently
    // turn the log off.
    for directive in filter.split(',') {
        let level = directive.rsplit('=').next().unwrap_or("").trim();
        if !valid.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{directive:?}: expected LEVEL or MODULE=LEVEL (levels: {valid:?})"
            ));
        }
    }
    let new = parse(filter)?;
    let handle = FILTER.get().ok_or("the log is not reloadable")?;
    handle.reload(new).map_err(|e| e.to_string())?;
    sync_log_max_level();
    Ok(log::max_level())
}
