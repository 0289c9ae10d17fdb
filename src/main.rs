//! The `kms` binary: parse, run, map errors to exit codes. Everything else is in the library.

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("KMS_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = kms::cli::Cli::parse();
    if let Err(e) = kms::cli::run(cli) {
        eprintln!("kms: {e}");
        std::process::exit(e.exit_code());
    }
}
