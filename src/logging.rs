//! The broker's log: text or JSON lines on standard output (`log_format`),
//! at `log_level` (`RUST_LOG` and `-v` win over it), both changed in place
//! by a reload.

use std::sync::{Mutex, PoisonError};

use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

use crate::config::{Config, LogFormat};

type Filtered = Layered<reload::Layer<EnvFilter, Registry>, Registry>;
type Lines = Box<dyn Layer<Filtered> + Send + Sync>;

/// The log in force, and what changes it.
pub struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
    lines: reload::Handle<Lines, Filtered>,
    /// `RUST_LOG` or `-v` chose the level: the file's does not apply.
    fixed_level: bool,
    format: Mutex<LogFormat>,
}

impl std::fmt::Debug for Logging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logging")
            .field("fixed_level", &self.fixed_level)
            .finish_non_exhaustive()
    }
}

/// How lines are written in `format`: JSON objects, or text (without the
/// timestamp under systemd's journal, which adds its own).
fn lines(format: LogFormat) -> Lines {
    match format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Text if std::env::var_os("JOURNAL_STREAM").is_some() => {
            fmt::layer().with_ansi(false).without_time().boxed()
        }
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
            fmt::layer().with_ansi(ansi).boxed()
        }
    }
}

impl Logging {
    /// Starts logging as `config` says, `verbose` (`-v` counted) raising
    /// the level.
    pub fn init(config: &Config, verbose: u8) -> Logging {
        let fixed_level = std::env::var_os("RUST_LOG").is_some() || verbose > 0;
        let level = match verbose {
            0 => config.log_level.as_str(),
            1 => "debug",
            _ => "trace",
        };
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
        let (filter, filter_handle) = reload::Layer::new(filter);
        let (lines, lines_handle) = reload::Layer::new(lines(config.log_format));
        tracing_subscriber::registry()
            .with(filter)
            .with(lines)
            .init();
        Logging {
            filter: filter_handle,
            lines: lines_handle,
            fixed_level,
            format: Mutex::new(config.log_format),
        }
    }

    /// Puts `config`'s `log_level` and `log_format` in force.
    pub fn apply(&self, config: &Config) {
        if !self.fixed_level {
            if let Err(error) = self.filter.reload(EnvFilter::new(&config.log_level)) {
                tracing::warn!(%error, "cannot change the log level");
            }
        }
        let mut format = self.format.lock().unwrap_or_else(PoisonError::into_inner);
        if *format != config.log_format {
            match self.lines.reload(lines(config.log_format)) {
                Ok(()) => *format = config.log_format,
                Err(error) => tracing::warn!(%error, "cannot change the log format"),
            }
        }
    }
}
