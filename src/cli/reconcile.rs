//! `kms reconcile`

use clap::Args;

use super::output::print_json;
use super::CliError;
use crate::engine::{Caller, Engine, Finding};

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// First finish or roll back the procedures (rotation, destruction, disposal) a crash left
    /// unfinished, and remove the token objects of creations that never activated (never a live
    /// version's object).
    #[arg(long)]
    repair: bool,
    /// Log in to every token (once each) to check private objects too: secret keys and the
    /// private halves of key pairs. Without it (and without --repair) no token is logged in
    /// to — SoftHSM2 rewrites its token file at every login, and a kms killed during that
    /// rewrite empties the token — and only public objects are checked.
    #[arg(long)]
    login: bool,
}

pub fn run(engine: &Engine, caller: &Caller, args: ReconcileArgs) -> Result<(), CliError> {
    if args.repair {
        let r = engine.repair(caller)?;
        for p in &r.finished {
            errln!("repair: finished    {p}");
        }
        for p in &r.rolled_back {
            errln!("repair: rolled back {p}");
        }
        for (p, why) in &r.failed {
            errln!("repair: FAILED      {p}: {why}");
        }
        if !r.failed.is_empty() {
            return Err(CliError::Negative(format!(
                "{} procedure(s) could not be repaired",
                r.failed.len()
            )));
        }
        let left = engine.remove_leftovers(caller)?;
        for (token, id, label, n) in &left.removed {
            errln!(
                "repair: removed     {n} object(s) CKA_ID {id} (label '{label}') from token '{token}': left by a creation that never activated"
            );
        }
        for (token, why) in &left.unreachable {
            errln!("repair: not checked token '{token}': {why}");
        }
    }
    // --repair logs in anyway (it destroys objects), so its check sees everything.
    let report = engine.reconcile(caller, args.login || args.repair)?;
    if args.json {
        print_json(&report)?;
    } else {
        outln!(
            "checked {} token(s) [{}], {} inventory version(s), {} token object(s)",
            report.tokens_checked.len(),
            report.tokens_checked.join(", "),
            report.versions_checked,
            report.objects_checked
        );
        for f in &report.findings {
            outln!("  {}", describe(f));
        }
        if !report.logged_in {
            let n = report.not_checked_without_login.len();
            if n == 0 {
                outln!("no token logged in to: public objects checked; every version and copy here has a public half that was checked");
            } else {
                outln!(
                    "no token logged in to: {n} version(s)/copies are private objects (secret keys, or key pairs without a public half) and were not checked: {}; `kms reconcile --login` checks them (it logs in to every token)",
                    report.not_checked_without_login.join(", ")
                );
            }
        }
    }
    if report.findings.is_empty() {
        if !args.json {
            outln!("inventory and tokens agree");
        }
        Ok(())
    } else {
        Err(CliError::Negative(format!(
            "{} finding(s): inventory and tokens disagree",
            report.findings.len()
        )))
    }
}

fn describe(f: &Finding) -> String {
    match f {
        Finding::OrphanObject { token, cka_id, label, class } => format!(
            "orphan object: token '{token}' holds a {class} with CKA_ID {cka_id} (label '{label}') that no inventory key refers to"
        ),
        Finding::WrongObject { token, key, version, cka_id, why } => format!(
            "wrong object: key '{key}' v{version} names CKA_ID {cka_id} on token '{token}', but {why}; kms refuses to use it"
        ),
        Finding::MissingObject { token, key, version, cka_id } => format!(
            "missing object: key '{key}' v{version} should be on token '{token}' as CKA_ID {cka_id}, but is not"
        ),
        Finding::PendingVersion { token, key, version, cka_id, on_token } => format!(
            "unfinished creation: key '{key}' v{version} (CKA_ID {cka_id} on token '{token}') is still pending; object {} the token",
            if *on_token { "IS on" } else { "is not on" }
        ),
        Finding::MissingCopy { token, key, version, cka_id } => format!(
            "missing backup copy: key '{key}' v{version} should have a copy on token '{token}' as CKA_ID {cka_id}, but it is not there; run `kms backup verify` and `kms backup sync`"
        ),
        Finding::DuplicateId { token, cka_id, class, count } => format!(
            "duplicate CKA_ID: {count} {class} objects on token '{token}' share CKA_ID {cka_id}"
        ),
        Finding::DuplicateLabel { token, label, class, count } => format!(
            "duplicate label: {count} {class} objects on token '{token}' share label '{label}'"
        ),
        Finding::TokenUnreachable { token, error } => {
            format!("token '{token}' could not be checked: {error}")
        }
        Finding::VersionUnchecked { key, version, token, token_serial } => format!(
            "unchecked: key '{key}' v{version} lives on token '{token}' (serial {token_serial}), which no reachable config entry points at"
        ),
        Finding::LeftoverObject { token, cka_id, label, class } => format!(
            "leftover object: token '{token}' holds a {class} with CKA_ID {cka_id} (label '{label}') made by a creation that never activated and is in no inventory row; `kms reconcile --repair` removes it"
        ),
        Finding::SameToken { tokens, serial } => format!(
            "config entries {} all point at the same token (serial {serial})",
            tokens.join(", ")
        ),
    }
}
