//! The backup row: `backup_sync` timed per key against the raw wrap/unwrap baseline and the raw
//! restore drill on the same tokens.

use super::*;

/// Raw copy times, summed.
#[derive(Clone, Copy, Default)]
pub(super) struct Acc {
    pub(super) n: usize,
    pub(super) wrap: Duration,
    pub(super) unwrap: Duration,
    pub(super) drill: Duration,
}

impl Acc {
    pub(super) fn add(&mut self, o: &Acc) {
        self.n += o.n;
        self.wrap += o.wrap;
        self.unwrap += o.unwrap;
        self.drill += o.drill;
    }

    /// Mean ms per key of `d`.
    pub(super) fn ms(&self, d: Duration) -> f64 {
        d.as_secs_f64() * 1e3 / self.n.max(1) as f64
    }

    pub(super) fn copy_ms(&self) -> f64 {
        self.ms(self.wrap + self.unwrap)
    }
}

/// One raw pass over the versions.
#[derive(Default)]
pub(super) struct RawPass {
    pub(super) all: Acc,
    pub(super) by_type: Vec<(KeyType, Acc)>,
}

impl RawPass {
    pub(super) fn add(&mut self, key_type: KeyType, a: &Acc) {
        self.all.add(a);
        match self.by_type.iter_mut().find(|(t, _)| *t == key_type) {
            Some((_, acc)) => acc.add(a),
            None => self.by_type.push((key_type, *a)),
        }
    }

    pub(super) fn merged(&self, o: &RawPass) -> RawPass {
        let mut m = RawPass::default();
        for (t, a) in self.by_type.iter().chain(&o.by_type) {
            m.add(*t, a);
        }
        m
    }
}

pub(super) struct BackupTimes {
    /// Versions copied by the sync: the bench's keys plus whatever else had no copy (bench-ec,
    /// bench-kek, the audit key). The raw passes run over exactly these.
    pub(super) keys: usize,
    /// Engine `backup_sync`, wall time per copied version.
    pub(super) engine_ms: f64,
    /// Raw passes before the sync (backup token holds only the KEK) and after it (it holds the
    /// sync's copies): the sync itself runs while the token fills up.
    pub(super) before: RawPass,
    pub(super) after: RawPass,
    pub(super) ceremony_s: f64,
}

/// The backup row; `None` when the configuration has no `[backup]` token.
pub(super) fn backup_bench(
    config: &Config,
    officer: &Caller,
    per_type: usize,
) -> Res<Option<BackupTimes>> {
    let Some(backup) = config.backup.as_ref() else {
        eprintln!("bench: no [backup] in the configuration; backup row skipped");
        return Ok(None);
    };
    let engine = Engine::open(config.clone())?;
    // Made before the ceremony, so none has a copy yet.
    for i in 0..per_type {
        for (name, key_type, usage) in [
            (
                format!("bench-backup-ec-{i}"),
                KeyType::EcP384,
                "sign,verify",
            ),
            (
                format!("bench-backup-aes-{i}"),
                KeyType::Aes256,
                "encrypt,decrypt",
            ),
        ] {
            let mut k = CreateKey::new(
                name,
                key_type,
                "bench",
                Classification::Public,
                usage.parse()?,
            );
            k.purpose = "benchmark".into();
            engine.create_key(officer, k)?;
        }
    }
    let t = Instant::now();
    let pair = engine.backup_init(officer, &config.key_token, &backup.token, &|s| {
        eprintln!("bench: ceremony: {s}")
    })?;
    let ceremony_s = t.elapsed().as_secs_f64();

    // What the sync will copy: every active version on the primary (none has a copy yet).
    let versions: Vec<(KeyRecord, KeyVersion)> = engine
        .list_keys(officer, &Default::default())?
        .into_iter()
        .flat_map(|k| k.versions.clone().into_iter().map(move |v| (k.clone(), v)))
        .filter(|(_, v)| {
            v.state == VersionState::Active
                && v.token_serial == pair.from_serial
                && v.copies.is_empty()
        })
        .collect();

    let hsm = kms::hsm::open_for_benchmark(config);
    let src = hsm.token(&pair.from_token)?;
    let dst = hsm.token(&pair.to_token)?;
    let before = raw_pass(&versions, &pair.kek_id, &src, &dst)?;

    let t = Instant::now();
    let report = engine.backup_sync(officer)?;
    let sync = t.elapsed();
    if !report.failed.is_empty() {
        return Err(format!("backup sync failed for {:?}", report.failed).into());
    }
    let mut want: Vec<String> = versions
        .iter()
        .map(|(k, v)| format!("{}@v{}", k.name, v.version))
        .collect();
    let mut got = report.copied.clone();
    want.sort();
    got.sort();
    if want != got || got.is_empty() {
        return Err(format!("the sync copied {got:?}, the bench expected {want:?}").into());
    }

    let after = raw_pass(&versions, &pair.kek_id, &src, &dst)?;
    Ok(Some(BackupTimes {
        keys: versions.len(),
        engine_ms: sync.as_secs_f64() * 1e3 / versions.len() as f64,
        before,
        after,
        ceremony_s,
    }))
}

