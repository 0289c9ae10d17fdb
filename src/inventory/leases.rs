//! Leases: work that only one node of several on one inventory may do at a time (the lifecycle
//! scheduler, restore drills, audit shipping, checkpoints) is done by the holder of a lease row
//! with an expiry, the way Vault's PostgreSQL HA lock works. The holder renews it well before it
//! expires; when the holder dies, the row expires and the next node to ask takes it.
//!
//! Expiry is compared on the database side of one immediate transaction, so two nodes asking at
//! once are serialised and exactly one of them holds the lease afterwards.

use super::sql::{params, OptionalExtension};
use serde::Serialize;
use time::OffsetDateTime;

use super::{fmt_time, Inventory, InventoryError};

/// What asking for a lease gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAnswer {
    /// This node holds it (it already did, or nobody did).
    Held,
    /// This node holds it now, taken over from `from` whose lease had expired.
    TakenOver { from: String },
    /// Another node holds it until `until` (unix seconds).
    HeldBy { holder: String, until: i64 },
}

/// A lease row as `kms node list` and health show it.
#[derive(Debug, Clone, Serialize)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub expires_at: i64,
    pub taken_at: String,
}

impl Inventory {
    /// Take or renew lease `name` for `holder` for `secs` seconds from `now`, unless another
    /// holder's lease is still running.
    pub fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: OffsetDateTime,
        secs: u64,
    ) -> Result<LeaseAnswer, InventoryError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        let current: Option<(String, i64)> = tx
            .query_row(
                "SELECT holder, expires_at FROM leases WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let now_s = now.unix_timestamp();
        let until = now_s.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX));
        let answer = match current {
            Some((h, exp)) if h != holder && exp > now_s => {
                return Ok(LeaseAnswer::HeldBy {
                    holder: h,
                    until: exp,
                })
            }
            Some((h, _)) if h == holder => {
                tx.execute(
                    "UPDATE leases SET expires_at = ?2 WHERE name = ?1",
                    params![name, until],
                )?;
                LeaseAnswer::Held
            }
            other => {
                tx.execute(
                    "INSERT INTO leases (name, holder, expires_at, taken_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (name) DO UPDATE SET holder = ?2, expires_at = ?3, taken_at = ?4",
                    params![name, holder, until, fmt_time(now)],
                )?;
                match other {
                    Some((from, _)) => LeaseAnswer::TakenOver { from },
                    None => LeaseAnswer::Held,
                }
            }
        };
        tx.commit()?;
        Ok(answer)
    }

    /// Give lease `name` up, if `holder` holds it (a node that stops cleanly).
    pub fn release_lease(&self, name: &str, holder: &str) -> Result<(), InventoryError> {
        self.conn().execute(
            "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
            params![name, holder],
        )?;
        Ok(())
    }

    /// Every lease row.
    pub fn leases(&self) -> Result<Vec<Lease>, InventoryError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, holder, expires_at, taken_at FROM leases ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(Lease {
                name: r.get(0)?,
                holder: r.get(1)?,
                expires_at: r.get(2)?,
                taken_at: r.get(3)?,
            })
        })?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_taken_over_after_expiry() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let inv = Inventory::open(&dir.path().join("inv.db"))?;
        let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000)?;
        let s = time::Duration::seconds;
        assert_eq!(inv.take_lease("jobs", "a", t0, 15)?, LeaseAnswer::Held);
        assert_eq!(
            inv.take_lease("jobs", "b", t0 + s(5), 15)?,
            LeaseAnswer::HeldBy {
                holder: "a".into(),
                until: t0.unix_timestamp() + 15
            }
        );
        // a renews; b still waits; a stops renewing and b takes over after expiry.
        assert_eq!(
            inv.take_lease("jobs", "a", t0 + s(10), 15)?,
            LeaseAnswer::Held
        );
        assert!(matches!(
            inv.take_lease("jobs", "b", t0 + s(20), 15)?,
            LeaseAnswer::HeldBy { .. }
        ));
        assert_eq!(
            inv.take_lease("jobs", "b", t0 + s(26), 15)?,
            LeaseAnswer::TakenOver { from: "a".into() }
        );
        assert!(matches!(
            inv.take_lease("jobs", "a", t0 + s(27), 15)?,
            LeaseAnswer::HeldBy { .. }
        ));
        // A clean stop gives it up at once.
        inv.release_lease("jobs", "b")?;
        assert_eq!(
            inv.take_lease("jobs", "a", t0 + s(28), 15)?,
            LeaseAnswer::Held
        );
        assert_eq!(inv.leases()?.len(), 1);
        Ok(())
    }
}
