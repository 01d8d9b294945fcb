//! The Flight SQL service: how clients (the `arrowhead query` CLI, ADBC, JDBC, Grafana) run SQL.
//!
//! ```text
//! GetFlightInfo(CommandStatementQuery{sql}) ─plan─► FlightInfo{schema, ticket = TicketStatementQuery{sql}}
//! DoGet(ticket) ─plan + execute─► stream of FlightData (Arrow IPC batches, wire types)
//!
//! DoAction(CreatePreparedStatement{sql}) ─plan─► {handle = sql, dataset_schema}
//! GetFlightInfo(CommandPreparedStatementQuery{handle}) ─► FlightInfo{ticket = the command}
//! DoGet(ticket) ─plan + execute─► stream           DoAction(ClosePreparedStatement) ─► ok
//! ```
//!
//! Handles are stateless: a statement or prepared-statement handle is the SQL text itself, so
//! the server keeps nothing per client, a handle works on either replica of a pair, and a
//! restart loses nothing. The price is planning twice (once for the schema, once to run),
//! which costs far less than executing. Every execution re-checks read-only rules, so a forged
//! handle gains nothing.
//!
//! Errors map once, here, from [`QueryError`] classes to gRPC codes: read-only violations are
//! `PermissionDenied`, bad SQL `InvalidArgument`, limits `ResourceExhausted`, faults `Internal`.

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetSqlInfo, CommandPreparedStatementQuery,
    CommandStatementQuery, ProstMessageExt, SqlInfo, SqlSupportedCaseSensitivity,
    SqlSupportedTransaction, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc,
    Ticket,
};
use futures::{Stream, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status};
use tracing::debug;

use crate::engine::{QueryEngine, QueryError};

type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// The Flight SQL service over a [`QueryEngine`].
#[derive(Clone)]
pub struct FlightSqlServer {
    engine: QueryEngine,
    /// Answers to GetSqlInfo, built once.
    sql_info: Arc<SqlInfoData>,
}

impl std::fmt::Debug for FlightSqlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightSqlServer")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl FlightSqlServer {
    /// A service running queries on `engine`.
    pub fn new(engine: QueryEngine) -> Self {
        Self {
            engine,
            sql_info: Arc::new(sql_info()),
        }
    }

    /// The tonic service to mount on a server.
    pub fn into_service(self) -> FlightServiceServer<Self> {
        FlightServiceServer::new(self)
    }

    async fn flight_info(
        &self,
        sql: &str,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let planned = self.engine.plan(sql).await.map_err(status)?;
        flight_info(&planned.schema(), ticket, descriptor)
    }

    async fn run(&self, sql: &str) -> Result<Response<DoGetStream>, Status> {
        let planned = self.engine.plan(sql).await.map_err(status)?;
        let schema = planned.schema();
        let batches = planned
            .execute()
            .await
            .map_err(status)?
            .map_err(|e| FlightError::Tonic(Box::new(status(QueryError::from(e)))));
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The gRPC status for a query error.
pub fn status(e: QueryError) -> Status {
    debug!(error = %e, "query failed");
    match e {
        QueryError::PermissionDenied(m) => Status::permission_denied(m),
        QueryError::InvalidArgument(m) => Status::invalid_argument(m),
        QueryError::ResourceExhausted(m) => Status::resource_exhausted(m),
        QueryError::Internal(m) => Status::internal(m),
    }
}

/// A FlightInfo with one endpoint whose ticket is `ticket`.
fn flight_info(
    schema: &arrow::datatypes::Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("cannot encode schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor)
        .with_ordered(true);
    Ok(Response::new(info))
}

fn handle_to_sql(handle: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(handle)
        .map_err(|_| Status::invalid_argument("statement handle is not valid UTF-8 SQL"))
}

fn sql_info() -> SqlInfoData {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Arrowhead");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    // The Arrow IPC format version (Schema.fbs MetadataVersion V5 → "1.3").
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    // Identifiers are case-sensitive and kept as written, quoted or not. Flight SQL has no
    // value for "sensitive, preserved" (only insensitive, upper, lower): say unknown rather
    // than promise folding that does not happen.
    let case = SqlSupportedCaseSensitivity::SqlCaseSensitivityUnknown as i32;
    b.append(SqlInfo::SqlIdentifierCase, case);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlQuotedIdentifierCase, case);
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.build().expect("static SqlInfo values are valid")
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlServer {
    type FlightService = Self;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = TicketStatementQuery {
            statement_handle: query.query.clone().into_bytes().into(),
        };
        self.flight_info(
            &query.query,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
        .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let sql = handle_to_sql(&ticket.statement_handle)?;
        self.run(sql).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let planned = self.engine.plan(&query.query).await.map_err(status)?;
        let IpcMessage(dataset_schema) = SchemaAsIpc::new(&planned.schema(), &Default::default())
            .try_into()
            .map_err(|e| Status::internal(format!("cannot encode schema: {e}")))?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into_bytes().into(),
            dataset_schema,
            parameter_schema: Default::default(),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let sql = handle_to_sql(&cmd.prepared_statement_handle)?.to_string();
        self.flight_info(&sql, cmd.as_any().encode_to_vec(), request.into_inner())
            .await
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let sql = handle_to_sql(&cmd.prepared_statement_handle)?;
        self.run(sql).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        // Handles hold no server state.
        Ok(())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let builder = query.into_builder(&self.sql_info);
        let schema = builder.schema();
        let batch = builder.build();
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async { batch }))
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(Status::unimplemented(format!(
            "unsupported ticket type {}",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests;
