//! The in-repo HTTP/2 gRPC echo backend.
//!
//! It runs as a *child process* of the bench binary (the binary re-executes
//! itself with [`ROLE_ENV`] set), so that its CPU time is neither mixed with
//! the load generator's nor with Strait's, and it is scheduled as a separate
//! process exactly like a real upstream would be. Its own CPU time is sampled
//! through `/proc/<pid>/stat` and reported next to the load generator's, which
//! tells whether a "direct" figure is limited by the backend.
//!
//! Behaviour: serves any `:path` over h2c (prior knowledge). For every request
//! stream it immediately sends `:status 200`, `content-type:
//! application/grpc`, then echoes each request DATA chunk back as it arrives
//! and, when the request body ends, sends trailers `grpc-status: 0`. Echoing
//! the DATA bytes verbatim echoes every gRPC length-prefixed message exactly
//! (same framing, same bytes) without re-buffering, so a unary call gets one
//! message + trailers and a bidi stream gets each message back as soon as it
//! has been received. No per-message parsing keeps the backend as cheap as
//! possible, so that it is not the bottleneck of the direct runs. The only
//! look at the bytes is a comparison of a message's first bytes with
//! [`UPSTREAM_NAMESPACE`], counting messages a translating proxy renamed;
//! [`STATS_PATH`] reports that count.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};
use tokio::net::{TcpListener, TcpStream};

use super::h2cfg;

/// The namespace every bench message carries (`EchoMessage.namespace`).
pub const CLIENT_NAMESPACE: &str = "bench";
/// What a translating proxy renames [`CLIENT_NAMESPACE`] to on the way
/// upstream (and back on the way down).
pub const UPSTREAM_NAMESPACE: &str = "bench-upstream";
/// A request to this path is not echoed: the backend answers with the number
/// of messages it has received that carried [`UPSTREAM_NAMESPACE`] (decimal
/// ASCII), which proves a translating proxy really rewrote the requests.
pub const STATS_PATH: &str = "/strait.bench.v1.BenchControl/Stats";

/// Messages received whose namespace field was [`UPSTREAM_NAMESPACE`].
static TRANSLATED: AtomicU64 = AtomicU64::new(0);

/// Environment variable that turns the bench binary into the echo backend.
pub const ROLE_ENV: &str = "STRAIT_BENCH_RELAY_ROLE";
const THREADS_ENV: &str = "STRAIT_BENCH_RELAY_ECHO_THREADS";

/// A running echo backend child process.
pub struct EchoProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl EchoProcess {
    /// Re-executes the current binary as the echo backend and waits for it to
    /// report its listening port on stdout.
    pub fn spawn(threads: usize) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = Command::new(exe)
            .env(ROLE_ENV, "echo")
            .env(THREADS_ENV, threads.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawning echo backend: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("reading echo backend port: {e}"))?;
        let port: u16 = match line.trim().parse() {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("echo backend did not report a port: {line:?}"));
            }
        };
        Ok(Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Entry point of the echo backend child process.
pub fn child_main() {
    let threads: usize = std::env::var(THREADS_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    // Exit when the parent goes away (its end of our stdin closes), so a
    // killed or panicking bench never leaves a stray backend behind.
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("echo")
        .enable_all()
        .build()
        .expect("echo runtime");
    rt.block_on(async {
        // A deep accept queue: nginx opens one upstream connection per
        // stream, i.e. 1,000 connections in a burst in the memory bench; an
        // overflowing queue (with SYN cookies) ends in connection resets.
        let socket = tokio::net::TcpSocket::new_v4().expect("echo socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("echo bind");
        let listener: TcpListener = socket.listen(4096).expect("echo listen");
        let port = listener.local_addr().expect("echo local_addr").port();
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{port}").expect("echo: write port");
            out.flush().expect("echo: flush port");
        }
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let _ = sock.set_nodelay(true);
            tokio::spawn(serve_connection(sock));
        }
    });
}

async fn serve_connection(sock: TcpStream) {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(h2cfg::STREAM_WINDOW)
        .initial_connection_window_size(h2cfg::CONNECTION_WINDOW)
        .max_frame_size(h2cfg::MAX_FRAME_SIZE)
        .max_concurrent_streams(h2cfg::MAX_CONCURRENT_STREAMS);
    let mut conn = match builder.handshake::<_, Bytes>(sock).await {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("echo backend: h2 handshake: {e}");
            return;
        }
    };
    while let Some(accepted) = conn.accept().await {
        let (request, respond) = match accepted {
            Ok(parts) => parts,
            Err(e) => {
                // A peer going away mid-stream is normal at the end of a
                // run; anything else is worth seeing next to the results.
                if !e.is_io() && !e.is_go_away() {
                    eprintln!("echo backend: h2 connection: {e}");
                }
                return;
            }
        };
        tokio::spawn(echo_stream(request, respond));
    }
}

/// Follows the gRPC messages of one request body across DATA chunks (a
/// proxy may split a message anywhere) and counts those whose first field is
/// the namespace string [`UPSTREAM_NAMESPACE`] (`EchoMessage.namespace`,
/// field 1). Only the first bytes of each message are looked at; the rest is
/// skipped by length.
#[derive(Default)]
struct NamespaceScanner {
    /// The first bytes of the current message (5-byte prefix + up to
    /// [`Self::PEEK`] body bytes).
    head: Vec<u8>,
    /// Bytes of the current message still to skip.
    skip: usize,
}

impl NamespaceScanner {
    /// Body bytes needed to recognise the namespace field.
    const PEEK: usize = 2 + UPSTREAM_NAMESPACE.len();

    fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut found = 0;
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let body_len = (self.head.len() >= 5).then(|| {
                u32::from_be_bytes([self.head[1], self.head[2], self.head[3], self.head[4]])
                    as usize
            });
            let want = 5 + body_len.map_or(0, |l| l.min(Self::PEEK));
            let n = (want - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
            if let Some(len) = body_len.filter(|_| self.head.len() == want) {
                let ns = UPSTREAM_NAMESPACE.as_bytes();
                let body = &self.head[5..];
                if body.len() == Self::PEEK
                    && body[0] == 0x0a
                    && usize::from(body[1]) == ns.len()
                    && &body[2..] == ns
                {
                    found += 1;
                }
                self.skip = len - body.len();
                self.head.clear();
            }
        }
        found
    }
}

async fn echo_stream(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let stats = request.uri().path() == STATS_PATH;
    let mut body = request.into_body();
    let mut scanner = NamespaceScanner::default();
    let mut response = Response::new(());
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    let Ok(mut send) = respond.send_response(response, false) else {
        return;
    };
    if stats {
        let count = TRANSLATED.load(Ordering::Relaxed).to_string();
        let _ = send.send_data(Bytes::from(count), false);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let _ = send.send_trailers(trailers);
        return;
    }
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else {
            // Client reset / connection error: nothing to answer.
            return;
        };
        if chunk.is_empty() {
            // h2 surfaces an empty END_STREAM DATA frame as an empty chunk;
            // echoing it would send an empty non-final DATA frame, which
            // peers rightly treat as flooding (h2 allows 100 per connection
            // before ENHANCE_YOUR_CALM).
            continue;
        }
        let _ = body.flow_control().release_capacity(chunk.len());
        let found = scanner.feed(&chunk);
        if found > 0 {
            TRANSLATED.fetch_add(found, Ordering::Relaxed);
        }
        // Unbounded h2 send buffering is fine: every client keeps at most
        // one message per stream in flight.
        if send.send_data(chunk, false).is_err() {
            return;
        }
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let _ = send.send_trailers(trailers);
}
