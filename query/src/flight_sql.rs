//! The Flight SQL service: how clients (the `arrowhead query` CLI, ADBC, JDBC, Grafana) run SQL.
//!
//! ```text
//! GetFlightInfo(CommandStatementQuery{sql}) ─plan, start─► FlightInfo{schema, ticket = TicketStatementQuery{sql}}
//! DoGet(ticket) ─started query (or plan + execute)─► stream of FlightData (Arrow IPC batches, wire types)
//!
//! DoAction(CreatePreparedStatement{sql}) ─plan, keep─► {handle = sql, dataset_schema}
//! GetFlightInfo(CommandPreparedStatementQuery{handle}) ─kept plan, start─► FlightInfo{ticket = the command}
//! DoGet(ticket) ─started query─► stream      DoAction(ClosePreparedStatement) ─► ok
//! ```
//!
//! Handles are stateless: a statement or prepared-statement handle is the SQL text itself, so
//! the server keeps nothing per client, a handle works on either replica of a pair, and a
//! restart loses nothing. The plan made for the schema is kept a few seconds for the call that
//! runs it, and a `GetFlightInfo` starts the query for the `DoGet` that follows when a slot is
//! free ([`crate::kept_plans`]), so a statement is planned once when both calls reach the
//! same replica, and anew otherwise. Every plan re-checks read-only rules, so a forged handle
//! gains nothing.
//!
//! Parameters (`$1`, `$2`, … or `?`): `CreatePreparedStatement` answers the parameter schema
//! the planner inferred; `DoPut(CommandPreparedStatementQuery)` with one row of values
//! answers a *new* handle (Flight SQL's `DoPutPreparedStatementResult`) that carries the SQL
//! and the values (`0x00`, SQL length as u32 LE, SQL, the row as an Arrow IPC stream), so
//! binding stays stateless too. Plain handles never start with a NUL byte.
//!
//! Metadata: `GetSqlInfo`, `GetCatalogs`, `GetDbSchemas`, `GetTables` (with `include_schema`),
//! `GetTableTypes` (`TABLE` for metrics, `SYSTEM TABLE` for `system.*`), `GetPrimaryKeys`
//! (always empty: tables have no keys) and `GetXdbcTypeInfo` (the types results use), with
//! Flight SQL's filter patterns applied by arrow-flight's builders. `Handshake` succeeds
//! without credentials: authentication is the bearer token on every call ([`BearerAuth`]).
//!
//! Errors map once, here, from [`QueryError`] classes to gRPC codes: read-only violations are
//! `PermissionDenied`, bad SQL `InvalidArgument`, limits `ResourceExhausted`, faults `Internal`.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::sql::metadata::{XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder};
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, DoPutPreparedStatementResult, Nullable, Searchable,
    XdbcDataType,
};
use arrow_flight::{HandshakeRequest, HandshakeResponse};
use bytes::Bytes;
use datafusion::common::ScalarValue;
use tonic::Streaming;

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
use subtle::ConstantTimeEq;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};
use tracing::debug;

use crate::engine::{PlannedQuery, QueryEngine, QueryError};

type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// Bearer-token authentication for every Flight RPC (`server.auth_token_file`): a tonic
/// interceptor, so no call reaches the service without it.
///
/// The presented token is compared in constant time (`subtle`), so response timing says
/// nothing about how much of a guess was right; neither token is ever logged or echoed.
#[derive(Clone)]
pub struct BearerAuth {
    /// None: every call passes (no `server.auth_token_file`).
    expected: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerAuth(<redacted>)")
    }
}

impl BearerAuth {
    /// Requires `token` when given; lets every call through otherwise.
    pub fn new(token: Option<&str>) -> Self {
        Self {
            expected: token.map(|t| t.as_bytes().into()),
        }
    }

    fn check(&self, header: Option<&[u8]>) -> bool {
        let Some(expected) = &self.expected else {
            return true;
        };
        let Some(presented) = header.and_then(bearer_token) else {
            return false;
        };
        // Lengths differ → false at once: the length of a secret of this kind is not secret.
        bool::from(presented.ct_eq(expected))
    }
}

