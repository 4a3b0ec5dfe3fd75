//! The sites' HTTPS certificates: `DATA/certs/SITE.pem` (the chain, leaf
//! first) and `DATA/certs/SITE.key` (its private key), chosen per handshake
//! by the TLS server name; a name with no certificate of its own gets the
//! `_default` site's. Installed through the admin API, or by writing the
//! two files (picked up within a second, no restart). A pair that does not
//! parse, or whose key is not the certificate's, is refused and the one
//! before keeps serving.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::names::DEFAULT_SITE;

/// How often the certificate files are looked at for changes.
const RESCAN: Duration = Duration::from_secs(1);

/// Why a certificate and key cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("no certificate (a PEM `CERTIFICATE` block) found")]
    NoCertificate,
    #[error("no private key (a PEM `PRIVATE KEY` block) found")]
    NoKey,
    #[error("the PEM text does not parse: {0}")]
    Pem(String),
    #[error("the key cannot be used, or is not the certificate's: {0}")]
    Mismatch(String),
    #[error("storage failed: {0}")]
    Storage(String),
}

/// A certificate and key, checked against each other.
fn certified(chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, CertError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem).collect::<Result<Vec<_>, _>>().map_err(|e| CertError::Pem(e.to_string()))?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => CertError::NoKey,
        e => CertError::Pem(e.to_string()),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| CertError::Mismatch(e.to_string()))?;
    // `from_der` lets a key whose public half it cannot see pass: refuse it.
    certified.keys_match().map_err(|e| CertError::Mismatch(e.to_string()))?;
    Ok(certified)
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The files' modification times when loaded.
    stamp: (SystemTime, SystemTime),
}

#[derive(Debug)]
pub struct Certificates {
    dir: PathBuf,
    tmp: PathBuf,
    sites: ArcSwap<HashMap<String, Arc<Loaded>>>,
    /// Handshakes that failed (not TLS, no certificate, a client that gave
    /// up), for the metrics.
    pub failed_handshakes: AtomicU64,
}

impl Certificates {
    /// The certificates under `dir` (created if missing); `tmp` is where new
    /// files are written before they are renamed into place.
    pub fn open(dir: PathBuf, tmp: PathBuf) -> std::io::Result<Arc<Certificates>> {
        std::fs::create_dir_all(&dir)?;
        let certs = Arc::new(Certificates { dir, tmp, sites: ArcSwap::default(), failed_handshakes: AtomicU64::new(0) });
        certs.rescan();
        Ok(certs)
    }

    fn files(&self, site: &str) -> (PathBuf, PathBuf) {
        (self.dir.join(format!("{site}.pem")), self.dir.join(format!("{site}.key")))
    }

    /// Checks `pem` (chain and key in one text) and, if good, stores it as
    /// the site's and serves it from the next handshake.
    pub fn install(&self, site: &str, pem: &[u8]) -> Result<(), CertError> {
        let key = certified(pem, pem)?;
        let (chain_file, key_file) = self.files(site);
        // The key first: a rescan between the two renames sees a new key
        // with the old chain, refuses the pair and keeps serving the old.
        let key_pem = pem_blocks(pem, "PRIVATE KEY");
        let chain_pem = pem_blocks(pem, "CERTIFICATE");
        let write =
            |path: &Path, text: &[u8]| crate::artifact::write_atomic(&self.tmp, path, text).map_err(|e| CertError::Storage(e.to_string()));
        write(&key_file, &key_pem)?;
        write(&chain_file, &chain_pem)?;
        let stamp = (modified(&chain_file).unwrap_or(SystemTime::UNIX_EPOCH), modified(&key_file).unwrap_or(SystemTime::UNIX_EPOCH));
        let mut sites = HashMap::clone(&self.sites.load());
        sites.insert(site.to_owned(), Arc::new(Loaded { key: Arc::new(key), stamp }));
        self.sites.store(Arc::new(sites));
        Ok(())
    }

