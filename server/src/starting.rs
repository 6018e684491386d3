//! The gRPC port while memd starts.
//!
//! Opening a server loads the embedding model, the stored vectors and brings the search
//! indexes in line with RocksDB: from a fraction of a second on an empty directory to minutes
//! when an index is rebuilt. Meanwhile the port already answers: gRPC health says
//! NOT_SERVING (for the whole server and for each memd service) and every other call gets
//! UNAVAILABLE "memd is starting", which clients retry, instead of a refused connection that
//! an orchestrator's probe cannot tell from a crash. Once the server is open this stand-in
//! stops accepting; connections it holds are told to go away (HTTP/2 GOAWAY) and clients
//! reconnect to the real services on the same listener.

use crate::grpc::{control::ControlApi, memory::MemoryApi, workers::WorkerApi};
use memd_proto::v1::control_service_server::ControlServiceServer;
use memd_proto::v1::extraction_worker_service_server::ExtractionWorkerServiceServer;
use memd_proto::v1::memory_service_server::MemoryServiceServer;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::ServerTlsConfig;
use tonic_health::ServingStatus;

/// How long connections held by the stand-in get to finish once the server is open (health
/// watches never finish on their own).
const HANDOVER_GRACE: Duration = Duration::from_millis(500);

/// The stand-in, answering on the listener until [`Starting::finish`].
#[derive(Debug)]
pub struct Starting {
    listener: Arc<TcpListener>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Accepted connections of a shared listener, with Nagle's algorithm off (small unary calls).
pub fn accept(
    listener: Arc<TcpListener>,
) -> impl futures::Stream<Item = std::io::Result<TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((accepted, listener))
    })
}

impl Starting {
    /// Starts answering on `listener` (with `tls` when the server uses it).
    pub async fn answer(
        listener: TcpListener,
        tls: Option<ServerTlsConfig>,
    ) -> Result<Self, tonic::transport::Error> {
        let listener = Arc::new(listener);
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        reporter
            .set_not_serving::<ControlServiceServer<ControlApi>>()
            .await;
        reporter
            .set_not_serving::<MemoryServiceServer<MemoryApi>>()
            .await;
        reporter
            .set_not_serving::<ExtractionWorkerServiceServer<WorkerApi>>()
            .await;
        let routes = tonic::service::Routes::new(health)
            .into_axum_router()
            .fallback(|| async {
                tonic::Status::unavailable("memd is starting; retry shortly")
                    .into_http::<axum::body::Body>()
            });
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls)?;
        }
        let (stop, stopped) = oneshot::channel::<()>();
        // Errors of accepted connections (a failed TLS handshake) are skipped, as the real
        // server does, rather than ending the stand-in.
        let incoming = futures::StreamExt::filter_map(accept(listener.clone()), |conn| async {
            conn.ok().map(Ok::<_, std::io::Error>)
        });
        let serving = builder
            .add_routes(tonic::service::Routes::from(routes))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            });
        let task = tokio::spawn(async move {
            if let Err(err) = serving.await {
                tracing::warn!(%err, "the start-up health endpoint failed");
            }
        });
        Ok(Self {
            listener,
            stop,
            task,
        })
    }

    /// Stops answering and gives the listener back for the real services.
    pub async fn finish(self) -> TcpListener {
        let Self {
            listener,
            stop,
            mut task,
        } = self;
        let _ = stop.send(());
        if tokio::time::timeout(HANDOVER_GRACE, &mut task)
            .await
            .is_err()
        {
            task.abort();
            let _ = task.await;
        }
        Arc::try_unwrap(listener)
            .expect("the stand-in has ended, and with it its handle on the listener")
    }
}