/// Raw `wrap_for_copy` on the primary + `unwrap_copy` on the backup of every version, under the
/// pairing's KEK and a fresh CKA_ID; then the drill on that copy (timed apart); then the copy is
/// destroyed (not timed).
fn raw_pass(
    versions: &[(KeyRecord, KeyVersion)],
    kek: &ObjectId,
    src: &Token,
    dst: &Token,
) -> Res<RawPass> {
    let mut pass = RawPass::default();
    for (key, v) in versions {
        let id = dst.new_object_id()?;
        let label = format!("bench:raw-copy:{}", key.name);
        let t = Instant::now();
        let wrapped = src.wrap_for_copy(kek, &v.object_id, key.key_type)?;
        let wrap = t.elapsed();
        let t = Instant::now();
        dst.unwrap_copy(kek, &id, key.key_type, &label, &key.usage, &wrapped)?;
        let unwrap = t.elapsed();
        let t = Instant::now();
        let drilled = raw_drill(key, v, src, dst, &id);
        let drill = t.elapsed();
        dst.destroy(&id)?;
        drilled?;
        pass.add(
            key.key_type,
            &Acc {
                n: 1,
                wrap,
                unwrap,
                drill,
            },
        );
    }
    Ok(pass)
}

/// The engine's restore drill, with the raw token calls: a signature made on the copy verified
/// in software with the original's public key; data encrypted on the original decrypted on the
/// copy; a data key wrapped on the original unwrapped on the copy.
fn raw_drill(
    key: &KeyRecord,
    v: &KeyVersion,
    src: &Token,
    dst: &Token,
    copy: &ObjectId,
) -> Res<()> {
    let challenge: [u8; 32] = rand::random();
    let ok = match key.key_type {
        KeyType::EcP384 | KeyType::Rsa3072 | KeyType::Rsa4096
            if key.usage.contains(Operation::Sign) =>
        {
            let spki = v
                .public_key
                .as_deref()
                .ok_or("no public key in the inventory")?;
            let sig = if key.key_type == KeyType::EcP384 {
                let digest: [u8; 48] = Sha384::digest(challenge).into();
                dst.sign_ecdsa_p384(copy, &digest)?
            } else {
                let digest: [u8; 32] = Sha256::digest(challenge).into();
                dst.sign_rsa_pss_sha256(copy, &digest)?
            };
            kms::softverify::verify(key.key_type, spki, &challenge, &sig)?
        }
        KeyType::Aes256
            if key.usage.contains(Operation::Encrypt) && key.usage.contains(Operation::Decrypt) =>
        {
            let iv: [u8; 12] = rand::random();
            let aad = b"kms backup drill";
            let ct = src.aes_gcm_encrypt(&v.object_id, &iv, aad, &challenge)?;
            dst.aes_gcm_decrypt(copy, &iv, aad, &ct)?.as_slice() == challenge
        }
        KeyType::Aes256
            if key.usage.contains(Operation::Wrap) && key.usage.contains(Operation::Unwrap) =>
        {
            let dk = src.generate_data_key(&v.object_id)?;
            dst.unwrap_data_key(copy, &dk.wrapped)?.as_slice() == dk.plaintext.as_slice()
        }
        _ => {
            return Err(format!(
                "the bench has no raw drill for {} keys with usage {}",
                key.key_type, key.usage
            )
            .into())
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!("raw drill of the raw copy of '{}' failed", key.name).into())
    }
}
