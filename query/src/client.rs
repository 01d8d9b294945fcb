//! A Flight SQL client: what `arrowhead query` and the end-to-end tests use to talk to a
//! replica, with failover across the replicas of a pair.
//!
//! Failover tries endpoints in order and moves on only when an endpoint cannot answer
//! (connection refused, unavailable, timed out). An answer that is an error about the query
//! itself (bad SQL, refused statement) is final: the other replica would say the same.

use std::path::Path;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightDescriptor, FlightInfo};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

/// The endpoint used when none is given.
pub const DEFAULT_ENDPOINT: &str = "grpc://127.0.0.1:9191";

/// A client-side failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint URL is not usable.
    #[error("invalid endpoint {url:?}: {reason}")]
    InvalidEndpoint {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The endpoint could not be reached.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server answered with an error.
    #[error("{url}: {} ({:?})", status.message(), status.code())]
    Status {
        /// The endpoint that answered.
        url: String,
        /// The gRPC status.
        status: Box<Status>,
    },
    /// The answer could not be decoded.
    #[error("{url}: {reason}")]
    Decode {
        /// The endpoint.
        url: String,
        /// Why.
        reason: String,
    },
    /// Every endpoint failed; the errors in order.
    #[error("no endpoint answered: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    AllFailed(Vec<ClientError>),
}

impl ClientError {
    /// True when another endpoint may succeed where this one failed.
    fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Status { status, .. } => matches!(
                status.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
            ),
            _ => false,
        }
    }

    /// The gRPC code of a server answer, if that is what this is.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Status { status, .. } => Some(status.code()),
            Self::AllFailed(errors) => errors.last().and_then(Self::code),
            _ => None,
        }
    }
}

/// A connection to one replica.
#[derive(Debug, Clone)]
pub struct FlightSqlClient {
    url: String,
    inner: FlightServiceClient<Channel>,
    /// Sent as `authorization: Bearer <token>`; never logged.
    token: Option<String>,
}

/// A query's result as a stream of batches, with its schema known up front.
pub struct QueryStream {
    /// The result schema.
    pub schema: SchemaRef,
    /// The batches.
    pub batches: std::pin::Pin<Box<dyn Stream<Item = Result<RecordBatch, ClientError>> + Send>>,
}

impl std::fmt::Debug for QueryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryStream")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl FlightSqlClient {
    /// Connects to `grpc://host:port`, or `grpc+tls://host:port` trusting the system's CA
    /// certificates or, when given, only the PEM certificate(s) in `tls_ca`.
    pub async fn connect(
        url: &str,
        token: Option<String>,
        tls_ca: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidEndpoint {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (tls, address) = if let Some(rest) = url.strip_prefix("grpc://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("grpc+tls://") {
            (true, rest)
        } else {
            return Err(invalid("expected grpc://host:port or grpc+tls://host:port"));
        };
        if address.is_empty() || address.contains('/') {
            return Err(invalid("expected grpc://host:port or grpc+tls://host:port"));
        }
        let scheme = if tls { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| invalid(&e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if tls {
            let config = match tls_ca {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|e| {
                        invalid(&format!("cannot read CA file {}: {e}", path.display()))
                    })?;
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
                }
                None => ClientTlsConfig::new().with_native_roots(),
            };
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| invalid(&error_chain(&e)))?;
        }
        let channel = endpoint.connect().await.map_err(|e| ClientError::Connect {
            url: url.to_string(),
            reason: error_chain(&e),
        })?;
        Ok(Self {
            url: url.to_string(),
            inner: FlightServiceClient::new(channel).max_decoding_message_size(64 << 20),
            token,
        })
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    fn status(&self, status: Status) -> ClientError {
        ClientError::Status {
            url: self.url.clone(),
            status: Box::new(status),
        }
    }

    /// Runs `sql` and streams its result.
    pub async fn query(&mut self, sql: &str) -> Result<QueryStream, ClientError> {
        let command = CommandStatementQuery {
            query: sql.to_string(),
            transaction_id: None,
        };
        let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
        let info: FlightInfo = self
            .inner
            .get_flight_info(self.request(descriptor))
            .await
            .map_err(|s| self.status(s))?
            .into_inner();
        let schema: SchemaRef = info
            .clone()
            .try_decode_schema()
            .map_err(|e| ClientError::Decode {
                url: self.url.clone(),
                reason: format!("bad schema in FlightInfo: {e}"),
            })?
            .into();
        let mut streams = Vec::new();
        for endpoint in info.endpoint {
            let ticket = endpoint.ticket.ok_or_else(|| ClientError::Decode {
                url: self.url.clone(),
                reason: "FlightInfo endpoint without a ticket".into(),
            })?;
            let response = self
                .inner
                .do_get(self.request(ticket))
                .await
                .map_err(|s| self.status(s))?;
            let url = self.url.clone();
            let decoded = FlightRecordBatchStream::new_from_flight_data(
                response.into_inner().map_err(FlightError::from),
            )
            .map_err(move |e| match e {
                FlightError::Tonic(status) => ClientError::Status {
                    url: url.clone(),
                    status,
                },
                other => ClientError::Decode {
                    url: url.clone(),
                    reason: other.to_string(),
                },
            });
            streams.push(decoded);
        }
        Ok(QueryStream {
            schema,
            batches: Box::pin(futures::stream::iter(streams).flatten()),
        })
    }
}

/// Runs `sql` on the first endpoint that answers, collecting the result.
pub async fn query_with_failover(
    endpoints: &[String],
    token: Option<&str>,
    tls_ca: Option<&Path>,
    sql: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>), ClientError> {
    let stream = stream_with_failover(endpoints, token, tls_ca, sql).await?;
    let batches: Vec<RecordBatch> = stream.batches.try_collect().await?;
    // The server plans again to run the query; should the table have widened in between, the
    // rows' own schema is the true one.
    let schema = batches.first().map_or(stream.schema, |b| b.schema());
    Ok((schema, batches))
}

/// Opens a streaming query on the first endpoint that answers.
pub async fn stream_with_failover(
    endpoints: &[String],
    token: Option<&str>,
    tls_ca: Option<&Path>,
    sql: &str,
) -> Result<QueryStream, ClientError> {
    let mut errors = Vec::new();
    for url in endpoints {
        let attempt = async {
            let mut client =
                FlightSqlClient::connect(url, token.map(str::to_string), tls_ca).await?;
            client.query(sql).await
        };
        match attempt.await {
            Ok(stream) => return Ok(stream),
            Err(e) if e.is_retryable() => errors.push(e),
            Err(e) => return Err(e),
        }
    }
    if errors.len() == 1 {
        return Err(errors.remove(0));
    }
    Err(ClientError::AllFailed(errors))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}
