//! A small accept loop around hyper's HTTP/1 connection driver.
//!
//! `axum::serve` cannot abort a single connection from inside a handler, which
//! the [`Fault::Drop`](crate::Fault::Drop) fault needs. Here every request
//! carries a [`ConnectionKiller`] for its connection; when a handler triggers
//! it, the connection future is dropped, closing the socket without writing
//! any response bytes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower_service::Service;

/// Closes the connection a request arrived on (a request extension).
#[derive(Clone, Debug)]
pub(crate) struct ConnectionKiller(Arc<Notify>);

impl ConnectionKiller {
    pub(crate) fn kill(&self) {
        self.0.notify_one();
    }
}

/// Serves `router` on `listener` in a background task.
pub(crate) fn spawn(listener: TcpListener, router: Router) {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _peer)) => {
                    tokio::spawn(serve_connection(stream, router.clone()));
                }
                Err(error) => {
                    // E.g. too many open files: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
}

async fn serve_connection(stream: TcpStream, router: Router) {
    // Best effort: small request/response exchanges should not wait on Nagle.
    let _ = stream.set_nodelay(true);
    let notify = Arc::new(Notify::new());
    let killer = ConnectionKiller(Arc::clone(&notify));
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(killer.clone());
        let mut router = router.clone();
        async move { router.call(request).await }
    });
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        () = notify.notified() => {
            // Dropping the connection future closes the socket mid-request.
            tracing::debug!("connection dropped by fault");
        }
    }
}

/// Logs one line per answered request: method, path and status (never bodies).
pub(crate) async fn log_request(request: Request, next: axum::middleware::Next) -> axum::response::Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::info!("{method} {path} -> {}", response.status().as_u16());
    response
}
