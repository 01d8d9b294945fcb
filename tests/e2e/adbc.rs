//! A standard Flight SQL client, unmodified: Python's ADBC driver (which sends every query as
//! a prepared statement): queries, parameterised queries, and the metadata calls behind
//! `adbc_get_objects`, `adbc_get_table_schema`, `adbc_get_table_types` and `adbc_get_info`.

use crate::support::{Replica, run_python};

#[tokio::test]
async fn adbc_runs_queries_with_parameters_and_lists_objects() {
    let replica = Replica::start(None).await;
    // Make sure `up` exists before the client asks for it.
    replica
        .wait_for_count(
            "SELECT count(*) FROM up",
            1,
            std::time::Duration::from_secs(20),
        )
        .await;
    let stdout = run_python("adbc_client.py", &[&replica.url()], &replica.log());
    assert!(stdout.contains("ok"), "{stdout}");
}
