//! The officer command line: clap definitions, one file per noun, each command a thin call into
//! the engine. No command opens a token or the inventory itself.

// The CLI's `println!` and `eprintln!`: a reader that closed the pipe ends output
// quietly instead of a panic (output.rs). Defined before the modules so every one can use them.
macro_rules! outln {
    () => {
        $crate::cli::output::write_stdout(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write_stdout(format_args!($($arg)*), true)
    };
}
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::output::write_stderr(format_args!($($arg)*))
    };
}

mod access;
mod args;
mod audit;
mod backup;
mod card;
mod grant;
mod inventory;
mod io;
mod key;
mod lifecycle;
pub mod output;
mod principal;
mod reconcile;
mod revoke;
mod serve;
mod token;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::engine::{Caller, Engine, EngineError, ErrorKind};

/// kms: keys live in PKCS#11 tokens; the inventory and audit trail live in SQLite.
#[derive(Debug, Parser)]
#[command(name = "kms", version, about, propagate_version = true)]
pub struct Cli {
    /// Config file (default: $KMS_CONFIG). See hsm-config/kms.toml for every field.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Identity recorded in the audit trail (default: the OS user).
    #[arg(long = "as", global = true, value_name = "NAME", env = "KMS_AS")]
    pub actor: Option<String>,
    /// Why you are doing this; recorded in the audit row.
    #[arg(long, global = true, value_name = "TEXT")]
    pub reason: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Configured PKCS#11 tokens.
    #[command(subcommand)]
    Token(token::TokenCmd),
    /// Keys: create, inventory, and use.
    #[command(subcommand)]
    Key(key::KeyCmd),
    /// Compare the inventory with the tokens; exit 1 when anything is out of place.
    Reconcile(reconcile::ReconcileArgs),
    /// The audit trail.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// The inventory's own integrity: every row that grants power carries an HSM-made tag.
    #[command(subcommand)]
    Inventory(inventory::InventoryCmd),
    /// Principals: who may call the service.
    #[command(subcommand)]
    Principal(principal::PrincipalCmd),
    /// Grants: list, and break-glass grants by a security officer (outside the workflow).
    #[command(subcommand)]
    Grant(grant::GrantCmd),
    /// Access workflow: request, verify, approve (signed on your token), review, revoke.
    #[command(subcommand)]
    Access(access::AccessCmd),
    /// YubiKey PIV smartcards: list, status, enrol a person's approval key, unblock.
    #[command(subcommand)]
    Card(card::CardCmd),
    /// Reports: keys due and overdue for rotation.
    #[command(subcommand)]
    Report(lifecycle::ReportCmd),
    /// Scheduled lifecycle procedures (what `kms serve` runs by itself).
    #[command(subcommand)]
    Schedule(lifecycle::ScheduleCmd),
    /// Backup to the second HSM: key ceremony, copies, restore drills, restore, offline files.
    #[command(subcommand)]
    Backup(backup::BackupCmd),
    /// Run the mutual-TLS HTTPS service for applications.
    Serve(serve::ServeArgs),
}

/// Errors of the CLI layer: the engine's, plus files and arguments.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    /// Not an error message: the command's answer is "no" (invalid signature, findings).
    #[error("{0}")]
    Negative(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Engine(e) => engine_exit_code(e.kind()),
            CliError::Io { .. } | CliError::Usage(_) => 2,
            CliError::Negative(_) => 1,
        }
    }
}

/// The CLI door's wire format for the engine's errors: 2 bad input, 3 not found, 4 refused,
/// 5 token or card, 6 inventory or audit, 7 configuration.
fn engine_exit_code(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::BadInput | ErrorKind::BadCiphertext | ErrorKind::TooLarge => 2,
        ErrorKind::NotFound(_) => 3,
        ErrorKind::Refused(_) | ErrorKind::Conflict => 4,
        ErrorKind::WrongObject | ErrorKind::Unavailable | ErrorKind::NotOnSite => 5,
        ErrorKind::Internal | ErrorKind::InventoryUnavailable => 6,
        ErrorKind::Configuration => 7,
    }
}

impl From<crate::config::ConfigError> for CliError {
    fn from(e: crate::config::ConfigError) -> Self {
        CliError::Engine(EngineError::Config(e))
    }
}

/// Run one parsed command.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let path = Config::locate(cli.config.as_deref())?;
    let config = Config::load(&path)?;
    let engine = Engine::open(config)?;
    let caller = Caller::local(cli.actor, cli.reason);
    if let Command::Serve(args) = cli.command {
        return serve::run(engine, args);
    }
    let result = dispatch(&engine, &caller, cli.command);
    if result.is_ok() {
        // "At shutdown": sign a checkpoint over what this command recorded, unless one is
        // recent — only when the command logged in to the audit key's token anyway (a read-only
        // command logs in to no token, not even for the checkpoint).
        engine.checkpoint_at_command_end();
    }
    result
}

fn dispatch(engine: &Engine, caller: &Caller, command: Command) -> Result<(), CliError> {
    match command {
        Command::Token(cmd) => token::run(engine, caller, cmd),
        Command::Key(cmd) => key::run(engine, caller, cmd),
        Command::Reconcile(args) => reconcile::run(engine, caller, args),
        Command::Audit(cmd) => audit::run(engine, caller, cmd),
        Command::Inventory(cmd) => inventory::run(engine, caller, cmd),
        Command::Principal(cmd) => principal::run(engine, caller, cmd),
        Command::Grant(cmd) => grant::run(engine, caller, cmd),
        Command::Access(cmd) => access::run(engine, caller, cmd),
        Command::Backup(cmd) => backup::run(engine, caller, cmd),
        Command::Report(cmd) => lifecycle::report(engine, caller, cmd),
        Command::Card(cmd) => card::run(engine, caller, cmd),
        Command::Schedule(cmd) => lifecycle::schedule(engine, caller, cmd),
        Command::Serve(_) => Err(CliError::Usage("serve is dispatched before this".into())),
    }
}
