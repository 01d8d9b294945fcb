//! `arrowhead.yml`: loading, layering and validation (DESIGN.md §5).
//!
//! Layers, later wins: built-in defaults, then the YAML file (or the embedded default when no
//! file is given), then command-line flags. Validation runs once, after all layers.
//!
//! Errors name the file, line and key: unknown keys and bad values are caught while
//! deserialising, where the YAML parser knows the position (`deny_unknown_fields` on every
//! section); cross-key checks run after, and name the key path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ingest::config::{NotSupportedYet, ScrapeConfig, ScrapeDefaults, ScrapeJob};
use query::QueryConfig;
use serde::{Deserialize, Serialize};
use storage::StorageConfig;
use storage::units::Duration;

/// The embedded configuration used when `serve` gets no `--config`: the replica scrapes its
/// own `/metrics` every 5 s, so a first run has data at once. `SELF` is replaced by the
/// replica's HTTP address once it is bound.
pub(crate) const EMBEDDED_DEFAULT: &str = "\
global:
  scrape_interval: 5s
scrape_configs:
  - job_name: arrowhead
    static_configs:
      - targets: [SELF]
";

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Defaults for all jobs and the replica's identity.
    #[serde(default)]
    pub(crate) global: GlobalConfig,
    /// What to scrape.
    #[serde(default)]
    pub(crate) scrape_configs: Vec<ScrapeConfig>,
    /// Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rule_files: Option<NotSupportedYet>,
    /// Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) alerting: Option<NotSupportedYet>,
    /// Which external label tells the two replicas of a pair apart.
    #[serde(default)]
    pub(crate) replica_label: Option<String>,
    /// Storage.
    #[serde(default)]
    pub(crate) storage: StorageConfig,
    /// Listeners.
    #[serde(default)]
    pub(crate) server: ServerConfig,
    /// Query limits.
    #[serde(default)]
    pub(crate) query: QueryConfig,
    /// The config file's directory: relative paths in the file (target files) start here.
    #[serde(skip)]
    pub(crate) base_dir: PathBuf,
}

/// `global:`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct GlobalConfig {
    /// Default scrape interval.
    pub(crate) scrape_interval: Duration,
    /// Default scrape timeout (unset: 10 s, capped at the global interval, as in Prometheus).
    pub(crate) scrape_timeout: Option<Duration>,
    /// Default rule evaluation interval (rules arrive in a later version).
    pub(crate) evaluation_interval: Duration,
    /// Labels identifying this replica to the outside (alerts, exports). Not stored with
    /// samples, as in Prometheus.
    pub(crate) external_labels: BTreeMap<String, String>,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        Self {
            scrape_interval: Duration::from_secs(60),
            scrape_timeout: None,
            evaluation_interval: Duration::from_secs(60),
            external_labels: BTreeMap::new(),
        }
    }
}

/// `server:`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerConfig {
    /// HTTP: `/metrics`, health and readiness.
    pub(crate) http_listen: String,
    /// Flight SQL (gRPC).
    pub(crate) flight_listen: String,
    /// A file holding the bearer token Flight SQL clients must send (`authorization: Bearer
    /// <token>`); surrounding whitespace is ignored. Unset: no authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) auth_token_file: Option<PathBuf>,
    /// TLS for Flight SQL. Unset: plaintext gRPC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tls: Option<TlsFiles>,
}

/// `server.tls`: the replica's certificate chain and private key, PEM files.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsFiles {
    /// Certificate chain, leaf first.
    pub(crate) cert_file: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub(crate) key_file: PathBuf,
}

/// What the Flight SQL listener needs from `server.auth_token_file` and `server.tls`, read.
#[derive(Clone, Default)]
pub(crate) struct FlightSecurity {
    /// The token clients must present.
    pub(crate) token: Option<String>,
    /// PEM certificate chain and key.
    pub(crate) tls: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for FlightSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token or the key.
        f.debug_struct("FlightSecurity")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl ServerConfig {
    /// Reads and checks the token and TLS files; relative paths start at `base_dir`. Errors
    /// name the key and the file, never the file's content.
    pub(crate) fn flight_security(&self, base_dir: &Path) -> Result<FlightSecurity, String> {
        let token = match &self.auth_token_file {
            None => None,
            Some(path) => {
                let path = base_dir.join(path);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    format!(
                        "server.auth_token_file: cannot read {}: {e}",
                        path.display()
                    )
                })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(format!(
                        "server.auth_token_file: {} is empty",
                        path.display()
                    ));
                }
                if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(format!(
                        "server.auth_token_file: the token in {} contains whitespace or \
                         control characters, which an HTTP header cannot carry",
                        path.display()
                    ));
                }
                Some(token.to_string())
            }
        };
        let tls = match &self.tls {
            None => None,
            Some(files) => Some(files.read(base_dir)?),
        };
        Ok(FlightSecurity { token, tls })
    }
}

impl TlsFiles {
    /// Reads both files and checks that they hold a certificate and a private key.
    fn read(&self, base_dir: &Path) -> Result<(Vec<u8>, Vec<u8>), String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let read = |key: &str, path: &Path| {
            let path = base_dir.join(path);
            std::fs::read(&path)
                .map(|bytes| (path.clone(), bytes))
                .map_err(|e| format!("server.tls.{key}: cannot read {}: {e}", path.display()))
        };
        let (cert_path, cert) = read("cert_file", &self.cert_file)?;
        let (key_path, key) = read("key_file", &self.key_file)?;
        let certs = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("server.tls.cert_file: {}: {e}", cert_path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "server.tls.cert_file: {} holds no PEM certificate",
                cert_path.display()
            ));
        }
        PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
            format!(
                "server.tls.key_file: {} holds no usable PEM private key ({e})",
                key_path.display()
            )
        })?;
        Ok((cert, key))
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            http_listen: "127.0.0.1:9190".into(),
            flight_listen: "127.0.0.1:9191".into(),
            auth_token_file: None,
            tls: None,
        }
    }
}

