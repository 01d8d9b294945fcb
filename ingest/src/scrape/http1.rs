//! The scrape client for plain `http://` targets: one keep-alive HTTP/1.1 connection per
//! scrape loop, on hyper's connection API, with nothing between the loop and the connection.
//!
//! ```text
//! ScrapeLoop::fetch ─► Http1Target::fetch ─► connection alive? ─ no ─► connect, handshake
//!                      │                      └─► GET (Host, Accept, Accept-Encoding: gzip, ...)
//!                      │                          ├─ 2xx: body, gunzipped, within the limit
//!                      │                          ├─ 3xx: Redirect ─► reqwest from now on
//!                      │                          └─ else: "server returned HTTP status ..."
//!                      └─ a reused connection the server had closed: reconnect, send again once
//! ```
//!
//! Why not reqwest for these: per request it builds a tower stack's worth of futures, checks
//! a connection out of a pool shared by all targets (keyed by scheme and authority), clones
//! the whole request for its retry layer, and turns the final URI back into a `Url` (a full
//! parse, IDNA included) for `Response::url`. By a perf profile of a replica scraping
//! `benches/ingest_vs_prometheus.py`'s targets (50 × 1,969 series at 15 s), the HTTP stack
//! was 37 % of the replica's CPU time (with the kernel's side of each request); the samples
//! whose innermost library frame was reqwest, hyper-util, tower, `url` or `idna` were 8 % of
//! it all, `http` (header maps) 4 %.
//!
//! What stays with reqwest (`ScrapeLoop::fetch`): `https://` targets (TLS settings), URLs with
//! user info, and a target that answered with a redirect, which reqwest follows (up to 10
//! hops) as Prometheus does by default.
//!
//! The connection's socket is a [`ScrapeStream`](super::stream::ScrapeStream), which has the
//! kernel wake the reader once a response about the size of the last one is in.
//!
//! Behaviour matches the reqwest path: the same request headers, gzip decoded (several gzip
//! members, as Go's reader reads them), the body size limit counted on decoded bytes, errors
//! that name the same causes ("Connection refused", "server returned HTTP status 500 Internal
//! Server Error"). Like Go's client, it sends a GET again, once, when a reused connection fails
//! before any response (the server closed it as the request went out).

use std::io::Read;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio_util::task::AbortOnDropHandle;
use tracing::debug;

use crate::exposition::Format;

/// What a fetch gave.
#[derive(Debug)]
pub(super) enum Fetched {
    /// A successful response's body (decoded) and its format.
    Body(Bytes, Format),
    /// A redirect: the caller scrapes this target with the general client instead.
    Redirect,
}

/// One `http://` target's connection and request line.
#[derive(Debug)]
pub(super) struct Http1Target {
    /// Where to connect: `host:port` (`[v6]:port` for IPv6), resolved at each connect.
    address: String,
    /// The `Host` header: host, and port unless it is the scheme's default.
    host: HeaderValue,
    /// The request target in origin form: path and query.
    path: Uri,
    /// The open connection, if any.
    connection: Option<Connection>,
}

/// A handshaken connection. Its I/O runs in a task of its own, aborted when this is dropped.
#[derive(Debug)]
struct Connection {
    sender: SendRequest<Empty<Bytes>>,
    _task: AbortOnDropHandle<()>,
}

