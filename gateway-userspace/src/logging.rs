//! The agent's log, with a level that can change while it runs (admin `POST /logging?level=`,
//! as Envoy's admin offers): env_logger fixes its filter when built, so the installed logger
//! holds a built env_logger that is swapped whole for one with the new filter.

use std::sync::OnceLock;

use arc_swap::ArcSwap;

struct Reloadable(ArcSwap<env_logger::Logger>);

impl log::Log for Reloadable {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.load().enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        self.0.load().log(record)
    }

    fn flush(&self) {
        self.0.load().flush()
    }
}

static LOGGER: OnceLock<Reloadable> = OnceLock::new();

fn build(filter: &str) -> env_logger::Logger {
    env_logger::Builder::new().parse_filters(filter).build()
}

/// Installs the logger: `RUST_LOG` if set, else `info`.
pub fn init() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string());
    let logger = build(&filter);
    let max = logger.filter();
    let l = LOGGER.get_or_init(|| Reloadable(ArcSwap::from_pointee(logger)));
    if log::set_logger(l).is_ok() {
        log::set_max_level(max);
    }
}

/// Replaces the filter (`debug`, `warn`, `gateway::l7=trace,info`: env_logger's syntax).
/// Err: not a filter, or the logger was not installed by [`init`].
pub fn set_filter(filter: &str) -> Result<log::LevelFilter, String> {
    let valid = ["off", "error", "warn", "info", "debug", "trace"];
    // env_logger ignores what it cannot parse; refuse it instead of silently logging nothing.
    // A bare word must be a level (a module needs `module=level`).
    for directive in filter.split(',') {
        let level = directive.rsplit('=').next().unwrap_or("").trim();
        if !valid.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{directive:?}: expected LEVEL or MODULE=LEVEL (levels: {valid:?})"
            ));
        }
    }
    let l = LOGGER.get().ok_or("the logger is not reloadable")?;
    let logger = build(filter);
    let max = logger.filter();
    l.0.store(std::sync::Arc::new(logger));
    log::set_max_level(max);
    Ok(max)
}