/// The token of an `authorization: Bearer <token>` value (scheme case-insensitive).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        if self.check(header) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "this replica requires a bearer token: send `authorization: Bearer <token>` \
                 (arrowhead query --token, ADBC adbc.flight.sql.authorization_header)",
            ))
        }
    }
}

/// The Flight SQL service over a [`QueryEngine`].
#[derive(Clone)]
pub struct FlightSqlServer {
    engine: QueryEngine,
    /// Answers to GetSqlInfo, built once.
    sql_info: Arc<SqlInfoData>,
    /// Answers to GetXdbcTypeInfo, built once.
    xdbc_types: Arc<XdbcTypeInfoData>,
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
            xdbc_types: Arc::new(xdbc_type_info()),
        }
    }

    /// The tonic service to mount on a server.
    pub fn into_service(self) -> FlightServiceServer<Self> {
        FlightServiceServer::new(self)
    }

    /// The tonic service behind `auth`, which every call passes first.
    pub fn into_service_with_auth(
        self,
        auth: BearerAuth,
    ) -> InterceptedService<FlightServiceServer<Self>, BearerAuth> {
        InterceptedService::new(self.into_service(), auth)
    }

    /// Plans a statement or prepared-statement handle, with its bound parameters if it has
    /// any.
    async fn plan_handle(&self, handle: &[u8]) -> Result<PlannedQuery, Status> {
        let (sql, params) = decode_handle(handle)?;
        match params {
            None => self.engine.plan(&sql).await,
            Some(params) => self.engine.plan_with_params(&sql, params).await,
        }
        .map_err(status)
    }

    /// The plan kept for `handle` by an earlier call, or a new one.
    async fn kept_or_planned(&self, handle: &[u8]) -> Result<PlannedQuery, Status> {
        match self.engine.take_kept(handle) {
            Some(planned) => Ok(planned),
            None => self.plan_handle(handle).await,
        }
    }

    /// Plans `handle` for a client that asked for its schema and will run it next: the plan is
    /// kept for that call ([`crate::kept_plans`]).
    async fn plan_to_keep(&self, handle: &[u8]) -> Result<PlannedQuery, Status> {
        let planned = self.kept_or_planned(handle).await?;
        self.engine.keep(handle, &planned);
        Ok(planned)
    }

    /// Plans `handle` for a `GetFlightInfo`, whose `DoGet` comes next: the query starts at
    /// once when a slot is free ([`QueryEngine::start_early`]), else the plan is kept. Returns
    /// the result schema.
    async fn plan_to_start(&self, handle: &[u8]) -> Result<SchemaRef, Status> {
        let planned = self.kept_or_planned(handle).await?;
        let schema = planned.schema();
        if let Some(planned) = self.engine.start_early(handle, planned) {
            self.engine.keep(handle, &planned);
        }
        Ok(schema)
    }

    /// Runs `handle` for a `DoGet`: the query started for its `GetFlightInfo`, else the plan
    /// kept then, else a new plan.
    async fn run(&self, handle: &[u8]) -> Result<Response<DoGetStream>, Status> {
        let batches = match self.engine.take_started(handle) {
            Some(started) => started.into_stream(),
            None => self
                .kept_or_planned(handle)
                .await?
                .execute()
                .await
                .map_err(status)?,
        };
        let schema = batches.schema();
        let batches =
            batches.map_err(|e| FlightError::Tonic(Box::new(status(QueryError::from(e)))));
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// A DoGet answer of one metadata batch.
fn one_batch(
    schema: SchemaRef,
    batch: Result<RecordBatch, impl std::fmt::Display>,
) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(|e| Status::internal(format!("cannot build the answer: {e}")))?;
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async { Ok(batch) }))
        .map_err(Status::from);
    Ok(Response::new(Box::pin(stream)))
}

