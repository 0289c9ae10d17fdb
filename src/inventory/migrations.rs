//! Numbered schema migrations. `schema_version` holds the number of the last one applied; each
//! migration runs in its own transaction, so a crash leaves the database at a whole version.

use super::sql::{Connection, OptionalExtension};

/// Migration `n` is `MIGRATIONS[n - 1]`. Append only; never edit a released one.
const MIGRATIONS: &[&str] = &[
    // 1: keys, key versions, audit rows.
    r#"
    CREATE TABLE keys (
        id                TEXT PRIMARY KEY,
        name              TEXT NOT NULL UNIQUE,
        key_type          TEXT NOT NULL,
        owner             TEXT NOT NULL,
        classification    TEXT NOT NULL CHECK (classification IN ('confidential','restricted','public')),
        usage             TEXT NOT NULL,
        purpose           TEXT NOT NULL DEFAULT '',
        handling          TEXT NOT NULL DEFAULT '',
        disposal          TEXT NOT NULL DEFAULT '',
        expires           TEXT,
        rotate_every_secs INTEGER NOT NULL CHECK (rotate_every_secs > 0),
        labels            TEXT NOT NULL DEFAULT '{}',
        created_by        TEXT NOT NULL,
        created_at        TEXT NOT NULL,
        updated_at        TEXT NOT NULL
    );
    CREATE TABLE key_versions (
        key_id        TEXT NOT NULL REFERENCES keys(id) ON DELETE CASCADE,
        version       INTEGER NOT NULL,
        token         TEXT NOT NULL,
        token_label   TEXT NOT NULL,
        token_serial  TEXT NOT NULL,
        object_id     TEXT NOT NULL,
        state         TEXT NOT NULL CHECK (state IN ('pending','active','destroyed')),
        public_key    BLOB,
        created_at    TEXT NOT NULL,
        activated_at  TEXT,
        destroyed_at  TEXT,
        PRIMARY KEY (key_id, version)
    );
    CREATE UNIQUE INDEX key_versions_object ON key_versions (token_serial, object_id);
    CREATE TABLE audit (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        at           TEXT NOT NULL,
        actor        TEXT NOT NULL,
        host         TEXT NOT NULL,
        action       TEXT NOT NULL,
        key_name     TEXT,
        key_version  INTEGER,
        reason       TEXT,
        outcome      TEXT NOT NULL CHECK (outcome IN ('ok','denied','error')),
        detail       TEXT
    );
    CREATE INDEX audit_key ON audit (key_name, seq);
    "#,
    // 2: principals (applications by client-certificate fingerprint) and grants.
    r#"
    CREATE TABLE principals (
        name              TEXT PRIMARY KEY,
        role              TEXT NOT NULL,
        cert_fingerprint  TEXT UNIQUE,
        cert_subject      TEXT,
        disabled_at       TEXT,
        disabled_by       TEXT,
        created_by        TEXT NOT NULL,
        created_at        TEXT NOT NULL
    );
    CREATE TABLE grants (
        id             TEXT PRIMARY KEY,
        principal      TEXT NOT NULL REFERENCES principals(name),
        key_id         TEXT NOT NULL REFERENCES keys(id),
        ops            TEXT NOT NULL,
        not_before     TEXT NOT NULL,
        not_after      TEXT NOT NULL,
        ticket         TEXT NOT NULL,
        justification  TEXT NOT NULL,
        created_by     TEXT NOT NULL,
        created_at     TEXT NOT NULL,
        revoked_at     TEXT,
        revoked_by     TEXT,
        revoke_reason  TEXT
    );
    CREATE INDEX grants_principal_key ON grants (principal, key_id);
    "#,
    // 3: access workflow (A9): approval keys, source networks, requests, signed steps, reviews.
    r#"
    ALTER TABLE principals ADD COLUMN approval_key BLOB;
    ALTER TABLE principals ADD COLUMN approval_key_uri TEXT;
    ALTER TABLE principals ADD COLUMN allowed_networks TEXT;
    ALTER TABLE grants ADD COLUMN request_id TEXT;
    ALTER TABLE grants ADD COLUMN review_due TEXT;
    ALTER TABLE grants ADD COLUMN break_glass INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE access_requests (
        id             TEXT PRIMARY KEY,
        requester      TEXT NOT NULL REFERENCES principals(name),
        grantee        TEXT NOT NULL REFERENCES principals(name),
        key_id         TEXT NOT NULL REFERENCES keys(id),
        ops            TEXT NOT NULL,
        duration_secs  INTEGER NOT NULL CHECK (duration_secs > 0),
        ticket         TEXT NOT NULL,
        justification  TEXT NOT NULL,
        state          TEXT NOT NULL CHECK (state IN ('pending','verified','approved','denied')),
        created_at     TEXT NOT NULL,
        grant_id       TEXT
    );
    CREATE TABLE signatures (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        subject     TEXT NOT NULL,
        step        TEXT NOT NULL CHECK (step IN ('verify','approve','deny','recertify')),
        signer      TEXT NOT NULL REFERENCES principals(name),
        message     BLOB NOT NULL,
        signature   BLOB NOT NULL,
        public_key  BLOB NOT NULL,
        signed_at   TEXT NOT NULL,
        note        TEXT
    );
    CREATE INDEX signatures_subject ON signatures (subject, seq);
    "#,
    // 4: complete, tamper-evident audit records (hash chain), signed checkpoints, shipping cursor.
    r#"
    ALTER TABLE audit ADD COLUMN role TEXT;
    ALTER TABLE audit ADD COLUMN os_user TEXT;
    ALTER TABLE audit ADD COLUMN cert_fingerprint TEXT;
    ALTER TABLE audit ADD COLUMN code TEXT;
    ALTER TABLE audit ADD COLUMN diff TEXT;
    ALTER TABLE audit ADD COLUMN prev_hash TEXT;
    ALTER TABLE audit ADD COLUMN hash TEXT;
    CREATE TABLE audit_checkpoints (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        seq         INTEGER NOT NULL,
        head_hash   TEXT NOT NULL,
        at          TEXT NOT NULL,
        key_name    TEXT NOT NULL,
        key_version INTEGER NOT NULL,
        signature   BLOB NOT NULL
    );
    CREATE TABLE audit_state (
        name   TEXT PRIMARY KEY,
        value  INTEGER NOT NULL
    );
    "#,
    // 5: chained checkpoints (each signs its predecessor) and where the hash chain starts:
    // `audit_state.chain_from` is the first hashed record; records before it were written
    // before migration 4 and carry no hash. From it on, every record must be hashed and the
    // chain must start there with prev_hash = GENESIS (1 for every database created at 4 or later).
    r#"
    ALTER TABLE audit_checkpoints ADD COLUMN format INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE audit_checkpoints ADD COLUMN prev_checkpoint_id INTEGER;
    ALTER TABLE audit_checkpoints ADD COLUMN prev_head_hash TEXT;
    ALTER TABLE audit_checkpoints ADD COLUMN covered TEXT;
    INSERT OR IGNORE INTO audit_state (name, value) VALUES ('chain_from', COALESCE(
        (SELECT MIN(seq) FROM audit WHERE hash IS NOT NULL),
        (SELECT MAX(seq) + 1 FROM audit),
        1));
    "#,
    // 6: backup to a second token (issue 6). A pairing is one key ceremony: a trusted
    // key-encryption key (same CKA_ID on both tokens) made by the `from` token's SO. A copy is
    // one key version unwrapped on another token under the same CKA_ID, with its last drill.
    // `pending_reason` says why a version is not active yet (e.g. its backup copy failed).
    r#"
    CREATE TABLE backup_pairs (
        id INTEGER PRIMARY KEY,
        from_token TEXT NOT NULL,
        from_serial TEXT NOT NULL,
        to_token TEXT NOT NULL,
        to_serial TEXT NOT NULL,
        kek_id TEXT NOT NULL,
        transport_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL
    );
    CREATE TABLE key_copies (
        key_id TEXT NOT NULL REFERENCES keys(id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        token TEXT NOT NULL,
        token_label TEXT NOT NULL,
        token_serial TEXT NOT NULL,
        object_id TEXT NOT NULL,
        pair_id INTEGER NOT NULL REFERENCES backup_pairs(id),
        copied_at TEXT NOT NULL,
        verified_at TEXT,
        drill_failed_at TEXT,
        drill_error TEXT,
        PRIMARY KEY (key_id, version, token_serial)
    );
    ALTER TABLE key_versions ADD COLUMN pending_reason TEXT;
    "#,
    // 7: key lifecycle (issue 7). Version states after NIST SP 800-57 / KMIP; when a deactivated
    // version is due for destruction; compromise and disposal records; multi-step procedures
    // with their progress (intent recorded before any token is touched); the key's tombstone.
    r#"
    CREATE TABLE key_versions_v7 (
        key_id        TEXT NOT NULL REFERENCES keys(id) ON DELETE CASCADE,
        version       INTEGER NOT NULL,
        token         TEXT NOT NULL,
        token_label   TEXT NOT NULL,
        token_serial  TEXT NOT NULL,
        object_id     TEXT NOT NULL,
        state         TEXT NOT NULL CHECK (state IN ('pending','active','deactivated',
                          'compromised','destroyed','destroyed-compromised')),
        public_key    BLOB,
        created_at    TEXT NOT NULL,
        activated_at  TEXT,
        destroyed_at  TEXT,
        pending_reason TEXT,
        deactivated_at TEXT,
        destroy_after TEXT,
        compromised_at TEXT,
        PRIMARY KEY (key_id, version)
    );
    INSERT INTO key_versions_v7 (key_id, version, token, token_label, token_serial, object_id,
        state, public_key, created_at, activated_at, destroyed_at, pending_reason)
    SELECT key_id, version, token, token_label, token_serial, object_id, state, public_key,
        created_at, activated_at, destroyed_at, pending_reason FROM key_versions;
    DROP TABLE key_versions;
    ALTER TABLE key_versions_v7 RENAME TO key_versions;
    CREATE UNIQUE INDEX key_versions_object ON key_versions (token_serial, object_id)
        WHERE state NOT IN ('destroyed','destroyed-compromised');
    ALTER TABLE keys ADD COLUMN reencrypt_window_secs INTEGER NOT NULL DEFAULT 604800;
    ALTER TABLE keys ADD COLUMN protect_for_secs INTEGER;
    ALTER TABLE keys ADD COLUMN process_for_secs INTEGER;
    ALTER TABLE keys ADD COLUMN disposed_at TEXT;
    CREATE TABLE procedures (
        id          TEXT PRIMARY KEY,
        kind        TEXT NOT NULL,
        key_id      TEXT NOT NULL,
        version     INTEGER,
        step        TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('running','done','rolled-back')),
        data        TEXT NOT NULL,
        started_by  TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE TABLE compromises (
        id          TEXT PRIMARY KEY,
        key_id      TEXT NOT NULL REFERENCES keys(id),
        version     INTEGER NOT NULL,
        reason      TEXT NOT NULL,
        declared_by TEXT NOT NULL,
        declared_at TEXT NOT NULL,
        replaced_by INTEGER,
        report      TEXT NOT NULL,
        closed_at   TEXT,
        closed_by   TEXT
    );
    CREATE TABLE disposals (
        id            TEXT PRIMARY KEY,
        key_id        TEXT NOT NULL REFERENCES keys(id),
        contract_ref  TEXT NOT NULL,
        justification TEXT NOT NULL,
        requested_by  TEXT NOT NULL,
        requested_at  TEXT NOT NULL,
        wait_secs     INTEGER NOT NULL,
        state         TEXT NOT NULL CHECK (state IN ('requested','verified','approved',
                          'executing','cancelled','done')),
        not_before    TEXT,
        done_at       TEXT,
        record        TEXT,
        record_signature BLOB
    );
    "#,
    // 8: rows that prove themselves (issue 17): a tag made on the HSM over each row that grants
    // power. Existing rows are tagged once by the engine, as an audited step.
    r#"
    ALTER TABLE principals ADD COLUMN integrity_tag BLOB;
    ALTER TABLE grants ADD COLUMN integrity_tag BLOB;
    ALTER TABLE key_versions ADD COLUMN integrity_tag BLOB;
    ALTER TABLE backup_pairs ADD COLUMN integrity_tag BLOB;
    -- Whether any row is still untagged is asked at every open: these partial indexes hold
    -- only untagged rows, so the answer costs nothing however large the tables grow.
    CREATE INDEX principals_untagged ON principals (integrity_tag) WHERE integrity_tag IS NULL;
    CREATE INDEX grants_untagged ON grants (integrity_tag) WHERE integrity_tag IS NULL;
    CREATE INDEX key_versions_untagged ON key_versions (integrity_tag) WHERE integrity_tag IS NULL;
    CREATE INDEX backup_pairs_untagged ON backup_pairs (integrity_tag) WHERE integrity_tag IS NULL;
    "#,
    // 9: several nodes on one inventory (issue 13): the node that wrote each audit record, and
    //    leases for the work only one node may do at a time.
    r#"
    ALTER TABLE audit ADD COLUMN node TEXT;
    CREATE TABLE leases (
        name        TEXT PRIMARY KEY,
        holder      TEXT NOT NULL,
        expires_at  INTEGER NOT NULL,
        taken_at    TEXT NOT NULL
    );
    "#,
    // 10: every key type of an inventory (issue 14): the signature scheme an RSA key was made
    //     for, whether a legacy (3DES) key may still produce data, where a key came from
    //     (generated on the token, imported wrapped, adopted from a token), why a weak adopted
    //     key was accepted anyway, and the AES key a legacy key's data moves to.
    r#"
    ALTER TABLE keys ADD COLUMN signature TEXT;
    ALTER TABLE keys ADD COLUMN legacy_encrypt INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE keys ADD COLUMN origin TEXT NOT NULL DEFAULT 'generated';
    ALTER TABLE keys ADD COLUMN weak_reason TEXT;
    ALTER TABLE keys ADD COLUMN migrated_to TEXT;
    "#,
    // 11: the inventory as untrusted storage (issue 23). More rows carry integrity tags (keys,
    //     backup copies, access requests and their signatures, compromises, disposals,
    //     procedures); every tagged row carries `row_seq`, the number of the change that wrote it
    //     (covered by its tag), and `row_changes` lists every change of every tagged row, so an
    //     older copy of a row written back (a replay) is refused: its number is not the row's
    //     last. The token's anchor (engine/anchor.rs) pins the change log.
    r#"
    ALTER TABLE keys ADD COLUMN integrity_tag BLOB;
    ALTER TABLE key_copies ADD COLUMN integrity_tag BLOB;
    ALTER TABLE access_requests ADD COLUMN integrity_tag BLOB;
    ALTER TABLE signatures ADD COLUMN integrity_tag BLOB;
    ALTER TABLE compromises ADD COLUMN integrity_tag BLOB;
    ALTER TABLE disposals ADD COLUMN integrity_tag BLOB;
    ALTER TABLE procedures ADD COLUMN integrity_tag BLOB;
    ALTER TABLE principals ADD COLUMN row_seq INTEGER;
    ALTER TABLE grants ADD COLUMN row_seq INTEGER;
    ALTER TABLE key_versions ADD COLUMN row_seq INTEGER;
    ALTER TABLE backup_pairs ADD COLUMN row_seq INTEGER;
    ALTER TABLE keys ADD COLUMN row_seq INTEGER;
    ALTER TABLE key_copies ADD COLUMN row_seq INTEGER;
    ALTER TABLE access_requests ADD COLUMN row_seq INTEGER;
    ALTER TABLE signatures ADD COLUMN row_seq INTEGER;
    ALTER TABLE compromises ADD COLUMN row_seq INTEGER;
    ALTER TABLE disposals ADD COLUMN row_seq INTEGER;
    ALTER TABLE procedures ADD COLUMN row_seq INTEGER;
    CREATE INDEX keys_untagged ON keys (integrity_tag) WHERE integrity_tag IS NULL;
    CREATE INDEX key_copies_untagged ON key_copies (integrity_tag) WHERE integrity_tag IS NULL;
    CREATE INDEX access_requests_untagged ON access_requests (integrity_tag) WHERE integrity_tag IS NULL;
    CREATE INDEX signatures_untagged ON signatures (integrity_tag) WHERE integrity_tag IS NULL;
    CREATE INDEX compromises_untagged ON compromises (integrity_tag) WHERE integrity_tag IS NULL;
    CREATE INDEX disposals_untagged ON disposals (integrity_tag) WHERE integrity_tag IS NULL;
    CREATE INDEX procedures_untagged ON procedures (integrity_tag) WHERE integrity_tag IS NULL;
    CREATE TABLE row_changes (
        seq    INTEGER PRIMARY KEY,
        tbl    TEXT NOT NULL,
        ident  TEXT NOT NULL,
        gone   INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX row_changes_row ON row_changes (tbl, ident, seq);
    "#,
    // 12: key versions that can never have a backup copy (issue 23): the token answered that the
    //     object is not extractable or of a type it cannot wrap. Remembered for `backup status`
    //     and so the first finding is audited once; never read to decide whether to copy (every
    //     `backup sync` asks the token again), so the row grants nothing and carries no tag.
    r#"
    CREATE TABLE never_copyable (
        key_id       TEXT NOT NULL REFERENCES keys(id) ON DELETE CASCADE,
        version      INTEGER NOT NULL,
        token_serial TEXT NOT NULL,
        object_id    TEXT NOT NULL,
        code         TEXT NOT NULL CHECK (code IN ('not-extractable','not-wrappable')),
        reason       TEXT NOT NULL,
        recorded_at  TEXT NOT NULL,
        PRIMARY KEY (key_id, version)
    );
    "#,
    // 13: every approval key a person ever had (issue 31), with the card it lives on and the
    //     period it was theirs: a signature counts if its key was the signer's when it was made,
    //     so re-enrolling a lost or replaced card keeps the grants signed before valid, and a
    //     card (by serial) holds the approval keys of one person only. Tagged like principals.
    r#"
    CREATE TABLE approval_keys (
        id            TEXT PRIMARY KEY,
        principal     TEXT NOT NULL,
        public_key    BLOB NOT NULL UNIQUE,
        uri           TEXT,
        card          TEXT,
        valid_from    TEXT NOT NULL,
        valid_until   TEXT,
        end_reason    TEXT,
        ended_by      TEXT,
        integrity_tag BLOB,
        row_seq       INTEGER
    );
    CREATE INDEX approval_keys_principal ON approval_keys (principal);
    CREATE INDEX approval_keys_card ON approval_keys (card);
    "#,
];

/// `PRAGMA application_id` of a KMS inventory ("KMSI"): a SQLite file of another application is
/// never taken over.
pub const APPLICATION_ID: i64 = 0x4B4D_5349;

pub enum Claim {
    Foreign,
    Sqlite(rusqlite::Error),
    Db(super::sql::Error),
}

/// Mark a new, empty database as a KMS inventory, or check an existing one is one.
pub fn claim(conn: &rusqlite::Connection) -> Result<(), Claim> {
    let id: i64 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(Claim::Sqlite)?;
    if id == APPLICATION_ID {
        return Ok(());
    }
    let tables: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(Claim::Sqlite)?;
    if id != 0 || tables > 0 {
        return Err(Claim::Foreign);
    }
    conn.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(Claim::Sqlite)
}

/// The schema version this build writes.
pub const LATEST: i64 = MIGRATIONS.len() as i64;

/// Current version of an opened database (0 for a new one).
pub fn current(conn: &Connection) -> super::sql::Result<i64> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let v: Option<i64> = conn
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .optional()?;
    Ok(v.unwrap_or(0))
}

/// Mark a PostgreSQL database as a KMS inventory (or check it is one), inside the inventory's
/// write lock so nodes starting together do it once.
pub fn claim_postgres(conn: &mut Connection) -> Result<(), Claim> {
    let tx = conn
        .transaction_with_behavior(super::sql::TransactionBehavior::Immediate)
        .map_err(Claim::Db)?;
    let ours: i64 = tx
        .query_row(
            "SELECT COUNT(*) FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_name = 'kms_meta'",
            [],
            |r| r.get(0),
        )
        .map_err(Claim::Db)?;
    if ours == 0 {
        let tables: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM information_schema.tables
                 WHERE table_schema = current_schema()",
                [],
                |r| r.get(0),
            )
            .map_err(Claim::Db)?;
        if tables > 0 {
            return Err(Claim::Foreign);
        }
        tx.execute_batch(&format!(
            "CREATE TABLE kms_meta (application_id BIGINT NOT NULL);
             INSERT INTO kms_meta (application_id) VALUES ({APPLICATION_ID});
             CREATE TABLE schema_version (version BIGINT NOT NULL);
             CREATE TABLE sqlite_sequence (name TEXT PRIMARY KEY, seq BIGINT NOT NULL);"
        ))
        .map_err(Claim::Db)?;
    } else {
        let id: i64 = tx
            .query_row("SELECT application_id FROM kms_meta", [], |r| r.get(0))
            .map_err(Claim::Db)?;
        if id != APPLICATION_ID {
            return Err(Claim::Foreign);
        }
    }
    tx.commit().map_err(Claim::Db)
}