impl Http1Target {
    /// The client for `url`, or `None` when the URL is not one this client takes (see the
    /// module docs).
    pub(super) fn new(url: &reqwest::Url) -> Option<Self> {
        if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        };
        Some(Self {
            address: format!("{host}:{port}"),
            host: HeaderValue::from_str(&authority).ok()?,
            path: Uri::try_from(path).ok()?,
            connection: None,
        })
    }

    /// Drops the connection (after a timeout, with a request maybe half sent).
    pub(super) fn disconnect(&mut self) {
        self.connection = None;
    }

    /// GETs the target with `headers` (besides `Host`); `limit` bounds the decoded body
    /// (0: no bound). Errors name their cause as the reqwest path's do.
    pub(super) async fn fetch(
        &mut self,
        headers: HeaderMap,
        limit: u64,
    ) -> Result<Fetched, String> {
        let reused = self
            .connection
            .as_ref()
            .is_some_and(|c| !c.sender.is_closed());
        let response = match self.send(&headers).await {
            // The server closed (or reset) a kept-alive connection as the request went out,
            // before any response: a GET is sent again, once, on a new connection.
            Err(e) if reused => {
                debug!(address = %self.address, error = %e, "kept-alive connection was closed; reconnecting");
                self.connection = None;
                self.send(&headers).await
            }
            other => other,
        };
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                self.connection = None;
                return Err(describe(&e, &self.address));
            }
        };
        let status = response.status();
        if status.is_redirection() {
            self.connection = None;
            return Ok(Fetched::Redirect);
        }
        if !status.is_success() {
            // The body is not read, so the connection cannot carry another request.
            self.connection = None;
            return Err(format!("server returned HTTP status {status}"));
        }
        let result = read_body(response, limit).await;
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    /// Sends one request, connecting first if need be.
    async fn send(
        &mut self,
        headers: &HeaderMap,
    ) -> Result<Response<hyper::body::Incoming>, SendError> {
        let connection = match &mut self.connection {
            Some(c) if !c.sender.is_closed() => c,
            slot => slot.insert(connect(&self.address).await?),
        };
        connection.sender.ready().await?;
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = self.path.clone();
        // Sized once: a map moved in and then given `Host` grew (a reallocation per scrape;
        // 0.9 % of the replica's samples in a perf profile of the ingest benchmark).
        let map = request.headers_mut();
        map.reserve(headers.len() + 1);
        map.insert(header::HOST, self.host.clone());
        for (name, value) in headers {
            map.append(name.clone(), value.clone());
        }
        Ok(connection.sender.send_request(request).await?)
    }
}

/// Bytes each read of a connection asks for. hyper's default strategy doubles its read
/// buffer while reads fill it, up to ~400 KiB; with the socket waking the reader only once a
/// response is whole ([`ScrapeStream`](super::stream::ScrapeStream)), the first reads fill it
/// every time, so each idle connection came to hold a buffer of 256 KiB or more between
/// scrapes. A fixed size keeps each connection's buffer at this, at the cost of a few reads
/// per body instead of one and one copy of the body (see `read_body`). Measured with both
/// builds side by side on one core, scraping the same 50 targets of
/// `benches/ingest_vs_prometheus.py` (1,969 series, 157 KB bodies, at 15 s) for 660 s: RSS
/// 107.3 → 98.2 MiB (1,140 → 1,043 bytes per series; peak 112.0 → 103.4 MiB), CPU per
/// million samples 0.507 → 0.502 s.
///
/// hyper also bounds a response's head (status line and headers) by its read buffer: a head
/// over 64 KiB now fails the scrape with "message head is too large" (the default allowed
/// ~400 KiB, Go's client 10 MiB; exporters send a few hundred bytes).
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Opens and handshakes a connection to `address`.
async fn connect(address: &str) -> Result<Connection, SendError> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(SendError::Connect)?;
    // Requests are one small write each; nothing is gained by Nagle's delay.
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .read_buf_exact_size(Some(READ_BUFFER_BYTES))
        .handshake(TokioIo::new(super::stream::ScrapeStream::new(stream)))
        .await?;
    let address = address.to_string();
    #[allow(clippy::disallowed_methods)] // owned by an AbortOnDropHandle
    let task = AbortOnDropHandle::new(tokio::spawn(async move {
        if let Err(e) = connection.await {
            debug!(%address, error = %e, "scrape connection ended");
        }
    }));
    Ok(Connection {
        sender,
        _task: task,
    })
}

