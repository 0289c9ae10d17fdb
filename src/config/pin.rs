//! Where a PIN or other secret comes from: `env:VAR`, `file:PATH` (mode 0600) or `prompt`.
//! The config holds only the source; the value is read when a token is opened.

use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use secrecy::SecretString;

use super::ConfigError;

/// Where a PIN comes from. Holds no secret itself, so `Debug` is safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    Env(String),
    File(PathBuf),
    Prompt,
}

impl PinSource {
    /// Parse `env:VAR`, `file:PATH` or `prompt` (relative paths stay relative to the working
    /// directory). A literal PIN is refused: `None`.
    pub fn parse(s: &str) -> Option<PinSource> {
        parse_pin_source(s, &|p: &Path| p.to_owned())
    }

    /// Resolve the user PIN. The value is returned as a `SecretString`: zeroized on drop, masked in `Debug`.
    pub fn resolve(&self, token: &str) -> Result<SecretString, ConfigError> {
        self.resolve_kind(token, "User")
    }

    /// Resolve a PIN of kind `kind` ("User", "SO"); the kind is what a prompt asks for.
    pub fn resolve_kind(&self, token: &str, kind: &str) -> Result<SecretString, ConfigError> {
        let pin = match self {
            PinSource::Env(var) => std::env::var(var).map_err(|_| ConfigError::PinEnvMissing {
                token: token.to_owned(),
                var: var.clone(),
            })?,
            PinSource::File(path) => read_pin_file(token, path)?,
            PinSource::Prompt => {
                if !std::io::stdin().is_terminal() {
                    return Err(ConfigError::PinPromptNoTerminal {
                        token: token.to_owned(),
                    });
                }
                rpassword::prompt_password(format!("{kind} PIN for token '{token}': ")).map_err(
                    |source| ConfigError::PinPrompt {
                        token: token.to_owned(),
                        source,
                    },
                )?
            }
        };
        let pin = zeroize::Zeroizing::new(pin);
        let trimmed = pin.trim_end_matches(['\n', '\r']);
        if trimmed.is_empty() {
            return Err(ConfigError::PinEmpty {
                token: token.to_owned(),
            });
        }
        Ok(SecretString::from(trimmed.to_owned()))
    }
}

fn read_pin_file(token: &str, path: &Path) -> Result<String, ConfigError> {
    let read_err = |source| ConfigError::PinFileRead {
        token: token.to_owned(),
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::PinFileMode {
            token: token.to_owned(),
            path: path.to_owned(),
            mode,
        });
    }
    std::fs::read_to_string(path).map_err(read_err)
}

/// `env:VAR`, `file:PATH` (through `resolve`) or `prompt`; anything else (a literal) is `None`.
pub(super) fn parse_pin_source(s: &str, resolve: &dyn Fn(&Path) -> PathBuf) -> Option<PinSource> {
    if let Some(var) = s.strip_prefix("env:") {
        (!var.is_empty()).then(|| PinSource::Env(var.to_owned()))
    } else if let Some(p) = s.strip_prefix("file:") {
        (!p.is_empty()).then(|| PinSource::File(resolve(Path::new(p))))
    } else if s == "prompt" {
        Some(PinSource::Prompt)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_file_must_be_private() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("pin");
        std::fs::write(&p, "1234\n")?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
        let src = PinSource::File(p.clone());
        assert!(matches!(
            src.resolve("t"),
            Err(ConfigError::PinFileMode { .. })
        ));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        let pin = src.resolve("t")?;
        assert_eq!(secrecy::ExposeSecret::expose_secret(&pin), "1234");
        Ok(())
    }
}
