//! Logging setup and the shutdown signal, the same for every binary.

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where the spans of single calls to a member are made (`crate::pool`), and their
/// names: kept out of the log lines, exported with traces.
const CALL_SPAN_TARGET: &str = "ponder_cluster::pool";
const CALL_SPANS: [&str; 2] = ["generate", "score"];

/// Installs a `tracing` subscriber (level from `RUST_LOG`, default info) once.
pub fn init_logging(format: LogFormat) {
    let _ = init_tracing(format, None);
}

/// As [`init_logging`], and when `otlp` is `(endpoint, service)`, also exports this
/// process's spans there as `service` ([`crate::trace`]). Needs a tokio runtime then.
pub fn init_tracing(format: LogFormat, otlp: Option<(&str, &str)>) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::{filter_fn, FilterExt};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The log lines leave out the spans of single calls to a member (their events say
    // which member): the fmt layer formats a span's fields when the span is created,
    // and an orchestrator makes thousands of calls a second (docs/scaling.md,
    // "Orchestrator cost"). Exported traces keep them.
    // (The level hint keeps the filter's level as the global maximum, so that
    // disabled `debug!`/`trace!` sites in dependencies stay free.)
    let filter = filter.and(
        filter_fn(|meta| {
            !(meta.is_span()
                && meta.target() == CALL_SPAN_TARGET
                && CALL_SPANS.contains(&meta.name()))
        })
        .with_max_level_hint(tracing_subscriber::filter::LevelFilter::TRACE),
    );
    // Colours only on a terminal: a log file or a collector gets plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let otel = otlp
        .map(|(endpoint, service)| crate::trace::otlp_layer(endpoint, service))
        .transpose()?;
    // The filter applies to the log lines only: exported spans have their own.
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init();
    Ok(())
}

/// A SIGHUP listener: what reloads files on demand (API keys, TLS certificates). Where
/// there is no handler (not unix, or none could be installed) it never fires, and the
/// files are still reloaded when they change.
pub struct Hangup(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

impl Hangup {
    pub fn new() -> Self {
        #[cfg(unix)]
        {
            Self(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok())
        }
        #[cfg(not(unix))]
        {
            Self()
        }
    }

    /// The next SIGHUP (never, where there is no handler).
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(h) = &mut self.0 {
            h.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}

impl Default for Hangup {
    fn default() -> Self {
        Self::new()
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
