//! What `kms serve` reports; the CLI maps it to an exit code.

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{} has no [server] section; see hsm-config/kms.toml", .0.display())]
    NoServer(std::path::PathBuf),
    /// The runtime, a listener or a background thread could not start (or a listener stopped).
    #[error("{0}")]
    Start(String),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}
