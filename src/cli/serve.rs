//! `terrafirma serve`: run the node until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use terrafirma::config::{Config, Overrides};
use terrafirma::node::Node;

#[derive(Args)]
pub struct ServeCommand {
    /// Address of the sites' HTTP server [default: 127.0.0.1:8080]
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address of the sites' HTTPS server (certificates in DATA/certs) [default: off]
    #[arg(long)]
    tls_listen: Option<SocketAddr>,
    /// Address of the admin API [default: 127.0.0.1:8081]
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Data directory [default: ./terrafirma-data]
    #[arg(long)]
    data: Option<PathBuf>,
    /// TOML configuration file
    #[arg(long)]
    config: Option<PathBuf>,
    /// Join a fleet through this NATS JetStream server (nats://HOST:PORT) [default: the file's [fleet], else none]
    #[arg(long)]
    fleet: Option<String>,
}

impl ServeCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        super::init_logging("info,cranelift=warn,wasmtime=warn,access=info");
        let overrides =
            Overrides { listen: self.listen, tls_listen: self.tls_listen, admin: self.admin, data: self.data, fleet: self.fleet };
        let config = Config::load(self.config.as_deref(), &overrides)?;
        super::tokio_runtime()?.block_on(async {
            let node = Node::start(config).await?;
            // Always printed, whatever the log level: scripts and tests read
            // the bound addresses (port 0 picks a free one) from here.
            eprintln!("terrafirma: serving sites on http://{} and the admin API on http://{}", node.http_addr, node.admin_addr);
            if let Some(tls) = node.tls_addr {
                eprintln!("terrafirma: serving sites over HTTPS on https://{tls}");
            }
            shutdown_signal().await;
            tracing::info!("shutting down");
            node.shutdown().await;
            Ok(libc::EXIT_SUCCESS)
        })
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
