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
    let head = Arc::new(Head::new(HeadConfig::default()));
    let mut app = head.appender();
    let r = app
        .series("up", &[("job", "node"), ("instance", "a:1")])
        .unwrap();
    app.append(r, 1_000, 1.0);
    app.commit().unwrap();
    let engine = QueryEngine::new(head, Arc::new(NoTargets), &QueryConfig::default()).unwrap();
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
    (addr, task)
}

fn url(addr: SocketAddr) -> String {
    format!("grpc://{addr}")
}

#[tokio::test]
async fn statements_stream_results_with_wire_types() {
    let (addr, _server) = serve().await;
    let (schema, batches) = query_with_failover(&[url(addr)], None, "SELECT job, value FROM up")
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
    let err = query_with_failover(&[url(addr)], None, "DROP TABLE up")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    assert!(
        err.to_string().contains("DROP TABLE is not allowed"),
        "{err}"
    );
    let err = query_with_failover(&[url(addr)], None, "SELECT FROM WHERE")
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
    let (_, batches) = query_with_failover(&[url(dead), url(addr)], None, "SELECT 1 AS one")
        .await
        .unwrap();
    assert_eq!(batches[0].num_rows(), 1);
    let err = query_with_failover(&[url(dead)], None, "SELECT 1")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    // A query error from the first endpoint is final: the second is not asked.
    let err = query_with_failover(&[url(addr), url(dead)], None, "SELECT nope")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument));
    let err = FlightSqlClient::connect("http://x:1", None)
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
