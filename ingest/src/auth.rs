//! How a scrape proves who it is and whom it trusts: `basic_auth`, `authorization` and
//! `tls_config`, as Prometheus configures them.
//!
//! Secrets never reach logs: [`Secret`] prints as `<secret>` in `Debug` and serialisation.
//! Password and credential *files* are read at every scrape (they are small), so a rotated
//! token takes effect without a reload, as in Prometheus. TLS files are read when the
//! configuration is loaded: a bad certificate or key is a configuration error naming the file.

use std::fmt;
use std::path::{Path, PathBuf};

use hyper::header::HeaderValue;
use serde::{Deserialize, Serialize, Serializer};

use crate::config::NotSupportedYet;

/// A string that must not be printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<secret>")
    }
}

/// `basic_auth`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password, inline.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Password, read from this file at every scrape.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// `authorization`: an `Authorization: <type> <credentials>` header.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// The scheme (default `Bearer`).
    #[serde(default = "default_auth_type", rename = "type")]
    pub kind: String,
    /// Credentials, inline.
    #[serde(default)]
    pub credentials: Option<Secret>,
    /// Credentials, read from this file at every scrape.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

fn default_auth_type() -> String {
    "Bearer".into()
}

/// `tls_config`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificates (PEM) to verify the target with, instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for targets that require one; with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM); with `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Skip verifying the target's certificate. Insecure: for tests and lab setups.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<NotSupportedYet>,
    /// Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<NotSupportedYet>,
}

/// Where a secret comes from, resolved against the config directory.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretSource {
    /// Inline in the configuration.
    Inline(Secret),
    /// Read from a file at each use.
    File(PathBuf),
}

impl SecretSource {
    fn new(
        inline: &Option<Secret>,
        file: &Option<PathBuf>,
        base_dir: &Path,
        what: &str,
    ) -> Result<Option<Self>, String> {
        match (inline, file) {
            (Some(_), Some(_)) => Err(format!("at most one of {what} and {what}_file may be set")),
            (Some(s), None) => Ok(Some(Self::Inline(s.clone()))),
            (None, Some(f)) => Ok(Some(Self::File(base_dir.join(f)))),
            (None, None) => Ok(None),
        }
    }

    /// The secret now (files are re-read, surrounding whitespace trimmed).
    pub fn read(&self) -> Result<String, String> {
        match self {
            Self::Inline(s) => Ok(s.expose().to_string()),
            Self::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
        }
    }
}

/// What a job sends with each scrape.
#[derive(Debug, Clone, PartialEq)]
pub enum Credentials {
    /// Nothing.
    None,
    /// HTTP basic auth.
    Basic {
        /// User name.
        username: String,
        /// Password, if any.
        password: Option<SecretSource>,
    },
    /// `Authorization: <kind> <credentials>`.
    Header {
        /// The scheme, e.g. `Bearer`.
        kind: String,
        /// The credentials.
        credentials: SecretSource,
    },
}

impl Credentials {
    /// Resolves `basic_auth` / `authorization` (at most one).
    pub fn resolve(
        basic: &Option<BasicAuth>,
        authorization: &Option<Authorization>,
        base_dir: &Path,
    ) -> Result<Self, String> {
        match (basic, authorization) {
            (Some(_), Some(_)) => {
                Err("at most one of basic_auth and authorization may be set".into())
            }
            (Some(b), None) => Ok(Self::Basic {
                username: b.username.clone(),
                password: SecretSource::new(&b.password, &b.password_file, base_dir, "password")
                    .map_err(|e| format!("basic_auth: {e}"))?,
            }),
            (None, Some(a)) => {
                if a.kind.eq_ignore_ascii_case("basic") {
                    return Err("authorization: type Basic is not allowed, use basic_auth".into());
                }
                let credentials =
                    SecretSource::new(&a.credentials, &a.credentials_file, base_dir, "credentials")
                        .map_err(|e| format!("authorization: {e}"))?
                        .ok_or("authorization: credentials or credentials_file is required")?;
                Ok(Self::Header {
                    kind: a.kind.clone(),
                    credentials,
                })
            }
            (None, None) => Ok(Self::None),
        }
    }

