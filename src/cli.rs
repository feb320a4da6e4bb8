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
    /// Write a new private signing key (PKCS#8 PEM, mode 0600) for `[[signing_keys]]`; never
    /// overwrites a file. RS256 keys: `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`.
    NewSigningKey {
        #[arg(long, value_enum, default_value_t = KeyAlgorithm::Es256)]
        algorithm: KeyAlgorithm,
        /// The file to create.
        file: PathBuf,
    },
    /// Print the public keys of the configuration's `[[signing_keys]]` as a JWKS (RFC 7517), to
    /// register with the authorization server for `private_key_jwt` clients.
    Jwks {
        /// Configuration file.
        #[arg(long, short, default_value = "conf/tokengate.toml")]
        config: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAlgorithm {
    Es256,
    Eddsa,
}

fn new_signing_key(algorithm: KeyAlgorithm, file: &std::path::Path) -> ExitCode {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let kind = match algorithm {
        KeyAlgorithm::Es256 => crate::assertion::NewKey::Es256,
        KeyAlgorithm::Eddsa => crate::assertion::NewKey::EdDsa,
    };
    let written = crate::assertion::new_key_pem(kind).and_then(|pem| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)
            .map_err(|e| e.to_string())?;
        f.write_all(pem.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| e.to_string())
    });
    match written {
        Ok(()) => {
            eprintln!("{}: new signing key written (mode 0600)", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            ExitCode::from(2)
        }
    }
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
    let keys = match crate::assertion::SigningKeys::load(&s.signing_keys) {
        Ok(keys) => keys,
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
        let checked = crate::clients::file::load_file(path).and_then(|set| {
            crate::runtime::check_signing_records(&s, set.iter().map(|r| &**r), &keys)?;
            Ok(set.len())
        });
        match checked {
            Ok(n) => clients = format!(", {n} client(s) in {}", path.display()),
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    let keys = match s.signing_keys.len() {
        0 => String::new(),
        n => format!(", {n} signing key(s)"),
    };
    println!(
        "{}: ok ({} upstream(s), {} route(s){clients}{keys})",
        file.display(),
        s.upstreams.len(),
        s.routes.len()
    );
    ExitCode::SUCCESS
}

fn jwks(file: &std::path::Path) -> ExitCode {
    let keys = Settings::load(file)
        .map_err(|e| e.to_string())
        .and_then(|s| crate::assertion::SigningKeys::load(&s.signing_keys));
    match keys {
        Ok(keys) if keys.is_empty() => {
            eprintln!("{}: no [[signing_keys]]", file.display());
            ExitCode::from(2)
        }
        Ok(keys) => {
            println!("{:#}", keys.jwks());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            ExitCode::from(2)
        }
    }
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::HashSecret { algorithm } => hash_secret(algorithm),
        Command::Jwks { config } => jwks(&config),
        Command::NewSigningKey { algorithm, file } => new_signing_key(algorithm, &file),
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
