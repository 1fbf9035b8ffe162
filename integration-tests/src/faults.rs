//! Network faults the stand-ins cannot make by themselves, on real loopback sockets: a
//! server that accepts connections and never answers, and a proxy that cuts a connection
//! once in the middle of a transfer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A runtime of its own, so the fault keeps working while the test blocks.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Accepts every connection and holds it open without a byte of answer: a hung server.
#[derive(Debug)]
pub struct Blackhole {
    pub address: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl Blackhole {
    pub fn start() -> Self {
        let runtime = runtime();
        let listener =
            runtime.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind a loopback port");
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

/// Forwards connections to `upstream`; the first time a connection has sent `cut_after`
/// bytes back to its client, it is closed in the middle of the transfer. Later connections
/// (a retry) pass untouched.
#[derive(Debug)]
pub struct CuttingProxy {
    pub address: SocketAddr,
    cuts: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

impl CuttingProxy {
    pub fn start(upstream: SocketAddr, cut_after: usize) -> Self {
        let runtime = runtime();
        let listener =
            runtime.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind a loopback port");
        let address = listener.local_addr().expect("address");
        let cuts = Arc::new(AtomicUsize::new(0));
        let cut_done = Arc::new(AtomicBool::new(false));
        let counter = Arc::clone(&cuts);
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else { continue };
                let (cut_done, counter) = (Arc::clone(&cut_done), Arc::clone(&counter));
                tokio::spawn(relay(client, server, cut_after, cut_done, counter));
            }
        });
        Self { address, cuts, _runtime: runtime }
    }

    /// How many connections were cut (0 or 1).
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    cut_after: usize,
    cut_done: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upload = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    });
    let mut sent = 0;
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        let read = match server_read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if sent + read > cut_after && !cut_done.swap(true, Ordering::SeqCst) {
            // What fits under the limit, then the connection ends mid-transfer.
            let _ = client_write.write_all(&buffer[..(cut_after - sent).min(read)]).await;
            cuts.fetch_add(1, Ordering::SeqCst);
            upload.abort();
            return;
        }
        if client_write.write_all(&buffer[..read]).await.is_err() {
            break;
        }
        sent += read;
    }
    let _ = client_write.shutdown().await;
    let _ = upload.await;
}
