//! The TLS listener: accepts TCP connections, runs each TLS handshake in its own task (a slow
//! or silent client holds up nobody), and hands finished connections to the gRPC server.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use fleet_api::tasks::spawn_named;

pub use crate::limits::MAX_CONCURRENT_HANDSHAKES;

/// A handshake that has not finished in this time is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished connections waiting for the gRPC server to take them.
const READY_QUEUE: usize = 64;

/// The connections for `tonic::transport::Server::serve_with_incoming_shutdown`, and the task
/// that accepts them (abort it to stop accepting).
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<tokio_rustls::rustls::ServerConfig>,
) -> (
    ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (ready, incoming) = mpsc::channel(READY_QUEUE);
    let acceptor = TlsAcceptor::from(config);
    let handshakes = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    let accept = async move {
        loop {
            let Ok(permit) = handshakes.clone().acquire_owned().await else {
                return;
            };
            let (tcp, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little, do not spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let sender = ready.clone();
            spawn_named("tls-handshake", async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%remote, %error, "TLS handshake failed");
                    }
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                }
            });
            if ready.is_closed() {
                return;
            }
        }
    };
    (ReceiverStream::new(incoming), accept)
}
