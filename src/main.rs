//! The `kms` binary: parse, run, map errors to exit codes. Everything else is in the library.

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    // The `yubikey` crate traces every APDU at debug/trace level — a VERIFY carries the PIN,
    // RESET RETRY COUNTER the PUK — so its logs (and pcsc's) never go below warn, whatever
    // KMS_LOG asks for.
    let filter = EnvFilter::try_from_env("KMS_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn"))
        .add_directive("yubikey=warn".parse().unwrap_or_default())
        .add_directive("pcsc=warn".parse().unwrap_or_default());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = kms::cli::Cli::parse();
    if let Err(e) = kms::cli::run(cli) {
        eprintln!("kms: {e}");
        std::process::exit(e.exit_code());
    }
}
