//! The command line: `tokengate run`, `tokengate check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "tokengate",
    version,
    about = "OAuth 2.0 token-endpoint gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Run {
        /// Configuration file.
        #[arg(long, short, default_value = "conf/tokengate.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file and exit (0: valid).
    CheckConfig {
        /// Configuration file.
        #[arg(default_value = "conf/tokengate.toml")]
        file: PathBuf,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match Settings::load(&file) {
            Ok(s) => {
                println!(
                    "{}: ok ({} upstream(s), {} route(s))",
                    file.display(),
                    s.upstreams.len(),
                    s.routes.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::from(2)
            }
        },
        Command::Run { config } => {
            init_logging();
            let settings = match Settings::load(&config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    return ExitCode::from(2);
                }
            };
            tracing::info!(config = %config.display(), listen = ?settings.server.listen, "starting tokengate");
            crate::server::run(settings, None);
            ExitCode::SUCCESS
        }
    }
}

/// Pingora's crates print whole request headers (Authorization included) at debug level: they are
/// capped at info whatever `TOKENGATE_LOG` asks for, so that no secret reaches a log line.
fn init_logging() {
    use tracing_subscriber::filter::{filter_fn, FilterExt};
    use tracing_subscriber::prelude::*;

    let env = tracing_subscriber::EnvFilter::try_from_env("TOKENGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let pingora_cap = filter_fn(|meta| {
        !(meta.target().starts_with("pingora") && *meta.level() > tracing::Level::INFO)
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(env.and(pingora_cap)),
        )
        .init();
}