    /// The `Authorization` header to send now (files are re-read), or `None`.
    pub fn header(&self) -> Result<Option<HeaderValue>, String> {
        let value = match self {
            Self::None => return Ok(None),
            Self::Basic { username, password } => {
                use base64::Engine as _;
                let password = password.as_ref().map(SecretSource::read).transpose()?;
                let pair = format!("{username}:{}", password.unwrap_or_default());
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
            Self::Header { kind, credentials } => format!("{kind} {}", credentials.read()?),
        };
        let mut header = HeaderValue::from_str(&value)
            .map_err(|_| "authorization credentials are not a valid header value")?;
        header.set_sensitive(true);
        Ok(Some(header))
    }

    /// Adds the credentials to a request.
    pub fn apply(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, String> {
        Ok(match self.header()? {
            Some(header) => request.header(reqwest::header::AUTHORIZATION, header),
            None => request,
        })
    }
}

/// TLS material of a job, loaded and checked when the configuration is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsSettings {
    /// CA certificates (PEM), replacing the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (PEM, concatenated).
    pub identity_pem: Option<Vec<u8>>,
    /// Accept any certificate.
    pub insecure_skip_verify: bool,
}

impl TlsSettings {
    /// Loads the files of `tls_config`; errors name the file.
    pub fn load(config: &TlsConfig, base_dir: &Path) -> Result<Self, String> {
        let read = |p: &PathBuf| {
            let path = base_dir.join(p);
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let ca_pem = config.ca_file.as_ref().map(read).transpose()?;
        if let (Some(pem), Some(file)) = (&ca_pem, &config.ca_file) {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("ca_file {}: {e}", file.display()))?;
            if certs.is_empty() {
                return Err(format!("ca_file {}: no certificate found", file.display()));
            }
        }
        let identity_pem = match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(key)) => {
                let mut pem = read(cert)?;
                pem.push(b'\n');
                pem.extend(read(key)?);
                reqwest::Identity::from_pem(&pem).map_err(|e| {
                    format!(
                        "cert_file {} / key_file {}: {e}",
                        cert.display(),
                        key.display()
                    )
                })?;
                Some(pem)
            }
            (None, None) => None,
            _ => return Err("cert_file and key_file must be set together".into()),
        };
        Ok(Self {
            ca_pem,
            identity_pem,
            insecure_skip_verify: config.insecure_skip_verify,
        })
    }

    /// Applies these settings to a client under construction.
    pub fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, String> {
        if let Some(pem) = &self.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())?;
            builder = builder.tls_certs_only(certs);
        }
        if let Some(pem) = &self.identity_pem {
            builder =
                builder.identity(reqwest::Identity::from_pem(pem).map_err(|e| e.to_string())?);
        }
        if self.insecure_skip_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        Ok(builder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let b: BasicAuth = serde_norway::from_str("{username: u, password: hunter2}").unwrap();
        assert!(!format!("{b:?}").contains("hunter2"));
        assert!(!serde_norway::to_string(&b).unwrap().contains("hunter2"));
        let c = Credentials::resolve(&Some(b), &None, Path::new("/")).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn credentials_are_resolved_and_checked() {
        let basic: BasicAuth = serde_norway::from_str("{username: u, password_file: pw}").unwrap();
        let bearer: Authorization = serde_norway::from_str("{credentials_file: token}").unwrap();
        let err = Credentials::resolve(
            &Some(basic.clone()),
            &Some(bearer.clone()),
            Path::new("/etc"),
        )
        .unwrap_err();
        assert!(
            err.contains("at most one of basic_auth and authorization"),
            "{err}"
        );
        assert_eq!(
            Credentials::resolve(&None, &Some(bearer), Path::new("/etc")).unwrap(),
            Credentials::Header {
                kind: "Bearer".into(),
                credentials: SecretSource::File("/etc/token".into())
            }
        );
        let both: BasicAuth =
            serde_norway::from_str("{username: u, password: p, password_file: f}").unwrap();
        let err = Credentials::resolve(&Some(both), &None, Path::new("/")).unwrap_err();
        assert!(
            err.contains("at most one of password and password_file"),
            "{err}"
        );
        let empty: Authorization = serde_norway::from_str("{type: Bearer}").unwrap();
        let err = Credentials::resolve(&None, &Some(empty), Path::new("/")).unwrap_err();
        assert!(
            err.contains("credentials or credentials_file is required"),
            "{err}"
        );
        let missing = SecretSource::File("/nonexistent/token".into())
            .read()
            .unwrap_err();
        assert!(
            missing.contains("cannot read /nonexistent/token"),
            "{missing}"
        );
    }

    #[test]
    fn tls_files_are_checked_when_loaded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.pem"), "not a certificate").unwrap();
        let cfg = |y: &str| serde_norway::from_str::<TlsConfig>(y).unwrap();
        let e = TlsSettings::load(&cfg("{ca_file: bad.pem}"), dir.path()).unwrap_err();
        assert!(e.contains("ca_file bad.pem: no certificate found"), "{e}");
        let e = TlsSettings::load(&cfg("{ca_file: missing.pem}"), dir.path()).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
        let e = TlsSettings::load(&cfg("{cert_file: bad.pem}"), dir.path()).unwrap_err();
        assert!(e.contains("must be set together"), "{e}");
        assert!(
            TlsSettings::load(&cfg("{insecure_skip_verify: true}"), dir.path())
                .unwrap()
                .insecure_skip_verify
        );
    }
}
