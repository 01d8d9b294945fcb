//! The TCP stream under a kept-alive scrape connection. It asks the kernel to wake the reader
//! once about as many bytes have arrived as the last response held, not at its first segment.
//!
//! ```text
//! request written ─► SO_RCVLOWAT = 15/16 of the last response's bytes (64 KiB to 1 MiB)
//!                    + a fallback deadline: the last response's time, + half, + 2 ms
//!                    (only when the last response took at most 100 ms)
//! first read with data, or the deadline passed, or EOF/error ─► SO_RCVLOWAT = 1
//! ```
//!
//! Why: a scrape is a bulk transfer of one response, and the reader's wake-up at the first
//! segment buys nothing: hyper cannot parse a sample before the body is in. Waking early made
//! the read contend with the delivery of the rest. By a perf profile of a replica scraping
//! `benches/ingest_vs_prometheus.py`'s targets (50 × 1,969 series, 157 KB bodies at 15 s, on
//! loopback), 21 % of the replica's samples were in `recvfrom`, and 68 % of those were the
//! kernel spinning for the socket's lock (`__pv_queued_spin_lock_slowpath` under
//! `lock_sock_nested`), held by the server's CPU as it queued the rest of the body; the
//! copy itself was 10 % of them. With the mark that spin fell to 0.4 % of the samples: the
//! reader wakes once the response is in, or earlier only when the receive window is full
//! (the kernel widens the window for the mark gradually), when the sender has to wait for
//! it anyway. On a real network the same mark saves a wake per burst of segments.
//!
//! A response smaller than the mark is not signalled until the deadline (or the peer's FIN):
//! then the mark goes back to 1 and the kernel signals what is there. So a body that shrank
//! by more than 1/16 is read up to half its last duration later: a few ms on a fast target,
//! at most 52 ms. Nothing is lost, and the scrape's timeout still bounds it all. A response
//! slower than its deadline is read as it comes, as before. The first request on a
//! connection, and any after a response that took over 100 ms (the wake is a small part of
//! such a scrape), are read as any other stream.
//!
//! Linux only (other systems' `poll` may not honour the mark for TCP): elsewhere the stream
//! is read as it is. A failed `setsockopt` turns the mark off for the connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Responses smaller than this are not worth a mark: they arrive in a burst or two.
const MIN_MARK: u64 = 64 << 10;
/// The largest mark: the kernel grows the socket's receive buffer to hold twice the mark.
const MAX_MARK: u64 = 1 << 20;
/// The mark is set only after responses that took at most this long, which bounds how late
/// a smaller one is read.
const MAX_LAST: Duration = Duration::from_millis(100);
/// Added to every deadline: the timer's granularity.
const TICK: Duration = Duration::from_millis(2);

/// A [`TcpStream`] that sets its receive low-water mark from the last response (see the
/// module docs).
#[derive(Debug)]
pub(super) struct ScrapeStream {
    inner: TcpStream,
    /// Whether the mark is used on this connection (false after a failed `setsockopt`).
    enabled: bool,
    /// Bytes read since the last request went out: when not 0, the next write starts a
    /// request.
    response_bytes: u64,
    /// When the last request went out, and when its response's last bytes were read.
    sent_at: Option<Instant>,
    last_read_at: Option<Instant>,
    /// A mark above 1 is in force, given up at `fallback`.
    armed: bool,
    /// The deadline's timer while a mark is in force.
    fallback: Option<Pin<Box<Sleep>>>,
    /// Reads that returned data, and the bytes of a response's first one (for tests).
    #[cfg(test)]
    data_reads: u64,
    #[cfg(test)]
    first_read: u64,
}

impl ScrapeStream {
    pub(super) fn new(inner: TcpStream) -> Self {
        Self {
            inner,
            enabled: cfg!(target_os = "linux"),
            response_bytes: 0,
            sent_at: None,
            last_read_at: None,
            armed: false,
            fallback: None,
            #[cfg(test)]
            data_reads: 0,
            #[cfg(test)]
            first_read: 0,
        }
    }

    /// A request starts: sets the mark from the last response, if there was one worth it.
    fn arm(&mut self) {
        let now = Instant::now();
        let last = match (self.sent_at, self.last_read_at) {
            (Some(sent), Some(read)) if read >= sent => Some(read - sent),
            _ => None,
        };
        let mark = (self.response_bytes / 16 * 15).min(MAX_MARK);
        self.response_bytes = 0;
        self.sent_at = Some(now);
        self.last_read_at = None;
        let Some(last) = last.filter(|l| *l <= MAX_LAST) else {
            return;
        };
        if !self.enabled || mark < MIN_MARK {
            return;
        }
        if set_low_water_mark(&self.inner, mark as i32).is_err() {
            self.enabled = false;
            return;
        }
        let deadline = now + last + last / 2 + TICK;
        self.fallback = Some(Box::pin(tokio::time::sleep_until(deadline)));
        self.armed = true;
    }

    /// Back to waking at the first byte. The kernel signals readability at once if data is
    /// waiting, which wakes the task that found the socket not ready.
    ///
    /// The deadline's timer goes with the mark. Left registered, it fired a few ms after
    /// every response that came in time, and woke the runtime and this task for nothing: by
    /// `strace` of a replica scraping `benches/ingest_vs_prometheus.py`'s targets, one
    /// `epoll_wait` that slept and timed out per scrape, of six.
    fn disarm(&mut self) {
        if std::mem::take(&mut self.armed) {
            self.fallback = None;
            if set_low_water_mark(&self.inner, 1).is_err() {
                self.enabled = false;
            }
        }
    }

