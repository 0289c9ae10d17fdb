//! The `kms` binary: parse, run, map errors to exit codes. Everything else is in the library.

#![deny(clippy::print_stdout, clippy::print_stderr)]

use clap::Parser;

fn main() {
    // KMS_LOG directives on stderr; the smartcard crates' logs (APDUs carry PINs and PUKs) are
    // forced off whatever the directives say (src/logging.rs).
    kms::logging::init();
    let cli = kms::cli::Cli::parse();
    // A reader that closed the pipe is not an error (kms::cli::output); a full disk is.
    if let Err(e) = kms::cli::run(cli).and_then(|()| kms::cli::output::finish()) {
        kms::cli::output::write_stderr(format_args!("kms: {e}"));
        std::process::exit(e.exit_code());
    }
}
