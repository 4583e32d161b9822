//! Certificates for verified custom domains, ordered from an ACME authority
//! (`[domains.acme]`) with HTTP-01 or TLS-ALPN-01 challenges, whose answers
//! are stored for the router to give.
//!
//! Only a host with a verified claim whose DNS points here is ever ordered:
//! a name a client merely asks for never is. One issuer orders at a time
//! (the `acme` lease, so any number of API processes may run), one order at
//! a time, within a budget of orders per window across all hosts. A host
//! whose order failed waits `retry_seconds`, doubled after each further
//! failure up to a day. A certificate is renewed `renew_days` before it
//! expires (or at two thirds of its life, if that comes later); a host
//! whose last verified claim goes loses its certificate and is not ordered
//! again, and an order that completes after that stores nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use instant_acme::{
    Account, AccountBuilder, AccountCredentials, AuthorizationStatus, ChallengeHandle, ChallengeType, Identifier,
    NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use sesame_config::AcmeChallenge;
use sesame_store::{AcmeHost, CertificateRow};

use crate::ApiState;

const LEASE: &str = "acme";
/// Lease time, renewed every third of it while orders run: a process that
/// dies mid-round is taken over within this long.
const LEASE_MS: u64 = 15_000;
/// The longest a host waits after failed orders.
const MAX_RETRY_SECONDS: u64 = 86_400;
/// How long an order may take to be validated, and its certificate to be issued.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);
/// Hosts looked at per query.
const BATCH: u32 = 20;

/// Orders certificates until the process ends: woken when a domain goes
/// live, and every `[domains] check_seconds` for renewals, retries and
/// what another process verified.
pub(crate) async fn issue_in_background(state: Arc<ApiState>) {
    let Some(config) = state.project.site.config.domains.acme.clone() else { return };
    // The authority is reached over rustls; one provider for the process.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let every = Duration::from_secs(state.project.site.config.domains.check_seconds);
    let holder = format!("acme-{}", random_hex());
    let mut issuer = Issuer { holder, state, config, account: None, budget_spent: false };
    loop {
        tokio::select! {
            () = issuer.state.acme_wake.notified() => {}
            () = tokio::time::sleep(every) => {}
        }
        if let Err(e) = issuer.round().await {
            tracing::warn!(error = %e, "cannot order certificates now");
        }
    }
}

struct Issuer {
    state: Arc<ApiState>,
    config: sesame_config::Acme,
    holder: String,
    /// The account, once read or created.
    account: Option<Account>,
    /// The budget was spent at the last try (said once, not every round).
    budget_spent: bool,
}