/// First byte of a handle that carries bound parameters (SQL text never starts with NUL).
const BOUND_HANDLE: u8 = 0;

/// A handle for `sql` with the one-row parameter batch `params`.
fn encode_bound_handle(sql: &str, params: &RecordBatch) -> Result<Vec<u8>, Status> {
    let len = u32::try_from(sql.len())
        .map_err(|_| Status::invalid_argument("statement too long to bind parameters to"))?;
    let mut out = vec![BOUND_HANDLE];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(sql.as_bytes());
    let encode =
        |e: arrow::error::ArrowError| Status::internal(format!("cannot encode parameters: {e}"));
    let mut writer = StreamWriter::try_new(&mut out, &params.schema()).map_err(encode)?;
    writer.write(params).map_err(encode)?;
    writer.finish().map_err(encode)?;
    drop(writer);
    Ok(out)
}

/// The SQL of a handle and, for a bound one, its parameter values in position order.
fn decode_handle(handle: &[u8]) -> Result<(String, Option<Vec<ScalarValue>>), Status> {
    let bad = || Status::invalid_argument("malformed prepared statement handle");
    let Some((&BOUND_HANDLE, rest)) = handle.split_first() else {
        return Ok((handle_to_sql(handle)?.to_string(), None));
    };
    let (len, rest) = rest.split_at_checked(4).ok_or_else(bad)?;
    let len = u32::from_le_bytes(len.try_into().map_err(|_| bad())?) as usize;
    let (sql, ipc) = rest.split_at_checked(len).ok_or_else(bad)?;
    let sql = handle_to_sql(sql)?.to_string();
    let reader = StreamReader::try_new(std::io::Cursor::new(ipc), None).map_err(|_| bad())?;
    let mut values = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|_| bad())?;
        if batch.num_rows() != 1 {
            return Err(bad());
        }
        for column in batch.columns() {
            values.push(ScalarValue::try_from_array(column, 0).map_err(|_| bad())?);
        }
    }
    Ok((sql, Some(values)))
}

