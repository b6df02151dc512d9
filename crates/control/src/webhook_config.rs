//! The leader keeps the webhook configurations pointing at trellisd
//! trusting its serving certificate, as istiod's webhook controllers do:
//! the mesh roots go into every webhook's `clientConfig.caBundle` of the
//! MutatingWebhookConfiguration `istio-sidecar-injector` and the
//! ValidatingWebhookConfiguration `istio-validator-<namespace>` (made by
//! `trellis install`), and the validator's webhooks, installed failing open
//! (`Ignore`) so that config can be applied before trellisd runs, are
//! switched to `Fail` once trellisd serves them. A configuration that
//! appears later, or that someone changes back, is patched again.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Istio's name for the injector's configuration (default revision).
pub const INJECTOR: &str = "istio-sidecar-injector";

/// Istio's name for the validator's configuration of `namespace`.
pub fn validator(namespace: &str) -> String {
    format!("istio-validator-{namespace}")
}

/// How often the leader looks at the configurations.
const RESYNC: Duration = Duration::from_secs(3);

/// Keeps `bundle` (PEM) in the configurations named `injector` and
/// `validator` while `leader` says this replica leads. Runs forever.
pub async fn patch_while_leader(
    client: kube::Client,
    bundle: String,
    injector: String,
    validator: String,
    mut leader: watch::Receiver<bool>,
) {
    let bundle = ByteString(bundle.into_bytes());
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client);
    loop {
        if leader.wait_for(|l| *l).await.is_err() {
            return;
        }
        let round = async {
            if let Err(error) = patch_mutating(&mutating, &injector, &bundle).await {
                tracing::warn!(name = %injector, %error, "cannot patch the injection webhook's caBundle");
            }
            if let Err(error) = patch_validating(&validating, &validator, &bundle).await {
                tracing::warn!(name = %validator, %error, "cannot patch the validation webhook's caBundle");
            }
        };
        tokio::select! {
            () = round => {}
            _ = leader.wait_for(|l| !*l) => continue,
        }
        tokio::select! {
            () = tokio::time::sleep(RESYNC) => {}
            _ = leader.wait_for(|l| !*l) => {}
        }
    }
}

/// Sets the bundle in `config`; true if anything changed.
fn set_bundle(config: &mut WebhookClientConfig, bundle: &ByteString) -> bool {
    if config.ca_bundle.as_ref() == Some(bundle) {
        return false;
    }
    config.ca_bundle = Some(bundle.clone());
    true
}

async fn patch_mutating(
    api: &Api<MutatingWebhookConfiguration>,
    name: &str,
    bundle: &ByteString,
) -> Result<(), kube::Error> {
    let Some(mut config) = api.get_opt(name).await? else {
        return Ok(());
    };
    let mut changed = false;
    for webhook in config.webhooks.iter_mut().flatten() {
        changed |= set_bundle(&mut webhook.client_config, bundle);
    }
    if changed {
        // The replace carries the resourceVersion read: a concurrent change
        // is refused (409) and the next round reads it again.
        api.replace(name, &PostParams::default(), &config).await?;
        tracing::info!(%name, "patched the injection webhook's caBundle");
    }
    Ok(())
}

async fn patch_validating(
    api: &Api<ValidatingWebhookConfiguration>,
    name: &str,
    bundle: &ByteString,
) -> Result<(), kube::Error> {
    let Some(mut config) = api.get_opt(name).await? else {
        return Ok(());
    };
    let mut changed = false;
    for webhook in config.webhooks.iter_mut().flatten() {
        changed |= set_bundle(&mut webhook.client_config, bundle);
        if webhook.failure_policy.as_deref() != Some("Fail") {
            webhook.failure_policy = Some("Fail".into());
            changed = true;
        }
    }
    if changed {
        api.replace(name, &PostParams::default(), &config).await?;
        tracing::info!(%name, "patched the validation webhook's caBundle; failurePolicy Fail");
    }
    Ok(())
}
