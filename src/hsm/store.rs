//! Diagnosing a token that vanished: SoftHSM2's file store rewrites `<tokendir>/<uuid>/token.object`
//! at every login, and a process killed during that write can leave it empty. The module then
//! no longer shows the token at all, so "no token with label …" is all PKCS#11 can say. Here the
//! module's own configuration is read to name the damaged file.

use std::path::{Path, PathBuf};

/// One token directory whose `token.object` cannot be used.
#[derive(Debug, Clone)]
pub struct DamagedTokenFile {
    pub dir: PathBuf,
    pub file: PathBuf,
    pub problem: String,
}

/// Whether `module` is SoftHSM2 (the only module whose file store is read here).
fn is_softhsm(module: &Path) -> bool {
    module
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.to_ascii_lowercase().contains("softhsm"))
}

/// The SoftHSM2 config file in force: `SOFTHSM2_CONF` (set from kms.toml's `[environment]`), or
/// the packaged default.
fn softhsm_conf() -> PathBuf {
    std::env::var_os("SOFTHSM2_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/softhsm/softhsm2.conf"))
}

/// `directories.tokendir` from a SoftHSM2 config text.
fn tokendir(conf: &str) -> Option<PathBuf> {
    conf.lines().find_map(|line| {
        let line = line.trim();
        if line.starts_with('#') {
            return None;
        }
        let (k, v) = line.split_once('=')?;
        (k.trim() == "directories.tokendir").then(|| PathBuf::from(v.trim()))
    })
}

/// Token directories under the module's token store whose `token.object` is missing, empty or
/// unreadable. Empty when the module is not SoftHSM2 or its store cannot be found.
pub fn damaged_token_files(module: &Path) -> (Option<PathBuf>, Vec<DamagedTokenFile>) {
    if !is_softhsm(module) {
        return (None, Vec::new());
    }
    let conf = softhsm_conf();
    let Some(dir) = std::fs::read_to_string(&conf)
        .ok()
        .and_then(|text| tokendir(&text))
    else {
        return (Some(conf), Vec::new());
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return (Some(conf), Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let file = path.join("token.object");
        let problem = match std::fs::metadata(&file) {
            Err(e) => Some(format!("cannot be read ({e})")),
            Ok(m) if m.len() == 0 => Some("is empty (0 bytes)".to_owned()),
            Ok(_) => std::fs::File::open(&file)
                .err()
                .map(|e| format!("cannot be read ({e})")),
        };
        if let Some(problem) = problem {
            out.push(DamagedTokenFile {
                dir: path,
                file,
                problem,
            });
        }
    }
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    (Some(conf), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_token_directory() {
        let conf = "# c\n# directories.tokendir = /no\ndirectories.tokendir = /var/lib/softhsm/tokens/ \nlog.level = ERROR\n";
        assert_eq!(
            tokendir(conf),
            Some(PathBuf::from("/var/lib/softhsm/tokens/"))
        );
        assert_eq!(tokendir("log.level = INFO"), None);
    }

    #[test]
    fn only_softhsm_is_inspected() {
        assert!(is_softhsm(Path::new("/usr/lib/softhsm/libsofthsm2.so")));
        assert!(!is_softhsm(Path::new("/usr/lib/opensc-pkcs11.so")));
    }
}