/// Migration `n` in PostgreSQL's dialect: the same tables, with PostgreSQL's names for the
/// types (BIGINT, BYTEA, BIGSERIAL), `ON CONFLICT DO NOTHING` for `INSERT OR IGNORE`, and a
/// `rowid` column on the tables whose rows carry integrity tags (SQLite has one built in).
fn for_postgres(n: usize, sql: &str) -> String {
    let mut s = sql
        .replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
        .replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY")
        .replace("INTEGER", "BIGINT")
        .replace("BLOB", "BYTEA");
    if let Some(i) = s.find("INSERT OR IGNORE INTO") {
        s.replace_range(i..i + "INSERT OR IGNORE INTO".len(), "INSERT INTO");
        if let Some(end) = s[i..].find(";") {
            s.insert_str(i + end, " ON CONFLICT DO NOTHING");
        }
    }
    let tagged: &[&str] = match n {
        8 => &["principals", "grants", "key_versions", "backup_pairs"],
        11 => &[
            "keys",
            "key_copies",
            "access_requests",
            "signatures",
            "compromises",
            "disposals",
            "procedures",
        ],
        13 => &["approval_keys"],
        _ => &[],
    };
    {
        for t in tagged {
            s.push_str(&format!(
                "\n    ALTER TABLE {t} ADD COLUMN rowid BIGSERIAL;"
            ));
        }
    }
    s
}

/// Apply every migration after `from`.
pub fn apply(conn: &mut Connection, from: i64) -> super::sql::Result<()> {
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let n = i as i64 + 1;
        if n <= from {
            continue;
        }
        // Immediate: two nodes opening one inventory at once migrate it once, in turn.
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        let now: Option<i64> = tx
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .optional()?;
        if now.unwrap_or(0) >= n {
            continue;
        }
        if tx.is_postgres() {
            tx.execute_batch(&for_postgres(i + 1, sql))?;
        } else {
            tx.execute_batch(sql)?;
        }
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [n])?;
        tx.commit()?;
    }
    Ok(())
}
