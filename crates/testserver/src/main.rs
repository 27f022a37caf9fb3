//! `s3syncfs-testserver`: the test S3 server as a process, for the demo and benchmarks.
//! Bodies are kept under --data-dir; the index is in memory and lost at exit.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use s3syncfs_testserver::{Backend, Server};

#[derive(Parser)]
#[command(about = "A small S3 API server for tests and demos (127.0.0.1 only)")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: SocketAddr,
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long)]
    access_key: String,
    #[arg(long)]
    secret_key: String,
    /// Buckets to create at start.
    #[arg(long)]
    bucket: Vec<String>,
    /// Milliseconds every request waits before it is handled, to play a server that
    /// far away (benchmarks).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let backend = Backend::new(&args.data_dir)?;
    for bucket in &args.bucket {
        backend.create_bucket(bucket);
    }
    let latency = std::time::Duration::from_millis(args.latency_ms);
    let server = Server::start_with_latency(
        backend,
        args.addr,
        &args.access_key,
        &args.secret_key,
        latency,
    )
    .await?;
    println!("listening on {}", server.endpoint());
    std::io::stdout().flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    server.stop().await;
    Ok(())
}
