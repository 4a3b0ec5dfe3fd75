//! A running node: runtime, module store, drop folder, site server and admin
//! server, started together and stopped together.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::AdminServer;
use crate::config::Config;
use crate::engine::EngineShape;
use crate::executor::Runtime;
use crate::modules::ModuleStore;
use crate::modules::watcher::DropFolder;
use crate::outbound::Net;
use crate::server::SiteServer;
use crate::server::listener::{Stop, Tls, serve};

pub struct Node;

pub struct RunningNode {
    /// Where the sites are served (the bound address, port resolved).
    pub http_addr: SocketAddr,
    /// Where the sites are served over HTTPS, when `tls_listen` is set.
    pub tls_addr: Option<SocketAddr>,
    /// Where the admin API is served.
    pub admin_addr: SocketAddr,
    pub store: Arc<ModuleStore>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    drop_folder: DropFolder,
    /// Apply the fleet's deployments and KV writes, in a fleet.
    followers: Vec<JoinHandle<()>>,
}

impl Node {
    /// Validates the config, loads every module under `DATA/sites`
    /// (recompiling only what has no artifact), then binds and serves.
    pub async fn start(config: Config) -> anyhow::Result<RunningNode> {
        config.validate()?;
        let config = Arc::new(config);
        // Bound first: the guests' client must know the admin address to refuse it.
        let site_listener = TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
        let admin_listener = TcpListener::bind(config.admin).await.with_context(|| format!("cannot listen on {}", config.admin))?;
        let tls_listener = match config.tls_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?),
            None => None,
        };
        let http_addr = site_listener.local_addr()?;
        let tls_addr = tls_listener.as_ref().map(TcpListener::local_addr).transpose()?;
        let admin_addr = admin_listener.local_addr()?;
        let runtime = Runtime::new(EngineShape::from_config(&config)).context("cannot create the wasm engine")?;
        tracing::info!("{}", runtime.slot_reset.reason);
        let net = Net::new(Some(admin_addr)).context("cannot set up outbound HTTP and DNS")?;
        let fleet = match &config.fleet {
            Some(fleet) => Some(crate::fleet::Fleet::connect(fleet, &config.data).await.context("cannot set up the fleet's NATS client")?),
            None => None,
        };
        let store = ModuleStore::open(runtime, config.clone(), net, fleet.clone())
            .with_context(|| format!("cannot open the data directory {}", config.data.display()))?;
        store.rescan(crate::modules::Scan::Start).await;
        let followers = match fleet {
            Some(fleet) => vec![fleet.follow(store.clone()), fleet.follow_kv(store.clone())],
            None => Vec::new(),
        };

        if config.admin_token.is_none() && config.sites.values().all(|s| s.token.is_none()) && !admin_addr.ip().is_loopback() {
            tracing::warn!("no admin token configured: the admin API on {admin_addr} answers loopback clients only");
        }

        let (stop, stopped) = watch::channel(false);
        let certs = store.certs.clone();
        let mut servers = vec![certs.watch(stopped.clone())];
        let sites = Arc::new(SiteServer::new(config.clone(), store.clone()));
        if let Some(listener) = tls_listener {
            let tls = Tls { acceptor: tokio_rustls::TlsAcceptor::from(certs.server_config()), certs: certs.clone() };
            let sites = sites.clone();
            servers.push(tokio::spawn(serve(
                listener,
                config.http,
                Some(tls),
                move |peer, request| {
                    let sites = sites.clone();
                    async move { sites.handle(peer, request).await }
                },
                Stop { signal: stopped.clone(), drain: config.drain },
            )));
        }
        let admin = Arc::new(AdminServer::new(config.clone(), store.clone()));
        servers.extend([
            tokio::spawn(serve(
                site_listener,
                config.http,
                None,
                move |peer, request| {
                    let sites = sites.clone();
                    async move { sites.handle(peer, request).await }
                },
                Stop { signal: stopped.clone(), drain: config.drain },
            )),
            tokio::spawn(serve(
                admin_listener,
                config.http,
                None,
                move |peer, request| {
                    let admin = admin.clone();
                    async move { admin.handle(peer, request).await }
                },
                Stop { signal: stopped, drain: config.drain },
            )),
        ]);
        let drop_folder = DropFolder::start(store.clone());
        tracing::info!(%http_addr, ?tls_addr, %admin_addr, data = %config.data.display(), "serving");
        Ok(RunningNode { http_addr, tls_addr, admin_addr, store, stop, servers, drop_folder, followers })
    }
}

impl RunningNode {
    /// Stops accepting, lets the requests in flight finish (up to the
    /// config's drain deadline), waits for the drop folder, then lets go of
    /// every module and flushes and closes the KV stores.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for server in self.servers {
            let _ = server.await;
        }
        self.drop_folder.stop().await;
        for follower in self.followers {
            follower.abort();
            let _ = follower.await;
        }
        self.store.close().await;
    }
}
