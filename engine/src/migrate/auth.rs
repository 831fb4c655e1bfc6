//! Who snapferry is to each cluster: the job file's `auth` and the environment's secrets
//! (`SNAPFERRY_{SRC,DST}_CLUSTER_*`, else the AWS chain for SigV4) resolved into the
//! client's [`Auth`](crate::cluster::Auth), with one line naming what is missing. The
//! environment is a function, so the resolution is tested without touching the
//! process's variables.

use super::job::{AuthKind, Side};
use crate::error::{Error, Result};
use crate::store::env::nonempty;

impl Side {
    /// How to reach this side's cluster. `side` is `SRC` or `DST`; secrets come from
    /// `env` (SNAPFERRY_{side}_CLUSTER_PASSWORD / _API_KEY / _ACCESS_KEY_ID /
    /// _SECRET_ACCESS_KEY / _SESSION_TOKEN), the password also from the job file, and
    /// SigV4 credentials otherwise from the AWS chain.
    pub async fn cluster_config(
        &self,
        side: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<crate::cluster::ClusterConfig> {
        use crate::cluster::{sigv4::AwsSigner, Auth, ClusterConfig};
        let (name, cluster_side) = if side == "SRC" {
            ("source", crate::error::Side::SourceCluster)
        } else {
            ("destination", crate::error::Side::DestinationCluster)
        };
        let var = |k: &str| nonempty(env, &format!("SNAPFERRY_{side}_CLUSTER_{k}"));
        let auth = match self.auth_kind() {
            AuthKind::None => Auth::None,
            AuthKind::Basic => {
                let Some(user) = self.user.clone() else {
                    return Err(Error::invalid_input(format!(
                        "the {name} cluster uses basic auth but has no `user`; add it to the job file"
                    )));
                };
                let Some(password) = var("PASSWORD").or_else(|| self.password.clone()) else {
                    return Err(Error::invalid_input(format!(
                        "the {name} cluster has a user but no password; set SNAPFERRY_{side}_CLUSTER_PASSWORD"
                    )));
                };
                Auth::Basic { user, password }
            }
            AuthKind::ApiKey => match var("API_KEY") {
                Some(k) => Auth::ApiKey(k),
                None => {
                    return Err(Error::invalid_input(format!(
                        "the {name} cluster uses an API key; set SNAPFERRY_{side}_CLUSTER_API_KEY (the base64 id:key)"
                    )))
                }
            },
            AuthKind::Sigv4 => {
                let Some(region) = self.aws_region.clone() else {
                    return Err(Error::invalid_input(format!(
                        "the {name} cluster uses SigV4 but has no `aws_region`; add it to the job file"
                    )));
                };
                let service = self.aws_service.clone().unwrap_or_else(|| "es".into());
                let provider = match (var("ACCESS_KEY_ID"), var("SECRET_ACCESS_KEY")) {
                    (Some(id), Some(secret)) => {
                        aws_credential_types::provider::SharedCredentialsProvider::new(
                            aws_credential_types::Credentials::new(
                                id,
                                secret,
                                var("SESSION_TOKEN"),
                                None,
                                "snapferry-cluster-env",
                            ),
                        )
                    }
                    (Some(_), None) | (None, Some(_)) => {
                        return Err(Error::invalid_input(format!(
                            "set both SNAPFERRY_{side}_CLUSTER_ACCESS_KEY_ID and SNAPFERRY_{side}_CLUSTER_SECRET_ACCESS_KEY, or neither (the AWS chain is used then)"
                        )))
                    }
                    (None, None) => {
                        let mut chain = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                            .region(aws_config::Region::new(region.clone()));
                        if let Some(p) = &self.aws_profile {
                            chain = chain.profile_name(p);
                        }
                        aws_credential_types::provider::SharedCredentialsProvider::new(
                            chain.build().await,
                        )
                    }
                };
                Auth::SigV4(
                    AwsSigner::from_provider(&region, &service, provider)
                        .await
                        .map_err(|e| e.on(cluster_side))?,
                )
            }
        };
        Ok(ClusterConfig {
            url: self.url.clone(),
            auth,
            ca_file: self.ca_file.clone(),
            insecure: self.insecure,
            side: Some(cluster_side),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Auth;

    fn side_text(extra: &str) -> String {
        format!(
            "url = \"http://127.0.0.1:9200\"\nrepository = \"r\"\nrepository_type = \"fs\"\nstore = \"/tmp/r\"\n{extra}"
        )
    }

    fn side(extra: &str) -> Side {
        toml::from_str(&side_text(extra)).expect("side parses")
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[tokio::test]
    async fn auth_kinds_from_the_job_and_the_environment() {
        let none = side("").cluster_config("SRC", &env_of(&[])).await.unwrap();
        assert!(matches!(none.auth, Auth::None));

        let s = side("user = \"u\"");
        let e = s.cluster_config("SRC", &env_of(&[])).await.unwrap_err();
        assert!(
            e.to_string().contains("SNAPFERRY_SRC_CLUSTER_PASSWORD"),
            "{e}"
        );
        let c = s
            .cluster_config("SRC", &env_of(&[("SNAPFERRY_SRC_CLUSTER_PASSWORD", "pw")]))
            .await
            .unwrap();
        assert!(
            matches!(c.auth, Auth::Basic { ref user, ref password } if user == "u" && password == "pw")
        );

        let s = side("auth = \"api_key\"");
        let e = s.cluster_config("DST", &env_of(&[])).await.unwrap_err();
        assert!(
            e.to_string().contains("SNAPFERRY_DST_CLUSTER_API_KEY"),
            "{e}"
        );
        let c = s
            .cluster_config(
                "DST",
                &env_of(&[("SNAPFERRY_DST_CLUSTER_API_KEY", "aWQ6a2V5")]),
            )
            .await
            .unwrap();
        assert!(matches!(c.auth, Auth::ApiKey(ref k) if k == "aWQ6a2V5"));

        let s = side("auth = \"sigv4\"");
        let e = s.cluster_config("SRC", &env_of(&[])).await.unwrap_err();
        assert!(e.to_string().contains("aws_region"), "{e}");
        let s = side("auth = \"sigv4\"\naws_region = \"us-west-2\"\ninsecure = true");
        let e = s
            .cluster_config(
                "SRC",
                &env_of(&[("SNAPFERRY_SRC_CLUSTER_ACCESS_KEY_ID", "AKID")]),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("SECRET_ACCESS_KEY"), "{e}");
        let c = s
            .cluster_config(
                "SRC",
                &env_of(&[
                    ("SNAPFERRY_SRC_CLUSTER_ACCESS_KEY_ID", "AKID"),
                    ("SNAPFERRY_SRC_CLUSTER_SECRET_ACCESS_KEY", "SECRET"),
                ]),
            )
            .await
            .unwrap();
        assert!(c.insecure);
        match c.auth {
            Auth::SigV4(s) => {
                assert_eq!((s.region.as_str(), s.service.as_str()), ("us-west-2", "es"));
                assert_eq!(s.credentials.access_key_id(), "AKID");
            }
            other => panic!("expected SigV4, got {other:?}"),
        }
        assert_eq!(c.url, "http://127.0.0.1:9200");

        // An unknown kind is refused when the job file is read, naming the choices.
        let e = toml::from_str::<Side>(&side_text("auth = \"kerberos\"")).unwrap_err();
        assert!(
            e.to_string().contains("none, basic, api_key or sigv4"),
            "{e}"
        );
    }
}
