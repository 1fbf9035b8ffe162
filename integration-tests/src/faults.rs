//! Network faults the stand-ins cannot make by themselves, on real loopback sockets: a
//! server that accepts connections and never answers, a proxy that cuts a connection once in
//! the middle of a transfer, one that loses the answers to some requests the server carried
//! out, and an outage.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Accepts every connection and holds it open without a byte of answer: a hung server.
#[derive(Debug)]
pub struct Blackhole {
    pub address: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl Blackhole {
    pub fn start() -> Self {
        let (runtime, listener) = crate::background_listener();
        let address = listener.local_addr().expect("address");
        runtime.spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Self { address, _runtime: runtime }
    }
}

/// Which way a cut connection was carrying its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Server to client: a download.
    Down,
    /// Client to server: an upload.
    Up,
}

/// Listens on a loopback port and hands each connection accepted to `serve`, with a new
/// connection to `upstream` (a client whose upstream connection fails is dropped).
fn forwarding<Serve, Served>(
    upstream: SocketAddr,
    serve: Serve,
) -> (SocketAddr, tokio::runtime::Runtime)
where
    Serve: Fn(TcpStream, TcpStream) -> Served + Send + 'static,
    Served: Future<Output = ()> + Send + 'static,
{
    let (runtime, listener) = crate::background_listener();
    let address = listener.local_addr().expect("address");
    runtime.spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else { continue };
            tokio::spawn(serve(client, server));
        }
    });
    (address, runtime)
}

/// Forwards connections to `upstream`; the first time a connection has carried `cut_after`
/// bytes in its direction, it is closed in the middle of the transfer. Later connections
/// (a retry) pass untouched.
#[derive(Debug)]
pub struct CuttingProxy {
    pub address: SocketAddr,
    cuts: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

impl CuttingProxy {
    /// Cuts a download.
    pub fn start(upstream: SocketAddr, cut_after: usize) -> Self {
        Self::cutting(upstream, Direction::Down, cut_after)
    }

    pub fn cutting(upstream: SocketAddr, direction: Direction, cut_after: usize) -> Self {
        let cuts = Arc::new(AtomicUsize::new(0));
        let cut_done = Arc::new(AtomicBool::new(false));
        let counter = Arc::clone(&cuts);
        let (address, runtime) = forwarding(upstream, move |client, server| {
            let (done, count) = (Arc::clone(&cut_done), Arc::clone(&counter));
            let cut = Cut { after: cut_after, done, count };
            async move {
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                match direction {
                    Direction::Down => {
                        relay(server_read, client_write, client_read, server_write, cut).await
                    }
                    Direction::Up => {
                        relay(client_read, server_write, server_read, client_write, cut).await
                    }
                }
            }
        });
        Self { address, cuts, _runtime: runtime }
    }

    /// How many connections were cut (0 or 1).
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

/// When to cut, and whether it happened.
struct Cut {
    after: usize,
    done: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
}

/// Copies `from` → `to` (cut once past `cut.after` bytes) and `back_from` → `back_to`.
async fn relay(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut back_from: OwnedReadHalf,
    mut back_to: OwnedWriteHalf,
    cut: Cut,
) {
    let back = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut back_from, &mut back_to).await;
        let _ = back_to.shutdown().await;
    });
    let mut carried = 0;
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if carried + read > cut.after && !cut.done.swap(true, Ordering::SeqCst) {
            // What fits under the limit, then the connection ends mid-transfer.
            let _ = to.write_all(&buffer[..(cut.after - carried).min(read)]).await;
            cut.count.fetch_add(1, Ordering::SeqCst);
            back.abort();
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
        carried += read;
    }
    let _ = to.shutdown().await;
    let _ = back.await;
}

/// Forwards connections to `upstream` until [`Outage::begin`]: from then on every open
/// connection is dropped and new ones are closed at once, as when a service is gone.
#[derive(Debug)]
pub struct Outage {
    pub address: SocketAddr,
    down: Arc<AtomicBool>,
    ended: Arc<tokio::sync::Notify>,
    _runtime: tokio::runtime::Runtime,
}