impl Issuer {
    /// Orders a certificate for each host due one, holding the `acme` lease
    /// meanwhile (renewed in the background, given back at the end, so a
    /// restarted process, or another, goes on at once).
    async fn round(&mut self) -> Result<(), String> {
        let (store, holder) = (self.state.project.store.clone(), self.holder.clone());
        if !store.acquire_lease(LEASE, &holder, LEASE_MS).await.map_err(|e| e.to_string())? {
            return Ok(());
        }
        let lost = Arc::new(AtomicBool::new(false));
        let (renewing, flag) = (store.clone(), lost.clone());
        let renewal = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(LEASE_MS / 3)).await;
                if !renewing.acquire_lease(LEASE, &holder, LEASE_MS).await.unwrap_or(false) {
                    flag.store(true, Ordering::Relaxed);
                    return;
                }
            }
        });
        let worked = self.order_due(&lost).await;
        renewal.abort();
        if let Err(e) = store.release_lease(LEASE, &self.holder).await {
            tracing::warn!(error = %e, "cannot give back the certificate lease; it will expire");
        }
        worked
    }

    /// Orders certificates for the hosts due one until none is, the budget
    /// is spent or the lease is `lost`.
    async fn order_due(&mut self, lost: &AtomicBool) -> Result<(), String> {
        let store = self.state.project.store.clone();
        let renew = i64::from(self.config.renew_days) * 86_400;
        let window = i64::from(self.config.window_hours) * 3_600;
        loop {
            let now = sesame_model::time::now();
            let hosts = store.hosts_to_certify(now, renew, BATCH).await.map_err(|e| e.to_string())?;
            if hosts.is_empty() {
                return Ok(());
            }
            let account = self.account().await?;
            for host in hosts {
                if lost.load(Ordering::Relaxed) {
                    tracing::warn!("the certificate lease was lost: another process orders now");
                    return Ok(());
                }
                let now = sesame_model::time::now();
                let budget = self.config.orders_per_window;
                if !store.place_order(&host, now, now - window, budget).await.map_err(|e| e.to_string())? {
                    metrics::counter!("sesame_acme_budget_spent_total").increment(1);
                    if !self.budget_spent {
                        tracing::warn!(
                            budget,
                            hours = self.config.window_hours,
                            "the certificate order budget is spent; hosts wait for the window to move"
                        );
                    }
                    self.budget_spent = true;
                    return Ok(());
                }
                self.budget_spent = false;
                metrics::counter!("sesame_acme_orders_total").increment(1);
                match self.order(&account, &host).await {
                    Ok(certificate) => {
                        if store.put_certificate(&certificate).await.map_err(|e| e.to_string())? {
                            metrics::counter!("sesame_acme_issued_total").increment(1);
                            tracing::info!(%host, not_after = certificate.not_after, "certificate issued");
                            self.state.domains_changed().await;
                        } else {
                            metrics::counter!("sesame_acme_discarded_total").increment(1);
                            tracing::info!(%host, "certificate issued for a domain removed meanwhile: not kept");
                        }
                    }
                    Err(problem) => self.failed(&host, problem).await?,
                }
            }
        }
    }

    /// Records a failed order: the host waits before it is ordered again.
    async fn failed(&self, host: &str, problem: String) -> Result<(), String> {
        metrics::counter!("sesame_acme_failed_orders_total").increment(1);
        tracing::warn!(%host, %problem, "a certificate order failed");
        let store = &self.state.project.store;
        let before = store.acme_host(host).await.map_err(|e| e.to_string())?;
        let failures = before.map_or(0, |b| b.failures).saturating_add(1);
        let wait = retry_wait(self.config.retry_seconds, failures);
        // Due times are whole seconds: counted from the next one, so the host
        // waits at least `wait` (from the current one, a failure late in a
        // second was retried up to a second early).
        let next_second = (sesame_model::time::now_ms() + 999).div_euclid(1000);
        let retry_at = next_second.saturating_add(i64::try_from(wait).unwrap_or(i64::MAX));
        let row = AcmeHost { host: host.to_string(), failures, retry_at, problem };
        store.put_acme_host(&row).await.map_err(|e| e.to_string())
    }

    /// The account orders are placed with: the stored one, or a new one
    /// stored for every issuer after.
    async fn account(&mut self) -> Result<Account, String> {
        if let Some(account) = &self.account {
            return Ok(account.clone());
        }
        let store = &self.state.project.store;
        let directory = &self.config.directory;
        let restore = |text: &str| -> Result<AccountCredentials, String> {
            serde_json::from_str(text).map_err(|e| format!("the stored ACME account cannot be read: {e}"))
        };
        let account = match store.acme_account(directory).await.map_err(|e| e.to_string())? {
            Some(text) => self.builder()?.from_credentials(restore(&text)?).await.map_err(|e| e.to_string())?,
            None => {
                let contact: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
                let new = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
                let (account, credentials) = self
                    .builder()?
                    .create(&new, directory.clone(), None)
                    .await
                    .map_err(|e| format!("creating an account at {directory}: {e}"))?;
                let text = serde_json::to_string(&credentials).map_err(|e| e.to_string())?;
                let now = sesame_model::time::now();
                let stored = store.put_acme_account(directory, &text, now).await.map_err(|e| e.to_string())?;
                if stored == text {
                    account
                } else {
                    // Another issuer stored one first: use that one.
                    self.builder()?.from_credentials(restore(&stored)?).await.map_err(|e| e.to_string())?
                }
            }
        };
        self.account = Some(account.clone());
        Ok(account)
    }

    fn builder(&self) -> Result<AccountBuilder, String> {
        let made = match &self.config.root_certificate {
            Some(file) => Account::builder_with_root(self.state.project.dir.join(file)),
            None => Account::builder(),
        };
        made.map_err(|e| format!("cannot reach ACME authorities: {e}"))
    }

    /// Orders a certificate for `host`; what went wrong, in words.
    async fn order(&self, account: &Account, host: &str) -> Result<CertificateRow, String> {
        let identifiers = [Identifier::Dns(host.to_string())];
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await.map_err(|e| e.to_string())?;
        let mut tokens = Vec::new();
        let issued = self.validate_and_issue(&mut order, host, &mut tokens).await;
        let store = &self.state.project.store;
        for token in tokens {
            let dropped = match self.config.challenge {
                AcmeChallenge::Http01 => store.drop_challenge(&token).await,
                AcmeChallenge::TlsAlpn01 => store.drop_alpn_challenge(host).await,
            };
            if let Err(e) = dropped {
                tracing::warn!(error = %e, "cannot drop a challenge answer");
            }
        }
        issued
    }

    /// Stores the answer to `challenge` for `host`, where the router finds it.
    async fn answer(&self, host: &str, challenge: &ChallengeHandle<'_>) -> Result<(), String> {
        let store = &self.state.project.store;
        let now = sesame_model::time::now();
        let answer = challenge.key_authorization();
        match self.config.challenge {
            AcmeChallenge::Http01 => store.put_challenge(&challenge.token, host, answer.as_str(), now).await,
            AcmeChallenge::TlsAlpn01 => {
                // RFC 8737: a self-signed certificate for the host carrying
                // the digest of the key authorization.
                let made = rcgen::CertificateParams::new(vec![host.to_string()]).and_then(|mut params| {
                    params.custom_extensions =
                        vec![rcgen::CustomExtension::new_acme_identifier(answer.digest().as_ref())];
                    let key = rcgen::KeyPair::generate()?;
                    Ok((params.self_signed(&key)?, key))
                });
                let (certificate, key) = made.map_err(|e| format!("making the challenge certificate: {e}"))?;
                store.put_alpn_challenge(host, &certificate.pem(), &key.serialize_pem(), now).await
            }
        }
        .map_err(|e| e.to_string())
    }

    async fn validate_and_issue(
        &self,
        order: &mut Order,
        host: &str,
        tokens: &mut Vec<String>,
    ) -> Result<CertificateRow, String> {
        let mut authorizations = order.authorizations();
        while let Some(next) = authorizations.next().await {
            let mut authorization = next.map_err(|e| e.to_string())?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("the authority's authorization is {other:?}")),
            }
            let kind = match self.config.challenge {
                AcmeChallenge::Http01 => ChallengeType::Http01,
                AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            };
            let mut challenge =
                authorization.challenge(kind.clone()).ok_or(format!("the authority offers no {kind:?} challenge"))?;
            self.answer(host, &challenge).await?;
            tokens.push(challenge.token.clone());
            challenge.set_ready().await.map_err(|e| e.to_string())?;
        }
        let retries = RetryPolicy::new().timeout(ORDER_TIMEOUT);
        let status = order.poll_ready(&retries).await.map_err(|e| e.to_string())?;
        if status != OrderStatus::Ready {
            return Err(why_not_ready(order, status).await);
        }
        let key = order.finalize().await.map_err(|e| e.to_string())?;
        let chain = order.poll_certificate(&retries).await.map_err(|e| e.to_string())?;
        let not_after = not_after(&chain)?;
        let now = sesame_model::time::now();
        Ok(CertificateRow { host: host.to_string(), chain, key, not_after, issued: now, first_issued: now })
    }
}

