//! `kms access ...`: request → verify (security admin) → approve (manager), each step signed on
//! the signer's own token; reviews, re-certification, revocation, evidence.

use std::path::PathBuf;

use clap::Subcommand;

use super::args::{card, CardArgs};
use super::output::{fmt_time, print_json, print_table};
use super::CliError;
use crate::duration::HumanDuration;
use crate::engine::{Caller, Engine, RequestEvidence, RequestInput, Step};
use crate::model::GrantOps;
use crate::model::RequestState;

#[derive(Debug, Subcommand)]
pub enum AccessCmd {
    /// Ask for access to a key: operations, duration, ticket and business justification.
    Request {
        #[arg(long)]
        key: String,
        /// sign, verify, encrypt, decrypt, wrap, unwrap, read-inventory (comma-separated).
        #[arg(long, value_name = "OPS")]
        ops: GrantOps,
        /// How long the access lasts once approved (e.g. 30d).
        #[arg(long, value_name = "DURATION")]
        duration: HumanDuration,
        #[arg(long)]
        ticket: String,
        #[arg(long)]
        justification: String,
        /// Request on behalf of another principal (default: yourself).
        #[arg(long = "for", value_name = "PRINCIPAL")]
        grantee: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Security admin: verify a request, signing it on your token.
    Verify {
        id: String,
        #[command(flatten)]
        card: CardArgs,
    },
    /// Manager: approve a verified request, signing it on your token; the grant starts now.
    Approve {
        id: String,
        #[command(flatten)]
        card: CardArgs,
    },
    /// Security admin or manager: deny a request (signed), with the global --reason.
    Deny {
        id: String,
        #[command(flatten)]
        card: CardArgs,
    },
    /// Access requests, newest first.
    List {
        /// pending | verified | approved | denied
        #[arg(long, value_parser = parse_state)]
        state: Option<RequestState>,
        #[arg(long)]
        json: bool,
    },
    /// A request with each signature and whether it verifies.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Write an evidence bundle (messages, signatures, public keys) that openssl alone verifies.
    Export {
        id: String,
        /// Directory to create.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Grants due for re-certification within the horizon (default 14 days), or overdue.
    Review {
        #[arg(long, default_value = "14d")]
        within: HumanDuration,
        #[arg(long)]
        json: bool,
    },
    /// Re-certify a grant (signed on your token): its review deadline moves one period on.
    Recertify {
        grant: String,
        #[command(flatten)]
        card: CardArgs,
    },
    /// Revoke a grant at once (the global --reason is required).
    Revoke { grant: String },
}

fn parse_state(s: &str) -> Result<RequestState, String> {
    match s {
        "pending" => Ok(RequestState::Pending),
        "verified" => Ok(RequestState::Verified),
        "approved" => Ok(RequestState::Approved),
        "denied" => Ok(RequestState::Denied),
        _ => Err("expected pending, verified, approved or denied".into()),
    }
}

pub fn run(engine: &Engine, caller: &Caller, cmd: AccessCmd) -> Result<(), CliError> {
    match cmd {
        AccessCmd::Request {
            key,
            ops,
            duration,
            ticket,
            justification,
            grantee,
            json,
        } => {
            let r = engine.request_access(
                caller,
                RequestInput {
                    key,
                    ops,
                    duration,
                    ticket,
                    justification,
                    grantee,
                },
            )?;
            if json {
                return print_json(&r);
            }
            outln!(
                "request {}: '{}' asks {} on '{}' for {} — pending verification by a security admin",
                r.id, r.grantee, r.ops, r.key_name, r.duration
            );
            Ok(())
        }
        AccessCmd::Verify { id, card: c } => sign(engine, caller, &id, Step::Verify, c),
        AccessCmd::Approve { id, card: c } => sign(engine, caller, &id, Step::Approve, c),
        AccessCmd::Deny { id, card: c } => {
            if caller.reason.is_none() {
                return Err(CliError::Usage(
                    "denying a request needs --reason TEXT".into(),
                ));
            }
            sign(engine, caller, &id, Step::Deny, c)
        }
        AccessCmd::List { state, json } => {
            let all = engine.list_requests(caller, state)?;
            if json {
                return print_json(&all);
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        r.state.as_str().into(),
                        r.requester.clone(),
                        r.grantee.clone(),
                        r.key_name.clone(),
                        r.ops.to_string(),
                        r.duration.to_string(),
                        r.ticket.clone(),
                        fmt_time(r.created_at),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID",
                    "STATE",
                    "REQUESTER",
                    "GRANTEE",
                    "KEY",
                    "OPS",
                    "DURATION",
                    "TICKET",
                    "CREATED",
                ],
                &rows,
            );
            Ok(())
        }
        AccessCmd::Show { id, json } => {
            let e = engine.request_evidence(caller, &id)?;
            if json {
                return print_json(&e);
            }
            print_evidence(&e);
            Ok(())
        }
        AccessCmd::Export { id, out } => {
            let e = engine.request_evidence(caller, &id)?;
            export(&e, &out)?;
            outln!("evidence for {} written to {}", id, out.display());
            Ok(())
        }
        AccessCmd::Review { within, json } => {
            let due = engine.grants_due_for_review(caller, within)?;
            if json {
                return print_json(&due);
            }
            let now = time::OffsetDateTime::now_utc();
            let rows: Vec<Vec<String>> = due
                .iter()
                .map(|g| {
                    vec![
                        g.id.clone(),
                        g.principal.clone(),
                        g.key_name.clone(),
                        g.ops.to_string(),
                        g.review_due.map(fmt_time).unwrap_or_default(),
                        if g.review_lapsed(now) {
                            "LAPSED".into()
                        } else {
                            "due".into()
                        },
                        if g.break_glass {
                            "break-glass".into()
                        } else {
                            g.request_id.clone().unwrap_or_default()
                        },
                    ]
                })
                .collect();
            print_table(
                &[
                    "GRANT",
                    "PRINCIPAL",
                    "KEY",
                    "OPS",
                    "REVIEW-DUE",
                    "STATE",
                    "ORIGIN",
                ],
                &rows,
            );
            Ok(())
        }
        AccessCmd::Recertify { grant, card: c } => {
            let g = engine.recertify_grant(caller, &grant, &card(c)?)?;
            outln!(
                "grant {} re-certified; next review by {}",
                g.id,
                g.review_due.map(fmt_time).unwrap_or_default()
            );
            Ok(())
        }
        AccessCmd::Revoke { grant } => super::revoke::revoke_grant(engine, caller, &grant),
    }
}

fn sign(
    engine: &Engine,
    caller: &Caller,
    id: &str,
    step: Step,
    c: CardArgs,
) -> Result<(), CliError> {
    let note = if step == Step::Deny {
        caller.reason.clone()
    } else {
        None
    };
    let (r, grant) = engine.sign_request(caller, id, step, &card(c)?, note.as_deref())?;
    match grant {
        Some(g) => outln!(
            "request {} approved; grant {}: '{}' may {} with '{}' until {} (review by {})",
            r.id,
            g.id,
            g.principal,
            g.ops,
            g.key_name,
            fmt_time(g.not_after),
            g.review_due.map(fmt_time).unwrap_or_default()
        ),
        None => outln!("request {} is now {}", r.id, r.state.as_str()),
    }
    Ok(())
}

fn print_evidence(e: &RequestEvidence) {
    let r = &e.request;
    outln!("request:       {} ({})", r.id, r.state.as_str());
    outln!("requester:     {}", r.requester);
    outln!("grantee:       {}", r.grantee);
    outln!("key:           {} ({})", r.key_name, r.key_id);
    outln!("operations:    {}", r.ops);
    outln!("duration:      {}", r.duration);
    outln!("ticket:        {}", r.ticket);
    outln!("justification: {}", r.justification);
    outln!("created:       {}", fmt_time(r.created_at));
    if let Some(g) = &r.grant_id {
        outln!("grant:         {g}");
    }
    for s in &e.steps {
        let ok = s.message_matches_request && s.signature_valid && s.key_is_registered;
        outln!(
            "  {:<9} by {:<12} {}  {}{}{}",
            s.step.step,
            s.step.signer,
            fmt_time(s.step.signed_at),
            if ok {
                "signature VALID"
            } else {
                "signature INVALID"
            },
            if s.message_matches_request {
                ""
            } else {
                "; request altered since signing"
            },
            if !s.key_is_registered {
                "; key was not the signer's approval key when signed".to_owned()
            } else if !s.key_is_current {
                format!(
                    "; on {} (a card since replaced)",
                    s.card.as_deref().unwrap_or("a card")
                )
            } else {
                s.card
                    .as_deref()
                    .map(|c| format!("; on {c}"))
                    .unwrap_or_default()
            },
        );
    }
}

/// One directory a third party can check with openssl alone (see docs/access.md).
fn export(e: &RequestEvidence, dir: &std::path::Path) -> Result<(), CliError> {
    use base64::Engine as _;
    let io = |source| CliError::Io {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let write = |name: &str, data: &[u8]| {
        std::fs::write(dir.join(name), data).map_err(|source| CliError::Io {
            path: dir.join(name),
            source,
        })
    };
    let mut manifest = Vec::new();
    for (i, s) in e.steps.iter().enumerate() {
        let base = format!("{}-{}", i + 1, s.step.step);
        write(&format!("{base}.msg"), s.message_text.as_bytes())?;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&s.signature_b64)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        write(&format!("{base}.sig"), &sig)?;
        write(&format!("{base}.pub.pem"), s.public_key_pem.as_bytes())?;
        let digest = if s.public_key_pem.len() > 400 {
            "-sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32"
        } else {
            "-sha384"
        };
        manifest.push(serde_json::json!({
            "step": s.step.step,
            "signer": s.step.signer,
            "signed_at": fmt_time(s.step.signed_at),
            "message": format!("{base}.msg"),
            "signature": format!("{base}.sig"),
            "public_key": format!("{base}.pub.pem"),
            "verify_with": format!("openssl dgst {digest} -verify {base}.pub.pem -signature {base}.sig {base}.msg"),
        }));
    }
    let bundle = serde_json::json!({ "request": e.request, "steps": manifest });
    let text = serde_json::to_string_pretty(&bundle).map_err(|e| CliError::Usage(e.to_string()))?;
    write("bundle.json", text.as_bytes())
}
