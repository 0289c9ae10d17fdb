//! `kms` under a reader that closes the pipe early (`| head -1`, `| grep -q`, under
//! `set -o pipefail`): the pipeline's status is the reader's decision, never kms's panic (101),
//! and nothing "panicked" reaches stderr. Each loop runs 200 times inside one bash process (the
//! debug `kms` takes 0.1-0.3 s of CPU per run, most of it checking integrity tags).

use common::*;
use kms_testkit as common;

use std::process::Command;

/// Run `script` in `bash -o pipefail` with `$KMS` the real binary for this environment
/// (as the test officer); `$ERR` collects kms's stderr. Returns (stdout, stderr of kms).
fn pipeline(env: &Env, script: &str) -> Res<(String, String)> {
    let kms = env.kms_as(OFFICER);
    let err = env.path("pipes.stderr");
    let mut argv = vec![kms.get_program().to_string_lossy().into_owned()];
    argv.extend(kms.get_args().map(|a| a.to_string_lossy().into_owned()));
    let mut bash = Command::new("bash");
    bash.arg("-o")
        .arg("pipefail")
        .arg("-c")
        .arg(format!("KMS=({}); {script}", shell_words(&argv)))
        .env("ERR", &err);
    for (k, v) in kms.get_envs() {
        match v {
            Some(v) => bash.env(k, v),
            None => bash.env_remove(k),
        };
    }
    let out = bash.output()?;
    assert!(
        out.status.success(),
        "the loop itself failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kms_err = std::fs::read_to_string(&err).unwrap_or_default();
    Ok((stdout(&out), kms_err))
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `runs` runs of `pipeline`; prints one line per run whose status is not in `allowed`.
fn looped(runs: u32, pipeline: &str, allowed: &str) -> String {
    format!(
        r#"for i in $(seq {runs}); do
  {pipeline}
  s=$?
  case " {allowed} " in *" $s "*) ;; *) echo "run $i: status $s";; esac
done"#
    )
}

fn assert_quiet(what: &str, bad_runs: &str, kms_err: &str) {
    assert!(
        bad_runs.trim().is_empty(),
        "{what}: statuses other than the reader's:\n{bad_runs}\nkms stderr:\n{kms_err}"
    );
    assert!(
        !kms_err.contains("panicked") && !kms_err.contains("Broken pipe"),
        "{what}: kms said on stderr:\n{kms_err}"
    );
}

#[test]
fn a_reader_closing_the_pipe_early_decides_the_status() -> TestResult {
    let env = Env::new()?;
    // A header and six rows (four keys, the audit and integrity keys): more than `head -1` reads.
    for i in 0..4 {
        env.create(&format!("pipe-key-{i}"), "aes-256", "encrypt,decrypt")?;
    }

    let (bad, err) = pipeline(
        &env,
        &looped(
            200,
            r#""${KMS[@]}" key list 2>>"$ERR" | head -1 >/dev/null"#,
            "0",
        ),
    )?;
    assert_quiet("kms key list | head -1", &bad, &err);

    // Every listing is itself recorded, so the trail grows to hundreds of rows in the loop.
    let (bad, err) = pipeline(
        &env,
        &looped(
            200,
            r#""${KMS[@]}" audit list 2>>"$ERR" | grep -q x"#,
            "0 1",
        ),
    )?;
    assert_quiet("kms audit list | grep -q x", &bad, &err);

    let (bad, err) = pipeline(
        &env,
        &looped(
            50,
            r#""${KMS[@]}" audit list --json 2>>"$ERR" | head -c 10 >/dev/null"#,
            "0",
        ),
    )?;
    assert_quiet("kms audit list --json | head -c 10", &bad, &err);

    // A closed stderr too: a command that fails (3, not found) writes its error to a reader
    // that may be gone; the status stays the command's.
    let (bad, err) = pipeline(
        &env,
        &looped(
            50,
            r#""${KMS[@]}" key show no-such-key 2>&1 >/dev/null | head -c 1 >/dev/null"#,
            "3",
        ),
    )?;
    assert_quiet("kms key show (fails) 2>&1 | head -c 1", &bad, &err);
    Ok(())
}

/// Output to a file that cannot take it is still an error (a full disk is not a closed reader).
#[test]
fn output_that_cannot_be_written_is_an_error() -> TestResult {
    let env = Env::new()?;
    let full = std::path::Path::new("/dev/full");
    if !full.exists() {
        return Ok(());
    }
    let out = env
        .kms_as(OFFICER)
        .args(["key", "list"])
        .stdout(std::fs::File::create(full)?)
        .output()?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("<stdout>") && !stderr(&out).contains("panicked"),
        "{}",
        stderr(&out)
    );
    Ok(())
}
