//! `kms serve`: parse its arguments, run the service (`src/service/`), say where it listens.

use clap::Args;

use super::CliError;
use crate::engine::Engine;
use crate::service::{self, ServiceError};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen address, overriding [server] listen (e.g. 127.0.0.1:0 for any free port).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<std::net::SocketAddr>,
}

pub fn run(engine: Engine, args: ServeArgs) -> Result<(), CliError> {
    service::serve(engine, args.listen, |at| {
        // One line on stdout that scripts and tests read to find the port (then the XKS one).
        outln!("kms listening on https://{}", at.api);
        if let Some(x) = at.xks {
            outln!("kms xks listening on https://{x}");
        }
        if let Some(k) = at.kmip {
            outln!("kms kmip listening on {k}");
        }
    })
    .map_err(|e| match e {
        ServiceError::Engine(e) => CliError::from(e),
        other => CliError::Usage(other.to_string()),
    })
}
