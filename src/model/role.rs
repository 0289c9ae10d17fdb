//! Roles of principals.

domain_enum! {
    /// Roles of principals (A9). Applications authenticate with a client certificate; humans
    /// (officers, admins, managers, auditors, users) will approve with a hardware-held key.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Role as "role" {
        SecurityOfficer = "security-officer",
        SecurityAdmin = "security-admin",
        Manager = "manager",
        Auditor = "auditor",
        Application = "application",
        User = "user",
    }
}
