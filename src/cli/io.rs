//! Reading inputs and writing outputs for commands.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::CliError;

/// Read a whole file; `-` reads standard input.
pub fn read_input(path: &Path) -> Result<Vec<u8>, CliError> {
    let io = |source| CliError::Io {
        path: path.to_owned(),
        source,
    };
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map_err(io)?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(io)
}

/// Write to `path` (created 0600 when `private`), or to standard output when `None` or `-`.
/// The file is written beside its final name and renamed, so a failure leaves no partial output.
pub fn write_output(path: Option<&Path>, data: &[u8], private: bool) -> Result<(), CliError> {
    match path {
        None => write_stdout(data),
        Some(p) if p == Path::new("-") => write_stdout(data),
        Some(p) => {
            let io = |source| CliError::Io {
                path: p.to_owned(),
                source,
            };
            // A device, FIFO or socket (e.g. /dev/null, /dev/stdout) is written in place: renaming
            // a temporary file over it would replace the device node with a regular file.
            if let Ok(meta) = std::fs::metadata(p) {
                if !meta.is_file() {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(p)
                        .map_err(io)?;
                    return f.write_all(data).and_then(|()| f.flush()).map_err(io);
                }
            }
            let tmp = temp_name(p);
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            if private {
                opts.mode(0o600);
            }
            let result = (|| {
                let mut f = opts.open(&tmp)?;
                f.write_all(data)?;
                f.sync_all()?;
                std::fs::rename(&tmp, p)
            })();
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result.map_err(io)
        }
    }
}

fn write_stdout(data: &[u8]) -> Result<(), CliError> {
    super::output::write_stdout_bytes(data)
}

fn temp_name(p: &Path) -> PathBuf {
    let mut name = p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".kms-tmp-{}", std::process::id()));
    p.with_file_name(name)
}
