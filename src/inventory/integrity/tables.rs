//! The tagged tables: their names and, for each, the columns its tag covers (identity first).

/// The tables whose rows carry tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Principals,
    Grants,
    KeyVersions,
    BackupPairs,
    Keys,
    KeyCopies,
    Requests,
    Signatures,
    Compromises,
    Disposals,
    Procedures,
    ApprovalKeys,
}

impl Table {
    pub const ALL: [Table; 12] = [
        Table::Principals,
        Table::Grants,
        Table::KeyVersions,
        Table::BackupPairs,
        Table::Keys,
        Table::KeyCopies,
        Table::Requests,
        Table::Signatures,
        Table::Compromises,
        Table::Disposals,
        Table::Procedures,
        Table::ApprovalKeys,
    ];

    /// The tables that carry tags since issue 23 (their rows from before are tagged once).
    pub const SINCE_23: [Table; 7] = [
        Table::Keys,
        Table::KeyCopies,
        Table::Requests,
        Table::Signatures,
        Table::Compromises,
        Table::Disposals,
        Table::Procedures,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Principals => "principals",
            Table::Grants => "grants",
            Table::KeyVersions => "key_versions",
            Table::BackupPairs => "backup_pairs",
            Table::Keys => "keys",
            Table::KeyCopies => "key_copies",
            Table::Requests => "access_requests",
            Table::Signatures => "signatures",
            Table::Compromises => "compromises",
            Table::Disposals => "disposals",
            Table::Procedures => "procedures",
            Table::ApprovalKeys => "approval_keys",
        }
    }

    /// The columns a tag covers: the row's identity first, then everything that grants power.
    pub(super) fn columns(self) -> &'static [&'static str] {
        match self {
            Table::Principals => &[
                "name",
                "role",
                "cert_fingerprint",
                "approval_key",
                "approval_key_uri",
                "allowed_networks",
                "disabled_at",
                "created_at",
            ],
            Table::Grants => &[
                "id",
                "principal",
                "key_id",
                "ops",
                "not_before",
                "not_after",
                "ticket",
                "justification",
                "created_by",
                "created_at",
                "revoked_at",
                "request_id",
                "review_due",
                "break_glass",
            ],
            Table::KeyVersions => &[
                "key_id",
                "version",
                "token",
                "token_label",
                "token_serial",
                "object_id",
                "state",
                "public_key",
                "activated_at",
                "deactivated_at",
                "destroy_after",
                "compromised_at",
                "destroyed_at",
            ],
            Table::BackupPairs => &[
                "id",
                "from_token",
                "from_serial",
                "to_token",
                "to_serial",
                "kek_id",
                "transport_id",
                "created_at",
                "created_by",
            ],
            // Not `purpose`, `handling`, `disposal` (descriptive text) nor `updated_at`.
            Table::Keys => &[
                "id",
                "name",
                "key_type",
                "owner",
                "classification",
                "usage",
                "expires",
                "rotate_every_secs",
                "labels",
                "created_by",
                "created_at",
                "reencrypt_window_secs",
                "protect_for_secs",
                "process_for_secs",
                "disposed_at",
                "signature",
                "legacy_encrypt",
                "origin",
                "weak_reason",
                "migrated_to",
            ],
            // Not the drill columns, which change at every drill and steer nothing.
            Table::KeyCopies => &[
                "key_id",
                "version",
                "token_serial",
                "token",
                "token_label",
                "object_id",
                "pair_id",
                "copied_at",
            ],
            Table::Requests => &[
                "id",
                "requester",
                "grantee",
                "key_id",
                "ops",
                "duration_secs",
                "ticket",
                "justification",
                "state",
                "created_at",
                "grant_id",
            ],
            Table::Signatures => &[
                "seq",
                "subject",
                "step",
                "signer",
                "message",
                "signature",
                "public_key",
                "signed_at",
                "note",
            ],
            Table::Compromises => &[
                "id",
                "key_id",
                "version",
                "reason",
                "declared_by",
                "declared_at",
                "replaced_by",
                "report",
                "closed_at",
                "closed_by",
            ],
            Table::Disposals => &[
                "id",
                "key_id",
                "contract_ref",
                "justification",
                "requested_by",
                "requested_at",
                "wait_secs",
                "state",
                "not_before",
                "done_at",
                "record",
                "record_signature",
            ],
            // Not `updated_at`.
            Table::Procedures => &[
                "id",
                "kind",
                "key_id",
                "version",
                "step",
                "state",
                "data",
                "started_by",
                "started_at",
            ],
            Table::ApprovalKeys => &[
                "id",
                "principal",
                "public_key",
                "uri",
                "card",
                "valid_from",
                "valid_until",
                "end_reason",
                "ended_by",
            ],
        }
    }

    /// How many leading columns identify the row.
    pub(super) fn identity_len(self) -> usize {
        match self {
            Table::KeyVersions => 2,
            Table::KeyCopies => 3,
            _ => 1,
        }
    }
}
