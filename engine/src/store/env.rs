//! A store's credentials from the environment: `SNAPFERRY_{SRC,DST}_*` first, then each
//! cloud's own variables, in the order the README documents. In one place so that every
//! command (sync, repo, migrate's stores, the probe) reads them the same way; the
//! environment is a function, so the order is tested without touching the process's
//! variables. Errors are one line naming what is missing, for the caller to print.

use super::oss::creds::{self, OssCredentialSource};
use super::oss::sign::OssCredentials;
use super::s3::StaticCredentials;

/// The environment as a function of a variable's name (`std::env::var` in the binary,
/// a table in tests).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A variable, when set and not empty (an empty variable counts as unset).
pub fn nonempty(env: Env<'_>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.is_empty())
}

/// `SNAPFERRY_{SIDE}_ACCESS_KEY_ID` / `_SECRET_ACCESS_KEY` (and `_SESSION_TOKEN`):
/// both or neither; `None` leaves the store to its own chain.
pub fn static_credentials(env: Env<'_>, side: &str) -> Result<Option<StaticCredentials>, String> {
    let id = nonempty(env, &format!("SNAPFERRY_{side}_ACCESS_KEY_ID"));
    let secret = nonempty(env, &format!("SNAPFERRY_{side}_SECRET_ACCESS_KEY"));
    let token = nonempty(env, &format!("SNAPFERRY_{side}_SESSION_TOKEN"));
    match (id, secret) {
        (Some(i), Some(s)) => Ok(Some(StaticCredentials {
            access_key_id: i,
            secret_access_key: s,
            session_token: token,
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(format!(
            "SNAPFERRY_{side}_ACCESS_KEY_ID is set but SNAPFERRY_{side}_SECRET_ACCESS_KEY is not; set both or neither"
        )),
        (None, Some(_)) => Err(format!(
            "SNAPFERRY_{side}_SECRET_ACCESS_KEY is set but SNAPFERRY_{side}_ACCESS_KEY_ID is not; set both or neither"
        )),
    }
}

/// Where OSS credentials come from, in this order (the first that is set wins):
/// `SNAPFERRY_{SIDE}_ACCESS_KEY_ID`/`_SECRET_ACCESS_KEY` (`_SESSION_TOKEN`),
/// `SNAPFERRY_{SIDE}_CREDENTIAL_PROCESS`, then Alibaba Cloud's own chain:
/// `ALIBABA_CLOUD_ACCESS_KEY_ID`/`_SECRET` (`ALIBABA_CLOUD_SECURITY_TOKEN`), RRSA/OIDC
/// (`ALIBABA_CLOUD_ROLE_ARN`, `_OIDC_PROVIDER_ARN`, `_OIDC_TOKEN_FILE`), an ECS RAM role
/// (`ALIBABA_CLOUD_ECS_METADATA`), `ALIBABA_CLOUD_CREDENTIALS_URI`; last `OSS_ACCESS_KEY_*`.
pub fn oss_credentials(env: Env<'_>, side: &str) -> Result<OssCredentialSource, String> {
    let fixed = |(i, s, t): (String, String, Option<String>)| {
        OssCredentialSource::Static(OssCredentials {
            access_key_id: i,
            access_key_secret: s,
            security_token: t,
        })
    };
    if let Some(c) = static_credentials(env, side)? {
        return Ok(fixed((
            c.access_key_id,
            c.secret_access_key,
            c.session_token,
        )));
    }
    if let Some(command) = nonempty(env, &format!("SNAPFERRY_{side}_CREDENTIAL_PROCESS")) {
        return Ok(OssCredentialSource::Process { command });
    }
    let pair = |id: &str,
                secret: &str,
                token: &str|
     -> Result<Option<(String, String, Option<String>)>, String> {
        match (nonempty(env, id), nonempty(env, secret)) {
            (Some(i), Some(s)) => Ok(Some((i, s, nonempty(env, token)))),
            (None, None) => Ok(None),
            _ => Err(format!("{id} and {secret} must be set together")),
        }
    };
    if let Some(c) = pair(
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_SECURITY_TOKEN",
    )? {
        return Ok(fixed(c));
    }
    let oidc = [
        "ALIBABA_CLOUD_ROLE_ARN",
        "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
        "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
    ]
    .map(|n| (n, nonempty(env, n)));
    match &oidc {
        [(_, Some(role)), (_, Some(provider)), (_, Some(file))] => {
            return Ok(OssCredentialSource::Oidc {
                role_arn: role.clone(),
                provider_arn: provider.clone(),
                token_file: file.into(),
                session_name: nonempty(env, "ALIBABA_CLOUD_ROLE_SESSION_NAME")
                    .unwrap_or_else(|| "snapferry".into()),
                sts_endpoint: nonempty(env, "ALIBABA_CLOUD_STS_ENDPOINT")
                    .unwrap_or_else(|| creds::STS_ENDPOINT.into()),
            })
        }
        [(_, None), (_, None), (_, None)] => {}
        partial => {
            let missing: Vec<&str> = partial
                .iter()
                .filter(|(_, v)| v.is_none())
                .map(|(n, _)| *n)
                .collect();
            return Err(format!(
                "RRSA/OIDC credentials need {} as well (ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN and ALIBABA_CLOUD_OIDC_TOKEN_FILE go together)",
                missing.join(" and ")
            ));
        }
    }
    if let Some(role) = nonempty(env, "ALIBABA_CLOUD_ECS_METADATA") {
        return Ok(OssCredentialSource::EcsRole {
            role: Some(role),
            endpoint: nonempty(env, "SNAPFERRY_ECS_METADATA_ENDPOINT")
                .unwrap_or_else(|| creds::ECS_METADATA.into()),
        });
    }
    if let Some(url) = nonempty(env, "ALIBABA_CLOUD_CREDENTIALS_URI") {
        return Ok(OssCredentialSource::Uri { url });
    }
    if let Some(c) = pair(
        "OSS_ACCESS_KEY_ID",
        "OSS_ACCESS_KEY_SECRET",
        "OSS_SESSION_TOKEN",
    )? {
        return Ok(fixed(c));
    }
    Err(format!(
        "no OSS credentials for the {}; set SNAPFERRY_{side}_ACCESS_KEY_ID and SNAPFERRY_{side}_SECRET_ACCESS_KEY, SNAPFERRY_{side}_CREDENTIAL_PROCESS, or Alibaba Cloud's ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET (also RRSA, ALIBABA_CLOUD_ECS_METADATA, ALIBABA_CLOUD_CREDENTIALS_URI)",
        if side == "SRC" { "source" } else { "destination" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn static_credentials_come_in_pairs() {
        let none = env_of(&[("SNAPFERRY_SRC_ACCESS_KEY_ID", "")]);
        assert!(static_credentials(&none, "SRC").unwrap().is_none());
        let half = env_of(&[("SNAPFERRY_DST_SECRET_ACCESS_KEY", "s")]);
        let e = static_credentials(&half, "DST").unwrap_err();
        assert!(e.contains("SNAPFERRY_DST_ACCESS_KEY_ID is not"), "{e}");
        let both = env_of(&[
            ("SNAPFERRY_SRC_ACCESS_KEY_ID", "id"),
            ("SNAPFERRY_SRC_SECRET_ACCESS_KEY", "s"),
            ("SNAPFERRY_SRC_SESSION_TOKEN", "t"),
        ]);
        let c = static_credentials(&both, "SRC").unwrap().unwrap();
        assert_eq!(c.session_token.as_deref(), Some("t"));
    }

    #[test]
    fn the_first_oss_source_set_wins_and_a_partial_set_is_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[
                    ("SNAPFERRY_SRC_ACCESS_KEY_ID", "a"),
                    ("SNAPFERRY_SRC_SECRET_ACCESS_KEY", "b"),
                    ("SNAPFERRY_SRC_CREDENTIAL_PROCESS", "p"),
                ],
                "Static",
            ),
            (
                &[
                    ("SNAPFERRY_SRC_CREDENTIAL_PROCESS", "p"),
                    ("ALIBABA_CLOUD_ACCESS_KEY_ID", "a"),
                    ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "b"),
                ],
                "Process",
            ),
            (
                &[
                    ("ALIBABA_CLOUD_ROLE_ARN", "r"),
                    ("ALIBABA_CLOUD_OIDC_PROVIDER_ARN", "p"),
                    ("ALIBABA_CLOUD_OIDC_TOKEN_FILE", "f"),
                    ("ALIBABA_CLOUD_ECS_METADATA", "role"),
                ],
                "Oidc",
            ),
            (&[("ALIBABA_CLOUD_ECS_METADATA", "role")], "EcsRole"),
            (&[("ALIBABA_CLOUD_CREDENTIALS_URI", "http://x")], "Uri"),
            (
                &[("OSS_ACCESS_KEY_ID", "a"), ("OSS_ACCESS_KEY_SECRET", "b")],
                "Static",
            ),
        ];
        for (vars, want) in cases {
            let env = env_of(vars);
            let got = oss_credentials(&env, "SRC").expect("a source");
            let name = match got {
                OssCredentialSource::Static(_) => "Static",
                OssCredentialSource::Process { .. } => "Process",
                OssCredentialSource::Oidc { .. } => "Oidc",
                OssCredentialSource::EcsRole { .. } => "EcsRole",
                OssCredentialSource::Uri { .. } => "Uri",
            };
            assert_eq!(name, *want, "{vars:?}");
        }
        let env = env_of(&[("ALIBABA_CLOUD_ROLE_ARN", "r")]);
        let e = oss_credentials(&env, "DST").unwrap_err();
        assert!(
            e.contains("ALIBABA_CLOUD_OIDC_PROVIDER_ARN and ALIBABA_CLOUD_OIDC_TOKEN_FILE"),
            "{e}"
        );
        let e = oss_credentials(&env_of(&[]), "DST").unwrap_err();
        assert!(e.contains("no OSS credentials for the destination"), "{e}");
    }
}
