//! A standard Flight SQL client, unmodified: Python's ADBC driver (which sends every query as
//! a prepared statement).

use std::process::Command;

use crate::support::{Replica, python};

#[tokio::test]
async fn adbc_runs_select_1_and_a_metric_query() {
    let replica = Replica::start(None).await;
    // Make sure `up` exists before the client asks for it.
    replica
        .wait_for_count(
            "SELECT count(*) FROM up",
            1,
            std::time::Duration::from_secs(20),
        )
        .await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/adbc_client.py");
    let py = python();
    let out = Command::new(&py)
        .arg(script)
        .arg(replica.url())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ADBC client failed (python: {}; .ci/run installs adbc-driver-flightsql and pyarrow \
         into $HOME/.cache/arrowhead-venv):\nstdout:\n{stdout}\nstderr:\n{stderr}\nreplica:\n{}",
        py.display(),
        replica.log()
    );
    assert!(stdout.contains("ok"), "{stdout}");
}