impl Outage {
    pub fn start(upstream: SocketAddr) -> Self {
        let down = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(tokio::sync::Notify::new());
        let (gone, cut) = (Arc::clone(&down), Arc::clone(&ended));
        let (address, runtime) = forwarding(upstream, move |mut client, mut server| {
            let (gone, cut) = (Arc::clone(&gone), Arc::clone(&cut));
            async move {
                if gone.load(Ordering::SeqCst) {
                    return; // dropped: closed at once
                }
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    () = cut.notified() => {}
                }
            }
        });
        Self { address, down, ended, _runtime: runtime }
    }

    /// From now on nothing gets through.
    pub fn begin(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.ended.notify_waiters();
    }
}

/// Forwards connections to an AWS API's `upstream`, but the first `times` first attempts
/// (`amz-sdk-request: attempt=1`) of the operation `target` (its `X-Amz-Target`) get no
/// answer: the server carries each out, and its answer is dropped with the connection, as
/// when a network fails on the way back. It lists each operation that went up, in order.
/// For moto, which closes each connection after its answer: one request a connection.
#[derive(Debug)]
pub struct LostAnswers {
    pub address: SocketAddr,
    lost: Arc<AtomicUsize>,
    operations: Arc<std::sync::Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

/// A request's head: the operation it names, and whether it is the SDK's first attempt.
fn operation_of(head: &[u8]) -> Option<(String, bool)> {
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines().find_map(|line| line.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    let target = header("x-amz-target:")?;
    let first = header("amz-sdk-request:").is_some_and(|v| v.contains("attempt=1;"));
    Some((target, first))
}

impl LostAnswers {
    pub fn start(upstream: SocketAddr, target: &'static str, times: usize) -> Self {
        let lost = Arc::new(AtomicUsize::new(0));
        let operations = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (counter, listed) = (Arc::clone(&lost), Arc::clone(&operations));
        let (address, runtime) = forwarding(upstream, move |client, server| {
            let (counter, listed) = (Arc::clone(&counter), Arc::clone(&listed));
            async move {
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                // Set when a request whose answer is to be lost went up: HTTP/1.1 answers
                // in order, so what comes down next is its answer.
                let armed = Arc::new(AtomicBool::new(false));
                let up_armed = Arc::clone(&armed);
                let up = tokio::spawn(async move {
                    let mut buffer = vec![0_u8; 64 * 1024];
                    // A request's head, gathered until its blank line.
                    let mut head: Option<Vec<u8>> = Some(Vec::new());
                    loop {
                        let read = match client_read.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(read) => read,
                        };
                        if let Some(gathered) = head.as_mut() {
                            gathered.extend_from_slice(&buffer[..read]);
                            if gathered.windows(4).any(|w| w == b"\r\n\r\n") {
                                if let Some((operation, first)) = operation_of(gathered) {
                                    let lose = |n: usize| (n < times).then_some(n + 1);
                                    if first
                                        && operation.eq_ignore_ascii_case(target)
                                        && counter
                                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, lose)
                                            .is_ok()
                                    {
                                        up_armed.store(true, Ordering::SeqCst);
                                    }
                                    listed.lock().expect("not poisoned").push(operation);
                                }
                                // moto answers with `Connection: close`: one request
                                // a connection, so one head.
                                head = None;
                            }
                        }
                        if server_write.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                    let _ = server_write.shutdown().await;
                });
                let mut buffer = vec![0_u8; 64 * 1024];
                loop {
                    let read = match server_read.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => read,
                    };
                    if armed.load(Ordering::SeqCst) {
                        break; // the answer is lost, with the connection
                    }
                    if client_write.write_all(&buffer[..read]).await.is_err() {
                        break;
                    }
                }
                up.abort();
            }
        });
        Self { address, lost, operations, _runtime: runtime }
    }

    /// How many answers were lost.
    pub fn lost(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }

    /// The operations that went up (`X-Amz-Target`, lowercase), retries included.
    pub fn operations(&self) -> Vec<String> {
        self.operations.lock().expect("not poisoned").clone()
    }
}