    /// Notes that the caller is about to write: the first write after a response starts the
    /// next request. The deadline's timer is registered with the writing task, which is the
    /// reading one: hyper does not poll a read again after writing while the last read found
    /// nothing, so the timer, not a read, must wake it.
    fn before_write(&mut self, cx: &mut Context<'_>) {
        if self.response_bytes > 0 {
            self.disarm();
            self.arm();
            self.poll_fallback(cx);
        } else if self.sent_at.is_none() {
            // The first request on the connection: timed, with no mark.
            self.sent_at = Some(Instant::now());
        }
    }

    /// Gives the mark up once its deadline has passed; until then the timer wakes the task.
    fn poll_fallback(&mut self, cx: &mut Context<'_>) {
        if self.armed
            && let Some(sleep) = &mut self.fallback
            && sleep.as_mut().poll(cx).is_ready()
        {
            self.disarm();
        }
    }
}

impl AsyncRead for ScrapeStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                let n = buf.filled().len() - before;
                this.disarm();
                if result.is_ok() && n > 0 {
                    #[cfg(test)]
                    {
                        this.data_reads += 1;
                        if this.response_bytes == 0 {
                            this.first_read = n as u64;
                        }
                    }
                    this.response_bytes += n as u64;
                    this.last_read_at = Some(Instant::now());
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                this.poll_fallback(cx);
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for ScrapeStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.before_write(cx);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.before_write(cx);
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Sets `SO_RCVLOWAT`: socket2 and rustix do not offer it, so through libc.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_low_water_mark(stream: &TcpStream, bytes: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let value: libc::c_int = bytes;
    // SAFETY: the descriptor is open for as long as `stream` is borrowed, and the option value
    // is a `c_int` that lives through the call, passed with its size, as SO_RCVLOWAT takes it.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_low_water_mark(_stream: &TcpStream, _bytes: i32) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::task::AbortOnDropHandle;

    /// Reads exactly `n` bytes as hyper would (reads into a large buffer until done).
    async fn read_response(stream: &mut ScrapeStream, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        let mut buf = vec![0u8; 1 << 20];
        while out.len() < n {
            let got = stream.read(&mut buf).await.unwrap();
            assert!(got > 0, "EOF after {} of {n} bytes", out.len());
            out.extend_from_slice(&buf[..got]);
        }
        out
    }

    #[tokio::test]
    async fn responses_are_read_once_whole_and_smaller_ones_after_the_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let body = |n: usize, seed: u8| -> Vec<u8> {
            (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
        };
        let (first, second, third) = (body(200_000, 1), body(200_000, 2), body(20_000, 3));
        let (a, b, c) = (first.clone(), second.clone(), third.clone());
        #[allow(clippy::disallowed_methods)] // owned by an AbortOnDropHandle
        let server = AbortOnDropHandle::new(tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4];
            for (i, response) in [a, b, c].into_iter().enumerate() {
                s.read_exact(&mut request).await.unwrap();
                if i < 2 {
                    // Two halves apart: a reader woken at the first byte reads twice. The
                    // first response's gap sets the second's deadline (~80 + 40 + 2 ms), well
                    // after the second's gap.
                    s.write_all(&response[..100_000]).await.unwrap();
                    s.flush().await.unwrap();
                    let gap = if i == 0 { 80 } else { 20 };
                    tokio::time::sleep(Duration::from_millis(gap)).await;
                    s.write_all(&response[100_000..]).await.unwrap();
                } else {
                    s.write_all(&response).await.unwrap();
                }
            }
            s
        }));
        let mut stream = ScrapeStream::new(TcpStream::connect(address).await.unwrap());

        // The first response has no size to go by: read as its halves come.
        stream.write_all(b"req1").await.unwrap();
        assert_eq!(read_response(&mut stream, first.len()).await, first);
        assert!(stream.data_reads >= 2, "{} reads", stream.data_reads);
        assert_eq!(stream.first_read, 100_000);

        // The second is marked at 15/16 of the first: not read at its first half. (The
        // kernel may wake the reader before the mark when the receive window is full, as it
        // grows the window for the mark only gradually: the first read took 158,880 of the
        // 200,000 bytes in one run.)
        stream.write_all(b"req2").await.unwrap();
        assert!(stream.armed && stream.fallback.is_some());
        assert_eq!(read_response(&mut stream, second.len()).await, second);
        assert!(stream.first_read > 100_000, "{}", stream.first_read);
        // Read before its deadline: the timer is gone with the mark, not left to fire.
        assert!(!stream.armed && stream.fallback.is_none());

        // The third is a tenth of the mark: it is read once the deadline passes (the last
        // response took ~20 ms, so ~32 ms), and whole.
        stream.write_all(b"req3").await.unwrap();
        let started = std::time::Instant::now();
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            read_response(&mut stream, third.len()),
        )
        .await
        .expect("a response below the mark must still be read");
        assert_eq!(got, third);
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(server.await.unwrap());
    }

    #[tokio::test]
    async fn end_of_stream_is_returned_with_a_mark_in_force() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        #[allow(clippy::disallowed_methods)] // owned by an AbortOnDropHandle
        let server = AbortOnDropHandle::new(tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4];
            s.read_exact(&mut request).await.unwrap();
            s.write_all(&vec![7u8; 300_000]).await.unwrap();
            s.read_exact(&mut request).await.unwrap();
            // The server closes instead of answering the second request.
        }));
        let mut stream = ScrapeStream::new(TcpStream::connect(address).await.unwrap());
        stream.write_all(b"req1").await.unwrap();
        read_response(&mut stream, 300_000).await;
        stream.write_all(b"req2").await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("EOF must wake the reader")
            .unwrap();
        assert_eq!(n, 0);
        server.await.unwrap();
    }
}
