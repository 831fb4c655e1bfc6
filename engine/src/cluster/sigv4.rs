//! AWS SigV4 for Amazon's Elasticsearch/OpenSearch Service (service `es`), with the
//! payload hash signed (`x-amz-content-sha256`), using aws-sigv4.

use std::time::SystemTime;

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;

use crate::error::{Error, Result};

/// Signs cluster requests.
#[derive(Clone)]
pub struct AwsSigner {
    /// Region, e.g. `us-west-2`.
    pub region: String,
    /// Service name: `es` (managed domains).
    pub service: String,
    /// Credentials (used as they are when `provider` is `None`).
    pub credentials: Credentials,
    /// Where fresh credentials come from (the AWS chain: environment, profile, web
    /// identity, instance/container metadata). Asked before every request; the provider
    /// caches and refreshes, so a phase that outlives an STS session keeps working.
    pub provider: Option<SharedCredentialsProvider>,
}

impl AwsSigner {
    /// A signer whose credentials come from `provider` on every request.
    pub async fn from_provider(
        region: &str,
        service: &str,
        provider: SharedCredentialsProvider,
    ) -> Result<AwsSigner> {
        let credentials = provider.provide_credentials().await.map_err(|e| {
            Error::access_denied(format!(
                "no AWS credentials for SigV4 ({}); set the cluster's access key variables or configure the AWS credential chain",
                crate::error::root_cause(&e)
            ))
        })?;
        Ok(AwsSigner {
            region: region.to_string(),
            service: service.to_string(),
            credentials,
            provider: Some(provider),
        })
    }

    /// This signer with current credentials from its provider (itself without one).
    pub async fn fresh(&self) -> Result<AwsSigner> {
        let Some(p) = &self.provider else {
            return Ok(self.clone());
        };
        let credentials = p.provide_credentials().await.map_err(|e| {
            Error::access_denied(format!(
                "AWS credentials for SigV4 could not be refreshed: {}",
                crate::error::root_cause(&e)
            ))
        })?;
        Ok(AwsSigner {
            credentials,
            ..self.clone()
        })
    }

    /// Headers to add (`authorization`, `x-amz-date`, `x-amz-content-sha256`, token).
    pub fn sign(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
        time: SystemTime,
    ) -> Result<Vec<(String, String)>> {
        let identity = self.credentials.clone().into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(&self.service)
            .time(time)
            .settings(settings)
            .build()
            .map_err(|e| Error::invalid_input(format!("SigV4 parameters: {e}")))?
            .into();
        let req = SignableRequest::new(
            method,
            url,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|e| Error::invalid_input(format!("cannot sign {method} {url}: {e}")))?;
        let (instructions, _) = sign(req, &params)
            .map_err(|e| Error::other(format!("SigV4 signing failed: {e}")))?
            .into_parts();
        let (hs, _) = instructions.into_parts();
        Ok(hs
            .into_iter()
            .map(|h| (h.name().to_string(), h.value().to_string()))
            .collect())
    }
}
