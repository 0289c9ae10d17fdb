//! The `kms` binary: parse, run, map errors to exit codes. Everything else is in the library.

use clap::Parser;

fn main() {
    // KMS_LOG directives on stderr; the smartcard crates' logs (APDUs carry PINs and PUKs) are
    // forced off whatever the directives say (src/logging.rs).
    kms::logging::init();
    let cli = kms::cli::Cli::parse();
    if let Err(e) = kms::cli::run(cli) {
        eprintln!("kms: {e}");
        std::process::exit(e.exit_code());
    }
}
