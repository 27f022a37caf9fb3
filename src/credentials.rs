//! Where the S3 credentials come from: an s3fs-style passwd file (`credentials_file=`),
//! or the AWS chain (environment, `~/.aws/credentials` and `~/.aws/config` with
//! `profile=`, web identity, ECS, and instance metadata on AWS endpoints only).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// The AWS chain; `profile` picks a profile of the shared config files.
    Chain { profile: Option<String> },
    /// `ACCESS:SECRET` or `BUCKET:ACCESS:SECRET` lines, as s3fs reads them.
    PasswdFile(PathBuf),
}

/// The provider for `source`. Instance metadata is asked only for AWS endpoints: on
/// other clouds (Linode) 169.254.169.254 is another service or nothing at all.
pub fn provider(
    source: &CredentialSource,
    bucket: &str,
    aws_endpoint: bool,
) -> anyhow::Result<SharedCredentialsProvider> {
    match source {
        CredentialSource::PasswdFile(path) => {
            let creds = read_passwd_file(path, bucket)?;
            Ok(SharedCredentialsProvider::new(KeptOutOfLogs(
                SharedCredentialsProvider::new(creds),
            )))
        }
        CredentialSource::Chain { profile } => {
            let mut links = chain_links(profile.as_deref(), aws_endpoint).into_iter();
            let (name, first) = links.next().expect("the chain has links");
            let mut chain = CredentialsProviderChain::first_try(name, first);
            for (name, link) in links {
                chain = chain.or_else(name, link);
            }
            Ok(SharedCredentialsProvider::new(KeptOutOfLogs(
                SharedCredentialsProvider::new(chain),
            )))
        }
    }
}

/// The AWS chain's providers in the order they are asked, each with its name.
fn chain_links(
    profile: Option<&str>,
    aws_endpoint: bool,
) -> Vec<(&'static str, SharedCredentialsProvider)> {
    let mut profile_provider = aws_config::profile::ProfileFileCredentialsProvider::builder();
    if let Some(name) = profile {
        profile_provider = profile_provider.profile_name(name);
    }
    let mut links = vec![
        (
            "Environment",
            SharedCredentialsProvider::new(
                aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
            ),
        ),
        (
            "Profile",
            SharedCredentialsProvider::new(profile_provider.build()),
        ),
        (
            "WebIdentityToken",
            SharedCredentialsProvider::new(
                aws_config::web_identity_token::WebIdentityTokenCredentialsProvider::builder()
                    .build(),
            ),
        ),
        (
            "EcsContainer",
            SharedCredentialsProvider::new(
                aws_config::ecs::EcsCredentialsProvider::builder().build(),
            ),
        ),
    ];
    if aws_endpoint {
        links.push((
            "Ec2InstanceMetadata",
            SharedCredentialsProvider::new(
                aws_config::imds::credentials::ImdsCredentialsProvider::builder().build(),
            ),
        ));
    }
    links
}

/// Which source the credentials of a mount come from, in words (`s3syncfs doctor`):
/// the chain's links are asked one by one, each within `within`.
pub async fn describe_source(
    source: &CredentialSource,
    bucket: &str,
    aws_endpoint: bool,
    within: Duration,
) -> anyhow::Result<String> {
    let profile = match source {
        CredentialSource::PasswdFile(path) => {
            read_passwd_file(path, bucket)?;
            return Ok(format!("credentials file {}", path.display()));
        }
        CredentialSource::Chain { profile } => profile.clone(),
    };
    for (name, link) in chain_links(profile.as_deref(), aws_endpoint) {
        if let Ok(Ok(_)) = tokio::time::timeout(within, link.provide_credentials()).await {
            return Ok(match name {
                "Environment" => "the environment (AWS_ACCESS_KEY_ID)".to_string(),
                "Profile" => format!(
                    "profile {} of ~/.aws/credentials or ~/.aws/config",
                    profile
                        .clone()
                        .or_else(|| std::env::var("AWS_PROFILE").ok())
                        .unwrap_or_else(|| "default".into())
                ),
                "WebIdentityToken" => "web identity (AWS_WEB_IDENTITY_TOKEN_FILE)".to_string(),
                "EcsContainer" => "the ECS container endpoint".to_string(),
                _ => "EC2 instance metadata (an instance role)".to_string(),
            });
        }
    }
    bail!(
        "no usable credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, use \
         profile= with ~/.aws/credentials, or credentials_file="
    )
}