/// Why a request got no response.
#[derive(Debug)]
enum SendError {
    Connect(std::io::Error),
    Http(hyper::Error),
}

impl From<hyper::Error> for SendError {
    fn from(e: hyper::Error) -> Self {
        Self::Http(e)
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "{e}"),
            Self::Http(e) => write!(f, "{e}"),
        }
    }
}

/// A send error with its causes, which hold the useful part.
fn describe(e: &SendError, address: &str) -> String {
    match e {
        SendError::Connect(e) => format!("cannot connect to {address}: {e}"),
        SendError::Http(e) => super::with_causes(format!("request to {address} failed: {e}"), e),
    }
}

/// A successful response's body: read whole, gunzipped if it came gzipped, refused as soon as
/// it passes `limit` decoded bytes (0: no limit).
async fn read_body(
    response: Response<hyper::body::Incoming>,
    limit: u64,
) -> Result<Fetched, String> {
    let headers = response.headers();
    let format = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map_or(Format::Prometheus, Format::from_content_type);
    let gzip = match headers.get(header::CONTENT_ENCODING) {
        None => false,
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"gzip") => true,
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"identity") => false,
        Some(v) => {
            return Err(format!(
                "unsupported Content-Encoding {:?} (only gzip was accepted)",
                String::from_utf8_lossy(v.as_bytes())
            ));
        }
    };
    // A gzip stream of stored blocks is its content plus 5 bytes per 64 KiB and a header: a
    // compressed body past this bound cannot decode to within the limit.
    let wire_limit = match (limit, gzip) {
        (0, _) => u64::MAX,
        (l, false) => l,
        (l, true) => l.saturating_add(l / 8192 + 1024),
    };
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = length
        && length > wire_limit
    {
        return Err(limit_exceeded(limit));
    }
    // A body within one read (`READ_BUFFER_BYTES`) arrives in one frame, which is kept as it
    // is; a larger one is copied, frame by frame, into a buffer sized once from the announced
    // length.
    let mut first: Option<Bytes> = None;
    let mut body = BytesMut::new();
    let mut incoming = response.into_body();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| format!("cannot read the body: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let so_far = first.as_ref().map_or(0, Bytes::len) + body.len();
        if (so_far + data.len()) as u64 > wire_limit {
            return Err(limit_exceeded(limit));
        }
        match first.take() {
            None if body.is_empty() => first = Some(data),
            None => body.extend_from_slice(&data),
            Some(kept) => {
                let expected = length.unwrap_or(0).min(wire_limit) as usize;
                body.reserve(expected.max(kept.len() + data.len()));
                body.extend_from_slice(&kept);
                body.extend_from_slice(&data);
            }
        }
    }
    let body = first.unwrap_or_else(|| body.freeze());
    if !gzip {
        return Ok(Fetched::Body(body, format));
    }
    // Decoded into a buffer bounded by the limit, so a gzip bomb stops at limit + 1 bytes.
    let bound = if limit == 0 {
        u64::MAX
    } else {
        limit.saturating_add(1)
    };
    let mut decoded = Vec::with_capacity((body.len() * 4).min(bound as usize));
    flate2::read::MultiGzDecoder::new(&body[..])
        .take(bound)
        .read_to_end(&mut decoded)
        .map_err(|e| format!("cannot decode the gzip body: {e}"))?;
    if limit != 0 && decoded.len() as u64 > limit {
        return Err(limit_exceeded(limit));
    }
    Ok(Fetched::Body(Bytes::from(decoded), format))
}

