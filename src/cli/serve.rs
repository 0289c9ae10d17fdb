//! `kms serve`: the mutual-TLS HTTPS service.

use std::sync::Arc;

use clap::Args;

use super::CliError;
use crate::engine::Engine;
use crate::server::Server;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen address, overriding [server] listen (e.g. 127.0.0.1:0 for any free port).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<std::net::SocketAddr>,
}

pub fn run(engine: Engine, args: ServeArgs) -> Result<(), CliError> {
    let mut config = engine.config().server.clone().ok_or_else(|| {
        CliError::Usage(format!(
            "{} has no [server] section; see hsm-config/kms.toml",
            engine.config().path.display()
        ))
    })?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    // Blocking threads carry the PKCS#11 and SQLite calls; sessions bound the real concurrency.
    let sessions: usize = engine.config().tokens.values().map(|t| t.sessions).sum();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads((sessions * 2).clamp(4, 256))
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        let server = Server::bind(Arc::new(engine), &config)
            .await
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let addr = server
            .local_addr()
            .map_err(|e| CliError::Usage(e.to_string()))?;
        // One line on stdout that scripts and tests read to find the port.
        println!("kms listening on https://{addr}");
        tracing::info!(%addr, "serving");
        server
            .run(crate::server::shutdown_signal())
            .await
            .map_err(|e| CliError::Usage(e.to_string()))
    })
}