/// Why an order did not become ready: the authority's own words when it
/// gave them (the order's problem, or a challenge's).
async fn why_not_ready(order: &mut Order, status: OrderStatus) -> String {
    if let Some(problem) = &order.state().error {
        return format!("validation failed: {problem}");
    }
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        if let Ok(state) = authorization.refresh().await
            && let Some(problem) = state.challenges.iter().find_map(|c| c.error.as_ref())
        {
            return format!("validation failed: {problem}");
        }
    }
    format!("the order is {status:?}")
}

/// When the first certificate of a PEM chain expires (Unix seconds).
fn not_after(chain: &str) -> Result<i64, String> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(chain.as_bytes()).map_err(|e| format!("the issued chain is not PEM: {e}"))?;
    let certificate = pem.parse_x509().map_err(|e| format!("the issued certificate cannot be read: {e}"))?;
    Ok(certificate.validity().not_after.timestamp())
}

/// The wait after `failures` failed orders in a row: `first`, doubled after
/// each further one, up to a day.
fn retry_wait(first: u64, failures: u32) -> u64 {
    let doublings = failures.saturating_sub(1).min(32);
    first.saturating_mul(1u64 << doublings).min(MAX_RETRY_SECONDS)
}

fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    // A holder name only tells issuers apart: a failure leaves it zero.
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_orders_wait_longer_each_time_up_to_a_day() {
        assert_eq!([1, 2, 3, 4].map(|f| retry_wait(300, f)), [300, 600, 1_200, 2_400]);
        assert_eq!(retry_wait(300, 20), MAX_RETRY_SECONDS);
        assert_eq!(retry_wait(u64::MAX, u32::MAX), MAX_RETRY_SECONDS);
    }
}
