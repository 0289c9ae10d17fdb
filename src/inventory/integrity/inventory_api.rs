//! The inventory's integrity methods: installing the tag maker/checker, one tagged update,
//! tagging the rows of an older inventory, and checking every row.

use std::sync::Arc;

use super::check::{check_one, check_where, select};
use super::tag::{guarded, tag_where};
use super::{BadRow, RowIntegrity, Table};
use crate::inventory::sql::ToValue;
use crate::inventory::{Inventory, InventoryError};

impl Inventory {
    /// One UPDATE (`sql`, whose `?1` is `id`) of the `table` row `id = ?1`, checked before and
    /// tagged after, in a transaction of its own; returns how many rows changed.
    pub(crate) fn update_tagged_row(
        &self,
        table: Table,
        id: &str,
        sql: &str,
        params: &[&dyn ToValue],
    ) -> Result<usize, InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx =
            conn.transaction_with_behavior(crate::inventory::sql::TransactionBehavior::Immediate)?;
        let n = guarded(&tx, integrity.as_ref(), table, "id = ?1", &[&id], |tx| {
            Ok(tx.execute(sql, params)?)
        })?;
        tx.commit()?;
        Ok(n)
    }

    /// Install the tag maker/checker (the engine does this once the HSM key is known).
    pub fn set_integrity(&self, integrity: Arc<dyn RowIntegrity>) {
        *self.integrity.write().unwrap_or_else(|p| p.into_inner()) = Some(integrity);
    }

    /// Remove the installed checker (before the inventory's content is replaced by another's,
    /// whose rows carry that inventory's tags).
    pub fn clear_integrity(&self) {
        *self.integrity.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(crate) fn integrity(&self) -> Option<Arc<dyn RowIntegrity>> {
        self.integrity
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether any of `tables` holds a row without a tag (a partial index answers it).
    pub fn any_untagged(&self, tables: &[Table]) -> Result<bool, InventoryError> {
        let conn = self.conn();
        for &t in tables {
            let found: bool = conn.query_row(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM {} WHERE integrity_tag IS NULL)",
                    t.name()
                ),
                [],
                |r| r.get(0),
            )?;
            if found {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Tag every row that has no tag yet, in one transaction, with `audit` as its record (the
    /// one-time migration of an inventory made before rows carried tags).
    pub fn tag_untagged(
        &self,
        tables: &[Table],
        audit: &crate::inventory::AuditEntry,
    ) -> Result<usize, InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut n = 0;
        for &t in tables {
            n += tag_where(&tx, integrity.as_ref(), t, "integrity_tag IS NULL", &[])?;
        }
        crate::inventory::audit::insert(&tx, audit)?;
        tx.commit()?;
        Ok(n)
    }

    /// Check every tagged row; the bad ones, named.
    pub fn verify_rows(&self) -> Result<(usize, Vec<BadRow>), InventoryError> {
        let Some(integrity) = self.integrity() else {
            return Err(InventoryError::Integrity(
                "the inventory's integrity key is not set up".into(),
            ));
        };
        let conn = self.conn();
        let mut checked = 0;
        let mut bad = Vec::new();
        for t in Table::ALL {
            for row in select(&conn, t, "1 = 1", &[])? {
                checked += 1;
                match check_one(&conn, integrity.as_ref(), t, &row) {
                    Ok(()) => {}
                    Err(InventoryError::Tampered(b)) => bad.push(b),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok((checked, bad))
    }

    /// Check one grant row (used before a grant authorizes anything).
    pub fn check_grant_row(&self, id: &str) -> Result<(), InventoryError> {
        let integrity = self.integrity();
        check_where(
            &self.conn(),
            integrity.as_ref(),
            Table::Grants,
            "id = ?1",
            &[&id],
        )
    }

    /// Re-tag every row as it reads now, whatever its tag (`testing` builds only: integration
    /// tests that simulate the passing of time by editing rows re-seal them this way).
    #[cfg(feature = "testing")]
    pub fn retag_all_for_tests(&self) -> Result<usize, InventoryError> {
        let integrity = self.integrity();
        let conn = self.conn();
        let mut n = 0;
        for t in Table::ALL {
            n += tag_where(&conn, integrity.as_ref(), t, "1 = 1", &[])?;
        }
        Ok(n)
    }
}