/// A configuration error, already phrased for the user.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConfigError(String);

/// Command-line overrides, applied after the file.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    /// `--data-dir`.
    pub(crate) data_dir: Option<PathBuf>,
    /// `--http-listen`.
    pub(crate) http_listen: Option<String>,
    /// `--flight-listen`.
    pub(crate) flight_listen: Option<String>,
}

impl Config {
    /// Reads and validates a file.
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigError> {
        let config = Self::read(path)?;
        config.validate(&path.display().to_string())?;
        Ok(config)
    }

    /// Reads a file without the cross-key checks, for callers that apply flags first and then
    /// call [`Self::validate`].
    pub(crate) fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        let mut config = Self::parse(&text, &path.display().to_string())?;
        config.base_dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(config)
    }

    /// The embedded default (see [`EMBEDDED_DEFAULT`]).
    pub(crate) fn embedded() -> Self {
        Self::parse(EMBEDDED_DEFAULT, "<embedded default>").expect("the embedded config parses")
    }

    /// True when this is the embedded default, whose self-scrape target follows the HTTP port.
    pub(crate) fn scrapes_self_placeholder(&self) -> bool {
        self.scrape_configs.iter().any(|j| {
            j.static_configs
                .iter()
                .any(|s| s.targets.iter().any(|t| t == "SELF"))
        })
    }

    /// Points the embedded default's self-scrape at the bound HTTP address.
    pub(crate) fn set_self_target(&mut self, address: &str) {
        for job in &mut self.scrape_configs {
            for sc in &mut job.static_configs {
                for t in &mut sc.targets {
                    if t == "SELF" {
                        *t = address.to_string();
                    }
                }
            }
        }
    }

    /// Parses YAML text; `origin` names it in errors.
    pub(crate) fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        // An empty file is an empty mapping: all defaults.
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_norway::from_str(text).map_err(|e| ConfigError(yaml_error(origin, &e)))
    }

    /// Applies command-line flags.
    pub(crate) fn apply(&mut self, o: &Overrides) {
        if let Some(d) = &o.data_dir {
            self.storage.path = d.clone();
        }
        if let Some(h) = &o.http_listen {
            self.server.http_listen = h.clone();
        }
        if let Some(f) = &o.flight_listen {
            self.server.flight_listen = f.clone();
        }
    }

    /// Checks what deserialisation cannot: relations between keys.
    pub(crate) fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let err = |msg: String| ConfigError(format!("{origin}: {msg}"));
        self.scrape_jobs().map_err(err)?;
        self.storage.validate().map_err(err)?;
        self.query.validate().map_err(err)?;
        for name in self.global.external_labels.keys() {
            if !storage::labels::is_valid_label_name(name) {
                return Err(err(format!(
                    "global.external_labels: invalid label name {name:?}"
                )));
            }
        }
        if let Some(label) = &self.replica_label
            && !self.global.external_labels.contains_key(label)
        {
            return Err(err(format!(
                "replica_label: {label:?} is not a key of global.external_labels"
            )));
        }
        for (key, addr) in [
            ("server.http_listen", &self.server.http_listen),
            ("server.flight_listen", &self.server.flight_listen),
        ] {
            if !addr.contains(':') {
                return Err(err(format!(
                    "{key}: {addr:?} must be host:port, e.g. 127.0.0.1:9190"
                )));
            }
        }
        self.server.flight_security(&self.base_dir).map_err(err)?;
        if self.server.http_listen == self.server.flight_listen {
            return Err(err(format!(
                "server.http_listen and server.flight_listen are both {}",
                self.server.http_listen
            )));
        }
        Ok(())
    }

    /// The scrape jobs with `global` defaults applied.
    pub(crate) fn scrape_jobs(&self) -> Result<Vec<ScrapeJob>, String> {
        let interval = self.global.scrape_interval;
        let timeout = match self.global.scrape_timeout {
            Some(t) if t > interval => {
                return Err(format!(
                    "global.scrape_timeout ({t}) is greater than global.scrape_interval ({interval})"
                ));
            }
            Some(t) => t,
            None => ScrapeDefaults::default().scrape_timeout.min(interval),
        };
        let defaults = ScrapeDefaults {
            scrape_interval: interval,
            scrape_timeout: timeout,
        };
        let mut seen = std::collections::HashSet::new();
        let mut jobs = Vec::new();
        for (i, sc) in self.scrape_configs.iter().enumerate() {
            if !seen.insert(sc.job_name.as_str()) {
                return Err(format!(
                    "scrape_configs[{i}].job_name: {:?} is used by an earlier job; job names must be unique",
                    sc.job_name
                ));
            }
            jobs.push(
                sc.resolve(&defaults, &self.base_dir)
                    .map_err(|e| format!("scrape_configs[{i}]: {e}"))?,
            );
        }
        Ok(jobs)
    }
}

/// `file:line:column: key.path: message` from a YAML error.
fn yaml_error(origin: &str, e: &serde_norway::Error) -> String {
    // serde_norway renders "path: message at line L column C"; move the position to the front,
    // where editors and CI logs look for it.
    let text = e.to_string();
    match e.location() {
        Some(loc) => {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            let message = text.strip_suffix(&suffix).unwrap_or(&text);
            format!("{origin}:{}:{}: {message}", loc.line(), loc.column())
        }
        None => format!("{origin}: {text}"),
    }
}

#[cfg(test)]
mod tests;
