//! The command line: `tokengate run`, `tokengate check-config`, `tokengate hash-secret`.

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
    /// Validate a configuration file (and the client file it names) and exit (0: valid).
    CheckConfig {
        /// Configuration file.
        #[arg(default_value = "conf/tokengate.toml")]
        file: PathBuf,
    },
    /// Read a client secret from standard input and print the `secret = "..."` line of a client
    /// record (one trailing newline is ignored).
    HashSecret {
        /// argon2id (the default, OWASP parameters) or sha256 (salted; for speed-sensitive setups).
        #[arg(long, value_enum, default_value_t = Algorithm::Argon2id)]
        algorithm: Algorithm,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Algorithm {
    Argon2id,
    Sha256,
}

fn hash_secret(algorithm: Algorithm) -> ExitCode {
    use std::io::Read;
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("cannot read standard input: {e}");
        return ExitCode::from(2);
    }
    let secret = input
        .strip_suffix(b"\r\n")
        .or_else(|| input.strip_suffix(b"\n"))
        .unwrap_or(&input);
    if secret.is_empty() {
        eprintln!("no secret on standard input");
        return ExitCode::from(2);
    }
    let hash = match algorithm {
        Algorithm::Argon2id => crate::clients::secret::hash_argon2id(secret),
        Algorithm::Sha256 => crate::clients::secret::hash_sha256(secret),
    };
    println!("secret = \"{hash}\"");
    ExitCode::SUCCESS
}

fn check_config(file: &std::path::Path) -> ExitCode {
    let s = match Settings::load(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let mut clients = String::new();
    if let Some(crate::config::ClientsSettings {
        source: crate::config::ClientSource::File(path),
        ..
    }) = &s.clients
    {
        match crate::clients::file::load_file(path) {
            Ok(set) => clients = format!(", {} client(s) in {}", set.len(), path.display()),
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    println!(
        "{}: ok ({} upstream(s), {} route(s){clients})",
        file.display(),
        s.upstreams.len(),
        s.routes.len()
    );
    ExitCode::SUCCESS
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::HashSecret { algorithm } => hash_secret(algorithm),
        Command::Run { config } => {
            let settings = match Settings::load(&config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    return ExitCode::from(2);
                }
            };
            init_logging(settings.log_format);
            tracing::info!(config = %config.display(), listen = ?settings.server.listen, "starting tokengate");
            match crate::server::run(settings, Some(config.clone()), None) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// Logs to stderr with the operator's `TOKENGATE_LOG` filter (see [`crate::logging`]).
fn init_logging(format: crate::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOKENGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    crate::logging::install(filter, format, std::io::stderr, ansi);
}
