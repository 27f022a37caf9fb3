//! Serving a `Backend` over HTTP with SigV4 auth; stop() drops every connection so
//! tests can simulate the endpoint going away and coming back on the same port.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::{service_fn, Service};
use hyper::Request;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::backend::Backend;

pub struct Server {
    addr: SocketAddr,
    accept: JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Server {
    /// Serves `backend` on `addr` (port 0 picks a free one) until `stop`.
    pub async fn start(
        backend: Backend,
        addr: SocketAddr,
        access_key: &str,
        secret_key: &str,
    ) -> std::io::Result<Server> {
        Server::start_with_latency(backend, addr, access_key, secret_key, Duration::ZERO).await
    }

    /// Like `start`, but every request waits `latency` before it is handled: a server
    /// that far away (one round trip per request), for benchmarks on 127.0.0.1.
    pub async fn start_with_latency(
        backend: Backend,
        addr: SocketAddr,
        access_key: &str,
        secret_key: &str,
        latency: Duration,
    ) -> std::io::Result<Server> {
        let s3 = {
            let mut builder = S3ServiceBuilder::new(backend);
            builder.set_auth(SimpleAuth::from_single(access_key, secret_key));
            builder.build()
        };
        let service = service_fn(move |request: Request<Incoming>| {
            let response = Service::call(&s3, request);
            async move {
                if !latency.is_zero() {
                    tokio::time::sleep(latency).await;
                }
                response.await
            }
        });
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let accept = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let (socket, _) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(err) => {
                        tracing::warn!(%err, "accept failed");
                        continue;
                    }
                };
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                let mut stopped = stopped.clone();
                connections.spawn(async move {
                    tokio::select! {
                        _ = conn => {}
                        _ = stopped.changed() => {}
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Server { addr, accept, stop })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the listening socket and every open connection.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.accept.abort();
        let _ = self.accept.await;
    }
}