    /// Brings the served certificates in line with the files: new or
    /// changed pairs load (a bad one is logged and the old one kept),
    /// removed ones stop serving.
    pub fn rescan(&self) {
        let current = self.sites.load();
        let mut next: HashMap<String, Arc<Loaded>> = HashMap::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(site) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".pem")) else { continue };
            if !crate::names::valid_site_name(site) {
                continue;
            }
            let (chain_file, key_file) = self.files(site);
            let (Some(chain_time), Some(key_time)) = (modified(&chain_file), modified(&key_file)) else { continue };
            let stamp = (chain_time, key_time);
            if let Some(loaded) = current.get(site).filter(|loaded| loaded.stamp == stamp) {
                next.insert(site.to_owned(), loaded.clone());
                continue;
            }
            let pair = std::fs::read(&chain_file).and_then(|chain| Ok((chain, std::fs::read(&key_file)?)));
            match pair.map_err(|e| CertError::Storage(e.to_string())).and_then(|(chain, key)| certified(&chain, &key)) {
                Ok(key) => {
                    tracing::info!(site, "HTTPS certificate loaded");
                    next.insert(site.to_owned(), Arc::new(Loaded { key: Arc::new(key), stamp }));
                }
                Err(e) => {
                    tracing::warn!(site, "HTTPS certificate in {} not used: {e}", chain_file.display());
                    if let Some(loaded) = current.get(site) {
                        // Remember the bad stamp so it is reported once.
                        next.insert(site.to_owned(), Arc::new(Loaded { key: loaded.key.clone(), stamp }));
                    }
                }
            }
        }
        let changed =
            next.len() != current.len() || next.iter().any(|(site, loaded)| !current.get(site).is_some_and(|c| Arc::ptr_eq(c, loaded)));
        if changed {
            self.sites.store(Arc::new(next));
        }
    }

    /// Rescans every second until the node stops.
    pub fn watch(self: &Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let certs = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RESCAN);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let certs = certs.clone();
                        let _ = tokio::task::spawn_blocking(move || certs.rescan()).await;
                    }
                    _ = stop.changed() => return,
                }
            }
        })
    }

    /// The certificate for a handshake naming `server_name`.
    pub fn for_name(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let sites = self.sites.load();
        let own = server_name.map(|name| name.trim_end_matches('.').to_ascii_lowercase()).and_then(|name| sites.get(&name).cloned());
        own.or_else(|| sites.get(DEFAULT_SITE).cloned()).map(|loaded| loaded.key.clone())
    }

    /// The rustls server configuration: certificates from here, HTTP/2 and
    /// HTTP/1.1 offered by ALPN.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    pub fn handshake_failed(&self) {
        self.failed_handshakes.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Resolver(Arc<Certificates>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.for_name(client_hello.server_name())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The PEM blocks of `text` whose label ends with `label` (`PRIVATE KEY`
/// covers `RSA PRIVATE KEY` and `EC PRIVATE KEY`), each with its lines.
fn pem_blocks(text: &[u8], label: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(text);
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(name) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) {
            inside = name.ends_with(label);
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
        if line.starts_with("-----END ") {
            inside = false;
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn a_pair_must_parse_and_match() {
        let (cert_a, key_a) = self_signed("a.test");
        let (_, key_b) = self_signed("b.test");
        assert!(certified(cert_a.as_bytes(), key_a.as_bytes()).is_ok());
        assert!(matches!(certified(cert_a.as_bytes(), key_b.as_bytes()), Err(CertError::Mismatch(_))), "another key");
        assert!(matches!(certified(b"", key_a.as_bytes()), Err(CertError::NoCertificate)));
        assert!(matches!(certified(cert_a.as_bytes(), b"nothing"), Err(CertError::NoKey)));
        let both = format!("{cert_a}{key_a}");
        assert_eq!(pem_blocks(both.as_bytes(), "CERTIFICATE"), cert_a.as_bytes());
        assert_eq!(pem_blocks(both.as_bytes(), "PRIVATE KEY"), key_a.as_bytes());
    }

    #[test]
    fn names_without_a_certificate_get_the_default_sites() {
        let dir = tempfile::TempDir::new().unwrap();
        let certs = Certificates::open(dir.path().join("certs"), dir.path().to_owned()).unwrap();
        assert!(certs.for_name(Some("a.test")).is_none(), "nothing installed");
        let (cert, key) = self_signed("a.test");
        certs.install("a.test", format!("{cert}{key}").as_bytes()).unwrap();
        assert!(certs.for_name(Some("A.Test.")).is_some());
        assert!(certs.for_name(Some("b.test")).is_none(), "no default yet");
        let (cert, key) = self_signed("localhost");
        certs.install(DEFAULT_SITE, format!("{cert}{key}").as_bytes()).unwrap();
        let default = certs.for_name(Some("b.test")).unwrap();
        assert!(Arc::ptr_eq(&default, &certs.for_name(None).unwrap()));
        // What was installed is on disk and loads again.
        let reopened = Certificates::open(dir.path().join("certs"), dir.path().to_owned()).unwrap();
        assert!(reopened.for_name(Some("a.test")).is_some() && reopened.for_name(Some("zzz")).is_some());
    }
}
