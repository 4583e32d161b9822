//! HTTPS for custom domains: each verified host's certificate, from the
//! metadata store, chosen by the name a client asks for (SNI). A name with
//! no certificate ends the handshake at once: nothing is issued for it and
//! nothing else is read.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sesame_store::CertificateRow;

/// How long a host must have had a certificate before HTTPS is made
/// strict (HSTS): a certificate that does not hold is found out first.
const HSTS_AFTER_SECONDS: i64 = 7 * 86_400;

/// The certificates served, by host.
#[derive(Debug, Default)]
pub struct Certificates {
    by_host: RwLock<Arc<HashMap<String, Served>>>,
    /// Woken when a host gets its first certificate here.
    added: tokio::sync::Notify,
}

#[derive(Debug, Clone)]
struct Served {
    key: Arc<CertifiedKey>,
    /// When this certificate was issued (a changed one is read again).
    issued: i64,
    /// Since when the host has had one.
    since: i64,
}

impl Certificates {
    /// Serves `rows` from now on; a certificate that cannot be read is
    /// left out, with a warning naming its host. One already served is
    /// not read again.
    pub(crate) fn replace(&self, rows: &[CertificateRow]) {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let before = self.by_host.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut by_host = HashMap::with_capacity(rows.len());
        for row in rows {
            let kept = before.get(&row.host).filter(|s| s.issued == row.issued).map(|s| s.key.clone());
            let read = || {
                let key = certified_key(&provider, &row.chain, &row.key)?;
                key.keys_match().map_err(|e| format!("its key does not match its certificate: {e}"))?;
                Ok::<_, String>(Arc::new(key))
            };
            match kept.map_or_else(read, Ok) {
                Ok(key) => {
                    by_host.insert(row.host.clone(), Served { key, issued: row.issued, since: row.first_issued });
                }
                Err(e) => tracing::warn!(host = %row.host, error = %e, "cannot read a stored certificate"),
            }
        }
        let added = by_host.keys().any(|host| !before.contains_key(host));
        *self.by_host.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(by_host);
        if added {
            self.added.notify_waiters();
        }
    }

    /// Waits until `host` has a certificate, at most `limit`.
    pub(crate) async fn wait_for(&self, host: &str, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Listening before looking: a certificate added in between wakes us.
            let added = self.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            if self.has(host) || tokio::time::timeout_at(deadline, added).await.is_err() {
                return;
            }
        }
    }

    /// Whether `host` has a certificate.
    pub fn has(&self, host: &str) -> bool {
        self.by_host.read().unwrap_or_else(|e| e.into_inner()).contains_key(host)
    }

    /// Whether `host` has had a certificate long enough to send HSTS.
    pub fn strict(&self, host: &str) -> bool {
        let since = self.by_host.read().unwrap_or_else(|e| e.into_inner()).get(host).map(|s| s.since);
        since.is_some_and(|since| sesame_model::time::now() - since >= HSTS_AFTER_SECONDS)
    }

    /// Hosts with a certificate.
    pub fn len(&self) -> usize {
        self.by_host.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no host has one.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn certified_key(provider: &rustls::crypto::CryptoProvider, chain: &str, key: &str) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("its chain: {e}"))?;
    if chain.is_empty() {
        return Err("its chain holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| format!("its key: {e}"))?;
    let signing = provider.key_provider.load_private_key(key).map_err(|e| format!("its key: {e}"))?;
    Ok(CertifiedKey::new(chain, signing))
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.trim_end_matches('.').to_ascii_lowercase();
        let found = self.by_host.read().unwrap_or_else(|e| e.into_inner()).get(&name).map(|s| s.key.clone());
        if found.is_none() {
            metrics::counter!("sesame_tls_unknown_names_total").increment(1);
        }
        found
    }
}

/// The TLS settings of the HTTPS listener: TLS 1.2 and 1.3 (the provider's
/// safe defaults), HTTP/1.1, certificates from `certificates`.
pub fn server_config(certificates: Arc<Certificates>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS settings answering a TLS-ALPN-01 validation with the challenge
/// certificate `chain` and its `key` (PEM): `acme-tls/1` only.
pub(crate) fn challenge_config(chain: &str, key: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // Not checked against its key as stored certificates are: its critical
    // acmeIdentifier extension is one webpki does not read.
    let certified = Arc::new(certified_key(&provider, chain, key)?);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    Ok(Arc::new(config))
}
