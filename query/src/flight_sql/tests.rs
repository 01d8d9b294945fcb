use std::net::SocketAddr;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use storage::{Appender, Head, HeadConfig};
use tokio_util::task::AbortOnDropHandle;

use super::*;
use crate::client::{ClientError, FlightSqlClient, query_with_failover};
use crate::engine::QueryConfig;
use crate::system::NoTargets;

async fn serve() -> (SocketAddr, AbortOnDropHandle<()>) {
    let (addr, server, _) = serve_engine().await;
    (addr, server)
}

/// A server over a head with one `up` sample, and its engine (for the counters).
async fn serve_engine() -> (SocketAddr, AbortOnDropHandle<()>, QueryEngine) {
    let head = Arc::new(Head::new(HeadConfig::default()));
    let mut app = head.appender();
    let r = app
        .series("up", &[("job", "node"), ("instance", "a:1")])
        .unwrap();
    app.append(r, 1_000, 1.0);
    app.commit().unwrap();
    let engine = QueryEngine::new(head, Arc::new(NoTargets), &QueryConfig::default()).unwrap();
    let counters = engine.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = FlightSqlServer::new(engine).into_service();
    #[allow(clippy::disallowed_methods)]
    let task = AbortOnDropHandle::new(tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    }));
    (addr, task, counters)
}

fn url(addr: SocketAddr) -> String {
    format!("grpc://{addr}")
}

#[tokio::test]
async fn statements_stream_results_with_wire_types() {
    let (addr, _server) = serve().await;
    let (schema, batches) =
        query_with_failover(&[url(addr)], None, None, "SELECT job, value FROM up")
            .await
            .unwrap();
    assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
    let b = &batches[0];
    assert_eq!(b.column(0).as_string::<i32>().value(0), "node");
    assert_eq!(b.column(1).as_primitive::<Float64Type>().value(0), 1.0);
}

#[tokio::test]
async fn errors_carry_grpc_codes() {
    let (addr, _server) = serve().await;
    let err = query_with_failover(&[url(addr)], None, None, "DROP TABLE up")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    assert!(
        err.to_string().contains("DROP TABLE is not allowed"),
        "{err}"
    );
    let err = query_with_failover(&[url(addr)], None, None, "SELECT FROM WHERE")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{err}");
}

#[tokio::test]
async fn failover_skips_dead_endpoints_but_not_query_errors() {
    let (addr, _server) = serve().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (_, batches) = query_with_failover(&[url(dead), url(addr)], None, None, "SELECT 1 AS one")
        .await
        .unwrap();
    assert_eq!(batches[0].num_rows(), 1);
    let err = query_with_failover(&[url(dead)], None, None, "SELECT 1")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    // A query error from the first endpoint is final: the second is not asked.
    let err = query_with_failover(&[url(addr), url(dead)], None, None, "SELECT nope")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument));
    let err = FlightSqlClient::connect("http://x:1", None, None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("expected grpc://host:port"),
        "{err}"
    );
}

/// Reads the first endpoint of a FlightInfo.
async fn fetch(
    client: &mut FlightSqlServiceClient<tonic::transport::Channel>,
    info: arrow_flight::FlightInfo,
) -> Vec<RecordBatch> {
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    client
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test]
async fn prepared_statements_and_sql_info_work_with_the_reference_client() {
    let (addr, _server) = serve().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    let mut prepared = client
        .prepare("SELECT instance, value FROM up".into(), None)
        .await
        .unwrap();
    assert_eq!(
        prepared.dataset_schema().unwrap().field(0).name(),
        "instance"
    );
    let info = prepared.execute().await.unwrap();
    let batches = fetch(&mut client, info).await;
    assert_eq!(batches[0].column(0).as_string::<i32>().value(0), "a:1");
    prepared.close().await.unwrap();

    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .unwrap();
    let batches = fetch(&mut client, info).await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);

    let err = client
        .prepare("INSERT INTO up VALUES (1)".into(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("INSERT is not allowed"), "{err}");
}

async fn reference_client(addr: SocketAddr) -> FlightSqlServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightSqlServiceClient::new(channel)
}

fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(column).unwrap().as_string::<i32>();
            c.iter()
                .map(|v| v.unwrap_or("").to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn metadata_commands_list_catalogs_schemas_tables_and_types() {
    let (addr, _server) = serve().await;
    let mut client = reference_client(addr).await;

    let info = client.get_catalogs().await.unwrap();
    assert_eq!(
        strings(&fetch(&mut client, info).await, "catalog_name"),
        ["arrowhead"]
    );

    let info = client
        .get_db_schemas(arrow_flight::sql::CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    assert_eq!(
        strings(&fetch(&mut client, info).await, "db_schema_name"),
        ["public", "system"]
    );

    // Tables with their schemas; a name pattern narrows them.
    let info = client
        .get_tables(arrow_flight::sql::CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("public".into()),
            table_name_filter_pattern: Some("u_".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let batches = fetch(&mut client, info).await;
    assert_eq!(strings(&batches, "table_name"), ["up"]);
    assert_eq!(strings(&batches, "table_type"), ["TABLE"]);
    let ipc = batches[0]
        .column_by_name("table_schema")
        .unwrap()
        .as_binary::<i32>()
        .value(0);
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(ipc).unwrap();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["instance", "job", "timestamp", "value"]);
    assert_eq!(schema.field(0).data_type(), &DataType::Utf8);

    let info = client
        .get_tables(arrow_flight::sql::CommandGetTables {
            catalog: Some("arrowhead".into()),
            db_schema_filter_pattern: None,
            table_name_filter_pattern: None,
            table_types: vec!["SYSTEM TABLE".into()],
            include_schema: false,
        })
        .await
        .unwrap();
    let system = strings(&fetch(&mut client, info).await, "table_name");
    assert!(system.contains(&"targets".to_string()) && !system.contains(&"up".to_string()));

    let info = client.get_table_types().await.unwrap();
    assert_eq!(
        strings(&fetch(&mut client, info).await, "table_type"),
        ["SYSTEM TABLE", "TABLE"]
    );

    let info = client
        .get_primary_keys(arrow_flight::sql::CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "up".into(),
        })
        .await
        .unwrap();
    let batches = fetch(&mut client, info).await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);

    let info = client
        .get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let types = strings(&fetch(&mut client, info).await, "type_name");
    assert!(types.contains(&"VARCHAR".to_string()) && types.contains(&"DOUBLE".to_string()));
}

#[tokio::test]
async fn prepared_statements_bind_parameters_statelessly() {
    let (addr, _server) = serve().await;
    let mut client = reference_client(addr).await;
    let mut prepared = client
        .prepare("SELECT instance, value FROM up WHERE job = ?".into(), None)
        .await
        .unwrap();
    let params = prepared.parameter_schema().unwrap().clone();
    assert_eq!(params.fields().len(), 1);
    assert_eq!(params.field(0).data_type(), &DataType::Utf8);

    let bind = |job: &str| {
        RecordBatch::try_new(
            Arc::new(params.clone()),
            vec![Arc::new(arrow::array::StringArray::from(vec![job]))],
        )
        .unwrap()
    };
    prepared.set_parameters(bind("node")).unwrap();
    let info = prepared.execute().await.unwrap();
    let batches = fetch(&mut client, info).await;
    assert_eq!(strings(&batches, "instance"), ["a:1"]);

    prepared.set_parameters(bind("other")).unwrap();
    let info = prepared.execute().await.unwrap();
    let batches = fetch(&mut client, info).await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    prepared.close().await.unwrap();

    // Two rows of parameters, or a value that does not fit, fail at bind time.
    let mut prepared = client
        .prepare("SELECT value FROM up WHERE value > $1".into(), None)
        .await
        .unwrap();
    let two = RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("$1", DataType::Float64, true),
        ])),
        vec![Arc::new(arrow::array::Float64Array::from(vec![0.0, 1.0]))],
    )
    .unwrap();
    prepared.set_parameters(two).unwrap();
    let err = prepared.execute().await.unwrap_err();
    assert!(err.to_string().contains("exactly one row"), "{err}");

    // A forged bound handle is refused, not trusted.
    for handle in [&b"\0\xff\xff\xff\xffSELECT"[..], &b"\0\x03\0\0\0SEL"[..]] {
        let err = decode_handle(handle).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}

#[test]
fn bearer_tokens_are_checked_exactly() {
    let auth = BearerAuth::new(Some("tok-123"));
    assert!(auth.check(Some(b"Bearer tok-123")));
    assert!(auth.check(Some(b"bearer tok-123")));
    for wrong in [
        &b"Bearer tok-12"[..],
        b"Bearer tok-1234",
        b"Bearer TOK-123",
        b"Basic tok-123",
        b"tok-123",
        b"Bearer ",
        b"",
    ] {
        assert!(
            !auth.check(Some(wrong)),
            "{}",
            String::from_utf8_lossy(wrong)
        );
    }
    assert!(!auth.check(None));
    assert!(BearerAuth::new(None).check(None));
    assert!(!format!("{auth:?}").contains("tok-123"));
}

#[tokio::test]
async fn a_server_with_a_token_refuses_calls_without_it() {
    let head = Arc::new(Head::new(HeadConfig::default()));
    let engine = QueryEngine::new(head, Arc::new(NoTargets), &QueryConfig::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = FlightSqlServer::new(engine).into_service_with_auth(BearerAuth::new(Some("t0k")));
    #[allow(clippy::disallowed_methods)]
    let _server = AbortOnDropHandle::new(tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    }));
    let err = query_with_failover(&[url(addr)], None, None, "SELECT 1")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unauthenticated), "{err}");
    let err = query_with_failover(&[url(addr)], Some("t0"), None, "SELECT 1")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unauthenticated), "{err}");
    let (_, batches) = query_with_failover(&[url(addr)], Some("t0k"), None, "SELECT 1 AS one")
        .await
        .unwrap();
    assert_eq!(batches[0].num_rows(), 1);
    // The reference client's handshake goes through with the token too.
    let mut client = reference_client(addr).await;
    client.set_token("t0k".into());
    let info = client.get_catalogs().await.unwrap();
    assert_eq!(
        strings(&fetch(&mut client, info).await, "catalog_name"),
        ["arrowhead"]
    );
}

#[tokio::test]
async fn a_statement_is_planned_once_for_its_schema_and_its_run() {
    let (addr, _server, engine) = serve_engine().await;
    let reused = || engine.metrics().reused_plans.get();
    let mut client = reference_client(addr).await;
    let sql = "SELECT instance, value FROM up";

    let info = client.execute(sql.into(), None).await.unwrap();
    assert_eq!(
        strings(&fetch(&mut client, info.clone()).await, "instance"),
        ["a:1"]
    );
    assert_eq!(reused(), 1);
    // The ticket stays valid: running it again plans it again.
    assert_eq!(
        strings(&fetch(&mut client, info).await, "instance"),
        ["a:1"]
    );
    assert_eq!(reused(), 1);

    // A prepared statement (as ADBC runs every query): the plan made when it was created
    // serves its FlightInfo, and that one its DoGet.
    let mut prepared = client.prepare(sql.into(), None).await.unwrap();
    let info = prepared.execute().await.unwrap();
    assert_eq!(
        strings(&fetch(&mut client, info).await, "instance"),
        ["a:1"]
    );
    prepared.close().await.unwrap();
    assert_eq!(reused(), 3);
}