/// Hands out what the inner provider does, and has the log redact each value first:
/// the SDK traces the identity it signs with, access key included, and credentials
/// from the chain change as they are refreshed.
#[derive(Debug)]
struct KeptOutOfLogs(SharedCredentialsProvider);

impl ProvideCredentials for KeptOutOfLogs {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::new(async move {
            let creds = self.0.provide_credentials().await?;
            crate::logging::add_secret(creds.access_key_id());
            crate::logging::add_secret(creds.secret_access_key());
            if let Some(token) = creds.session_token() {
                crate::logging::add_secret(token);
            }
            Ok(creds)
        })
    }
}

/// Resolves the credentials once, so a mount without any fails at once and clearly.
pub async fn check(provider: &SharedCredentialsProvider, within: Duration) -> anyhow::Result<()> {
    match tokio::time::timeout(within, provider.provide_credentials()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => bail!(
            "no usable credentials ({err}): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
             use profile= with ~/.aws/credentials, or credentials_file="
        ),
        Err(_) => bail!(
            "no credentials within {within:?} (the credential chain did not answer): set \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, use profile= or credentials_file="
        ),
    }
}

/// Reads an s3fs passwd file: refused if group or others may read it.
pub fn read_passwd_file(path: &Path, bucket: &str) -> anyhow::Result<Credentials> {
    check_private(path, "credentials file")?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read credentials file {}", path.display()))?;
    parse_passwd(&text, bucket)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "credentials file {} has no ACCESS:SECRET line (or BUCKET:ACCESS:SECRET for {bucket})",
                path.display()
            )
        })
        .map(|(access, secret)| Credentials::new(access, secret, None, None, "credentials-file"))
}

/// Secrets live in files only their owner can read.
fn check_private(path: &Path, what: &str) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{what} {} is readable by group or others: chmod 600 it",
            path.display()
        );
    }
    Ok(())
}

/// Reads an SSE-C key file (raw 32 bytes or their base64 on the first line); refused
/// if group or others may read it.
pub fn read_sse_c_key(path: &Path) -> anyhow::Result<crate::store::CustomerKey> {
    use aws_smithy_types::base64;
    use md5::{Digest, Md5};
    check_private(path, "SSE-C key file")?;
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read SSE-C key file {}", path.display()))?;
    let key = if bytes.len() == 32 {
        bytes
    } else {
        let text = String::from_utf8_lossy(&bytes);
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        base64::decode(line)
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "SSE-C key file {} holds no 32-byte key (raw, or base64 on its first line)",
                    path.display()
                )
            })?
    };
    let key_base64 = base64::encode(&key);
    crate::logging::add_secret(&key_base64);
    Ok(crate::store::CustomerKey {
        key_base64,
        md5_base64: base64::encode(Md5::digest(&key)),
    })
}

/// A `BUCKET:ACCESS:SECRET` line for `bucket` wins over an `ACCESS:SECRET` one.
fn parse_passwd(text: &str, bucket: &str) -> Option<(String, String)> {
    let mut fallback = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            [b, access, secret] if *b == bucket => {
                return Some((access.to_string(), secret.to_string()))
            }
            [access, secret] if fallback.is_none() => {
                fallback = Some((access.to_string(), secret.to_string()))
            }
            _ => {}
        }
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_for_the_bucket_win() {
        let text = "# comment\nAKDEFAULT:defaultsecret\nphotos:AKPHOTOS:photosecret\n";
        assert_eq!(
            parse_passwd(text, "photos"),
            Some(("AKPHOTOS".into(), "photosecret".into()))
        );
        assert_eq!(
            parse_passwd(text, "other"),
            Some(("AKDEFAULT".into(), "defaultsecret".into()))
        );
        assert_eq!(parse_passwd("other:A:B\n", "photos"), None);
    }

    #[test]
    fn a_passwd_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, "A:B\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_passwd_file(&path, "b").unwrap_err().to_string();
        assert!(err.contains("readable by group or others"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_passwd_file(&path, "b").is_ok());
    }
}