/// The types result columns use, for `GetXdbcTypeInfo`.
fn xdbc_type_info() -> XdbcTypeInfoData {
    let mut b = XdbcTypeInfoDataBuilder::new();
    let types = [
        (
            "VARCHAR",
            XdbcDataType::XdbcVarchar,
            Some("'"),
            true,
            Searchable::Full,
        ),
        (
            "DOUBLE",
            XdbcDataType::XdbcDouble,
            None,
            false,
            Searchable::Basic,
        ),
        (
            "BIGINT",
            XdbcDataType::XdbcBigint,
            None,
            false,
            Searchable::Basic,
        ),
        (
            "INTEGER",
            XdbcDataType::XdbcInteger,
            None,
            false,
            Searchable::Basic,
        ),
        (
            "BOOLEAN",
            XdbcDataType::XdbcBit,
            None,
            false,
            Searchable::Basic,
        ),
        (
            "TIMESTAMP",
            XdbcDataType::XdbcTimestamp,
            Some("'"),
            false,
            Searchable::Basic,
        ),
    ];
    for (name, data_type, quote, case_sensitive, searchable) in types {
        b.append(XdbcTypeInfo {
            type_name: name.to_string(),
            data_type,
            column_size: None,
            literal_prefix: quote.map(str::to_string),
            literal_suffix: quote.map(str::to_string),
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive,
            searchable,
            unsigned_attribute: None,
            fixed_prec_scale: false,
            auto_increment: None,
            local_type_name: Some(name.to_string()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: data_type,
            datetime_subcode: None,
            num_prec_radix: None,
            interval_precision: None,
        });
    }
    b.build().expect("static type info is valid")
}

/// The (empty) answer to `GetPrimaryKeys`, with the schema the Flight SQL spec gives.
fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
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

/// The FlightInfo of a metadata or prepared-statement command: its ticket is the command.
fn command_info(
    schema: &Schema,
    command: &impl ProstMessageExt,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    flight_info(
        schema,
        command.as_any().encode_to_vec(),
        request.into_inner(),
    )
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
        let schema = self.plan_to_start(query.query.as_bytes()).await?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        flight_info(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.run(&ticket.statement_handle).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let planned = self.plan_to_keep(query.query.as_bytes()).await?;
        let encode = |schema: &Schema| -> Result<Bytes, Status> {
            let IpcMessage(bytes) = SchemaAsIpc::new(schema, &Default::default())
                .try_into()
                .map_err(|e| Status::internal(format!("cannot encode schema: {e}")))?;
            Ok(bytes)
        };
        let parameters = planned.parameter_schema().map_err(status)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into_bytes().into(),
            dataset_schema: encode(&planned.schema())?,
            parameter_schema: if parameters.fields().is_empty() {
                Bytes::new()
            } else {
                encode(&parameters)?
            },
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let (sql, _) = decode_handle(&cmd.prepared_statement_handle)?;
        let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(
            request.into_inner().map_err(FlightError::from),
        )
        .try_collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("cannot read the bound parameters: {e}")))?;
        let batches: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
        let [params] = batches.as_slice() else {
            return Err(Status::invalid_argument(format!(
                "bind exactly one row of parameters to a query ({} given)",
                batches.iter().map(|b| b.num_rows()).sum::<usize>()
            )));
        };
        if params.num_rows() != 1 {
            return Err(Status::invalid_argument(format!(
                "bind exactly one row of parameters to a query ({} given)",
                params.num_rows()
            )));
        }
        let handle = encode_bound_handle(&sql, params)?;
        // Plan now, so a value that does not fit fails at bind time, as clients expect.
        self.plan_to_keep(&handle).await?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.into()),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.plan_to_start(&cmd.prepared_statement_handle).await?;
        command_info(&schema, &cmd, request)
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.run(&cmd.prepared_statement_handle).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        // Handles hold no server state.
        Ok(())
    }

    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        // Nothing to negotiate: the bearer token, if required, was checked on this call.
        let response = HandshakeResponse {
            protocol_version: 0,
            payload: Bytes::new(),
        };
        Ok(Response::new(Box::pin(futures::stream::once(async {
            Ok(response)
        }))))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        command_info(&schema, &query, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        let tables = self.engine.tables().await.map_err(status)?;
        let catalogs: BTreeSet<&str> = tables.iter().map(|t| t.catalog.as_str()).collect();
        for catalog in catalogs {
            builder.append(catalog);
        }
        let schema = builder.schema();
        one_batch(schema, builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        command_info(&schema, &query, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        let tables = self.engine.tables().await.map_err(status)?;
        let schemas: BTreeSet<(&str, &str)> = tables
            .iter()
            .map(|t| (t.catalog.as_str(), t.schema.as_str()))
            .collect();
        for (catalog, schema) in schemas {
            builder.append(catalog, schema);
        }
        let schema = builder.schema();
        one_batch(schema, builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        command_info(&schema, &query, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        for t in self.engine.tables().await.map_err(status)? {
            builder
                .append(&t.catalog, &t.schema, &t.name, t.table_type, &t.columns)
                .map_err(|e| Status::internal(format!("cannot encode table {}: {e}", t.name)))?;
        }
        let schema = builder.schema();
        one_batch(schema, builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        command_info(&schema, &query, request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append("SYSTEM TABLE");
        builder.append("TABLE");
        let schema = builder.schema();
        one_batch(schema, builder.build())
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&primary_keys_schema(), &query, request)
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let schema = primary_keys_schema();
        one_batch(
            Arc::clone(&schema),
            Ok::<_, Status>(RecordBatch::new_empty(schema)),
        )
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(&self.xdbc_types).schema();
        command_info(&schema, &query, request)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let builder = query.into_builder(&self.xdbc_types);
        let schema = builder.schema();
        one_batch(schema, builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        command_info(&schema, &query, request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let builder = query.into_builder(&self.sql_info);
        let schema = builder.schema();
        one_batch(schema, builder.build())
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
