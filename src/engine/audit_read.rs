//! Reading the audit trail (`kms audit list`, `kms key history`, the service's reads): role
//! checked, and the reading itself audited.

use super::{Caller, Engine, EngineError};
use crate::model::{AuditFilter, AuditRow, Role};

impl Engine {
    /// Audit records matching `filter`. Reading the trail is itself audited.
    pub fn audit_records(
        &self,
        caller: &Caller,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditRow>, EngineError> {
        self.audited(caller, "audit.read", filter.key_name.as_deref(), |_| {
            super::policy::require_role(
                &self.inventory,
                caller,
                &[Role::Auditor, Role::SecurityOfficer],
                "read the audit trail",
            )?;
            Ok(self.inventory.audit_rows_filtered(filter)?)
        })
    }

    /// Every record about one key: who used it, when, why, from where (`kms key history`).
    /// Inventory readers may see it, as well as the auditor.
    pub fn key_history(
        &self,
        caller: &Caller,
        key: &str,
        limit: u32,
    ) -> Result<Vec<AuditRow>, EngineError> {
        self.audited(caller, "key.history", Some(key), |_| {
            super::policy::require_role(
                &self.inventory,
                caller,
                super::policy::INVENTORY_READERS,
                "read a key's history",
            )?;
            Ok(self.inventory.audit_rows_filtered(&AuditFilter {
                key_name: Some(key.to_owned()),
                limit,
                ..Default::default()
            })?)
        })
    }

    /// Audit rows, newest `limit`, optionally for one key. Reading the trail is itself audited.
    pub fn audit_log(
        &self,
        caller: &Caller,
        key_name: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, EngineError> {
        self.audited(caller, "audit.read", key_name, |_| {
            super::policy::require_role(
                &self.inventory,
                caller,
                &[Role::Auditor, Role::SecurityOfficer],
                "read the audit trail",
            )?;
            Ok(self.inventory.audit_rows(key_name, limit)?)
        })
    }
}