/// The reqwest path's text for a body over `body_size_limit`.
pub(super) fn limit_exceeded(limit: u64) -> String {
    format!("body size limit exceeded: more than {limit} bytes (body_size_limit)")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bare HTTP/1.1 server that answers the requests on its first connection with
    /// `responses` in turn, each in one write, then closes it.
    async fn serve_responses(responses: Vec<Vec<u8>>) -> (String, AbortOnDropHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        #[allow(clippy::disallowed_methods)] // owned by an AbortOnDropHandle
        let task = AbortOnDropHandle::new(tokio::spawn(async move {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            for response in responses {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut chunk = [0u8; 4096];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                buf.drain(..end + 4);
                if stream.write_all(&response).await.is_err() {
                    return;
                }
            }
        }));
        (address, task)
    }

    fn response(extra_headers: &str, body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{extra_headers}\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    #[tokio::test]
    async fn bodies_of_many_reads_arrive_whole_and_a_head_over_the_buffer_fails_clearly() {
        // Bytes that differ from one read to the next, so a frame lost, repeated or out of
        // order shows.
        let body = |len: usize| -> Vec<u8> { (0..len).map(|i| (i % 251) as u8).collect() };
        // 1 B, then 5 buffers and a bit in one write, then a body a tenth of the mark that
        // the last one set (read after the deadline), on one connection.
        let bodies = [body(1), body(5 * READ_BUFFER_BYTES + 17), body(30_000)];
        let responses = bodies.iter().map(|b| response("", b)).collect();
        let (address, _server) = serve_responses(responses).await;
        let mut target =
            Http1Target::new(&format!("http://{address}/metrics").parse().unwrap()).unwrap();
        let ten_seconds = std::time::Duration::from_secs(10);
        for expected in &bodies {
            let fetched = tokio::time::timeout(ten_seconds, target.fetch(HeaderMap::new(), 0));
            match fetched.await.expect("fetched in time").unwrap() {
                Fetched::Body(got, _) => {
                    assert_eq!(got.len(), expected.len());
                    assert!(
                        got == expected,
                        "a body of {} bytes differs",
                        expected.len()
                    );
                }
                Fetched::Redirect => panic!("not a redirect"),
            }
        }
        // A response head larger than a read: refused with hyper's reason (Go's client would
        // take up to 10 MiB; exporters send a few hundred bytes). On a new connection, which
        // is not retried.
        let padding = format!("x-padding: {}\r\n", "a".repeat(READ_BUFFER_BYTES));
        let (address, _server) = serve_responses(vec![response(&padding, b"up 1\n")]).await;
        let mut target =
            Http1Target::new(&format!("http://{address}/metrics").parse().unwrap()).unwrap();
        let fetched = tokio::time::timeout(ten_seconds, target.fetch(HeaderMap::new(), 0));
        let err = match fetched.await.expect("refused in time") {
            Err(e) => e,
            Ok(_) => panic!("a head over the read buffer was accepted"),
        };
        assert!(err.contains("message head is too large"), "{err}");
    }

    #[test]
    fn only_plain_http_urls_without_user_info_are_taken() {
        let t = Http1Target::new(&"http://10.0.0.1:9100/metrics?x=1&y=2".parse().unwrap()).unwrap();
        assert_eq!(t.address, "10.0.0.1:9100");
        assert_eq!(t.host, "10.0.0.1:9100");
        assert_eq!(t.path, "/metrics?x=1&y=2");
        // The default port is connected to but not written in `Host`, as browsers and Go do.
        let t = Http1Target::new(&"http://example.org/m".parse().unwrap()).unwrap();
        assert_eq!(
            (t.address.as_str(), t.host.to_str().unwrap()),
            ("example.org:80", "example.org")
        );
        let t = Http1Target::new(&"http://[::1]:9090/metrics".parse().unwrap()).unwrap();
        assert_eq!(t.address, "[::1]:9090");
        assert_eq!(t.host, "[::1]:9090");
        for other in [
            "https://10.0.0.1/metrics",
            "http://user:pw@10.0.0.1/metrics",
            "http://u@h/m",
        ] {
            assert!(
                Http1Target::new(&other.parse().unwrap()).is_none(),
                "{other}"
            );
        }
    }
}
