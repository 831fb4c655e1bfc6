//! AWS SigV4 for Amazon's Elasticsearch/OpenSearch Service (service `es`), with the
//! payload hash signed (`x-amz-content-sha256`), using aws-sigv4.

use std::time::SystemTime;

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
    /// Credentials.
    pub credentials: Credentials,
}

impl AwsSigner {
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
            .map_err(|e| Error::InvalidInput(format!("SigV4 parameters: {e}")))?
            .into();
        let req = SignableRequest::new(
            method,
            url,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|e| Error::InvalidInput(format!("cannot sign {method} {url}: {e}")))?;
        let (instructions, _) = sign(req, &params)
            .map_err(|e| Error::Other(format!("SigV4 signing failed: {e}")))?
            .into_parts();
        let (hs, _) = instructions.into_parts();
        Ok(hs
            .into_iter()
            .map(|h| (h.name().to_string(), h.value().to_string()))
            .collect())
    }
}
