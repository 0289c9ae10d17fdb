//! Time for lifecycle decisions (rotation due, re-encryption windows, usage periods, disposal
//! waiting periods), and failpoints for crash tests.
//!
//! With the `testing` feature (never in a release binary), `KMS_TEST_CLOCK_OFFSET=91d` moves the
//! lifecycle clock forward, so tests drive keys through months in seconds; grants, audit records
//! and TLS keep real time. `KMS_FAILPOINT=NAME` makes the process stop at the named step of a
//! procedure (it prints `kms: failpoint NAME reached` and waits to be killed), so tests can
//! SIGKILL it exactly there.

use time::OffsetDateTime;

/// Now, for lifecycle decisions.
pub fn lifecycle_now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    #[cfg(feature = "testing")]
    {
        if let Some(offset) = std::env::var("KMS_TEST_CLOCK_OFFSET")
            .ok()
            .and_then(|v| v.parse::<crate::duration::HumanDuration>().ok())
        {
            return now + offset.to_time();
        }
    }
    now
}

/// A named step of a procedure, where a crash test may stop the process.
pub fn failpoint(name: &str) {
    #[cfg(feature = "testing")]
    {
        if std::env::var("KMS_FAILPOINT").is_ok_and(|f| f == name) {
            // Tests wait for this line; a closed stderr must not panic the stop.
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!("kms: failpoint {name} reached\n"),
            );
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }
    #[cfg(not(feature = "testing"))]
    let _ = name;
}
