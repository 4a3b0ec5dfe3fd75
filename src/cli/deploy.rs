//! `terrafirma deploy`: upload a module through the admin API and print
//! what the node answered.

use std::path::PathBuf;

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Args)]
pub struct DeployCommand {
    /// The module: .wasm binary or .wat text
    file: PathBuf,
    /// Site (host name) to deploy to
    #[arg(long, default_value = "_default")]
    site: String,
    /// Module name [default: the file stem]
    #[arg(long)]
    name: Option<String>,
    /// Admin API of the node
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    node: String,
    /// Admin token (operator's or the site's)
    #[arg(long, env = "TERRAFIRMA_TOKEN")]
    token: Option<String>,
}

impl DeployCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let bytes = std::fs::read(&self.file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", self.file.display()))?;
        let name = match self.name {
            Some(name) => name,
            None => self
                .file
                .file_stem()
                .and_then(|s| s.to_str())
                .ok_or_else(|| anyhow::anyhow!("cannot take a module name from {}; use --name", self.file.display()))?
                .to_owned(),
        };
        let url = format!("{}/v1/sites/{}/modules/{}", self.node.trim_end_matches('/'), self.site, name);
        let mut request = hyper::Request::put(&url);
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Full::new(Bytes::from(bytes)))?;
        super::tokio_runtime()?.block_on(async {
            let client = Client::builder(TokioExecutor::new()).build_http();
            let response = client.request(request).await.map_err(|e| anyhow::anyhow!("cannot reach {}: {e}", self.node))?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            println!("{}", String::from_utf8_lossy(&body).trim_end());
            Ok(if status.is_success() { libc::EXIT_SUCCESS } else { libc::EXIT_FAILURE })
        })
    }
}
