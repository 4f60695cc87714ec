//! Typed settings, layered: the built-in `config/default.toml` < the file named by
//! `--config` / `LATCHKEY_CONFIG` < `LATCHKEY_*` environment variables.
//!
//! Every layer is checked against the built-in defaults, so an unknown key in a file or an
//! unknown `LATCHKEY_*` variable is an error that names it, instead of a silent no-op.

use std::path::Path;

use serde::Deserialize;

/// The built-in defaults, documented key by key.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Short environment names promised by the spec, and the key each one sets.
const ENV_ALIASES: &[(&str, &str, &str)] = &[
    ("LATCHKEY_PUBLIC_URL", "server", "public_url"),
    ("LATCHKEY_BIND", "server", "bind"),
    ("LATCHKEY_DATABASE_URL", "database", "url"),
    ("LATCHKEY_REDIS_URL", "redis", "url"),
    ("LATCHKEY_SMTP_URL", "mail", "smtp_url"),
    ("LATCHKEY_MAIL_FROM", "mail", "from"),
];

/// Variables with the prefix that are not settings.
const ENV_NOT_SETTINGS: &[&str] = &["LATCHKEY_CONFIG"];
const ENV_IGNORED_PREFIXES: &[&str] = &["LATCHKEY_TEST_"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("configuration {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("unknown configuration key `{key}` in {origin}")]
    UnknownKey { key: String, origin: String },
    #[error("environment variable {name}: expected {expected}, got {value:?}")]
    EnvType {
        name: String,
        expected: &'static str,
        value: String,
    },
    #[error("invalid setting {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub mail: MailSettings,
    pub password: PasswordSettings,
    pub session: SessionSettings,
    pub reset: ResetSettings,
    pub throttle: ThrottleSettings,
    pub log: LogSettings,
    pub dev: DevSettings,
    pub oidc: OidcSettings,
    pub sso: SsoSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoSettings {
    pub upstream_timeout_ms: u64,
    pub allow_http_loopback_issuers: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    pub access_token_seconds: u64,
    pub id_token_seconds: u64,
    pub refresh_token_seconds: u64,
    pub code_seconds: u64,
    pub key_activation_delay_seconds: u64,
    /// Only from the environment; `Debug` prints `[redacted]`.
    pub key_encryption_key: crate::domain::Secret,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub public_url: String,
    pub bind: String,
    pub trust_forwarded_for: bool,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: String,
    pub key_prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSettings {
    pub smtp_url: String,
    pub from: String,
    pub poll_interval_ms: u64,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordSettings {
    pub require_composition: bool,
    pub min_length_temporary: usize,
    pub min_length_chosen: usize,
    pub max_length: usize,
    pub temporary_valid_hours: u64,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    pub hash_concurrency: usize,
    pub hash_queue: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    pub idle_timeout_seconds: u64,
    pub absolute_timeout_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetSettings {
    pub token_valid_minutes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleSettings {
    pub account_free_failures: u32,
    pub account_delay_initial_seconds: u64,
    pub account_delay_max_seconds: u64,
    pub ip_max_failures: u32,
    pub ip_window_seconds: u64,
    pub reset_mails_per_address_per_hour: u32,
    pub reset_mails_per_ip_per_hour: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: String,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevSettings {
    pub seed_demo: bool,
}

impl Settings {
    /// Loads the layers from the real process environment.
    pub fn load(config_file: Option<&Path>) -> Result<Self, ConfigError> {
        let from_env = std::env::var("LATCHKEY_CONFIG").ok();
        let file = config_file
            .map(Path::to_path_buf)
            .or_else(|| from_env.map(Into::into));
        let overlay = match file {
            Some(path) => Some((
                path.display().to_string(),
                std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?,
            )),
            None => None,
        };
        Self::from_layers(
            overlay.as_ref().map(|(p, t)| (p.as_str(), t.as_str())),
            std::env::vars(),
        )
    }

    /// Builds settings from an optional overlay file `(origin, text)` and a set of
    /// environment variables; tests call this with their own variables.
    pub fn from_layers(
        overlay: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut merged = parse_table("config/default.toml", DEFAULT_TOML)?;
        let defaults = merged.clone();
        if let Some((origin, text)) = overlay {
            let table = parse_table(origin, text)?;
            merge_checked(&mut merged, &defaults, table, origin)?;
        }
        for (name, value) in env {
            if !name.starts_with("LATCHKEY_")
                || ENV_NOT_SETTINGS.contains(&name.as_str())
                || ENV_IGNORED_PREFIXES.iter().any(|p| name.starts_with(p))
            {
                continue;
            }
            let (section, key) = env_target(&name, &defaults)?;
            let typed = typed_env_value(&name, &value, &defaults[&section][&key])?;
            if let Some(toml::Value::Table(table)) = merged.get_mut(&section) {
                table.insert(key, typed);
            }
        }
        let settings: Settings =
            toml::Value::Table(merged)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    origin: "settings".into(),
                    message: e.to_string(),
                })?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if !matches!(self.log.format.as_str(), "json" | "pretty") {
            return Err(ConfigError::Invalid {
                key: "log.format",
                message: format!("{:?}: expected \"json\" or \"pretty\"", self.log.format),
            });
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::Invalid {
                key: "log.level",
                message: format!(
                    "{:?} is not a tracing filter (e.g. \"info\")",
                    self.log.level
                ),
            });
        }
        let port_ok = self
            .server
            .bind
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(ConfigError::Invalid {
                key: "server.bind",
                message: format!("{:?} is not host:port", self.server.bind),
            });
        }
        let url = url::Url::parse(&self.server.public_url).map_err(|e| ConfigError::Invalid {
            key: "server.public_url",
            message: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ConfigError::Invalid {
                key: "server.public_url",
                message: "must be an http or https URL with a host".into(),
            });
        }
        if self.password.min_length_temporary == 0
            || self.password.min_length_chosen < self.password.min_length_temporary
            || self.password.max_length < self.password.min_length_chosen
        {
            return Err(ConfigError::Invalid {
                key: "password.min_length_*",
                message: "need 0 < min_length_temporary <= min_length_chosen <= max_length".into(),
            });
        }
        if self.session.idle_timeout_seconds == 0 || self.session.absolute_timeout_seconds == 0 {
            return Err(ConfigError::Invalid {
                key: "session.*_timeout_seconds",
                message: "must be positive".into(),
            });
        }
        Ok(())
    }

    /// The public URL without a trailing slash, the base of every link Latchkey builds.
    pub fn public_base(&self) -> &str {
        self.server.public_url.trim_end_matches('/')
    }

    pub fn is_https(&self) -> bool {
        self.server.public_url.starts_with("https://")
    }
}

fn parse_table(origin: &str, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        origin: origin.into(),
        message: e.to_string(),
    })
}

/// Overlays `table` onto `merged`, refusing sections and keys the defaults do not have.
fn merge_checked(
    merged: &mut toml::Table,
    defaults: &toml::Table,
    table: toml::Table,
    origin: &str,
) -> Result<(), ConfigError> {
    for (section, value) in table {
        let Some(toml::Value::Table(known)) = defaults.get(&section) else {
            return Err(ConfigError::UnknownKey {
                key: section,
                origin: origin.into(),
            });
        };
        let toml::Value::Table(entries) = value else {
            return Err(ConfigError::Parse {
                origin: origin.into(),
                message: format!("`{section}` must be a table"),
            });
        };
        for (key, value) in entries {
            if !known.contains_key(&key) {
                return Err(ConfigError::UnknownKey {
                    key: format!("{section}.{key}"),
                    origin: origin.into(),
                });
            }
            if let Some(toml::Value::Table(target)) = merged.get_mut(&section) {
                target.insert(key, value);
            }
        }
    }
    Ok(())
}

/// Finds the `(section, key)` an environment variable sets.
fn env_target(name: &str, defaults: &toml::Table) -> Result<(String, String), ConfigError> {
    if let Some((_, section, key)) = ENV_ALIASES.iter().find(|(alias, _, _)| *alias == name) {
        return Ok(((*section).into(), (*key).into()));
    }
    let rest = &name["LATCHKEY_".len()..];
    for (section, value) in defaults {
        let toml::Value::Table(keys) = value else {
            continue;
        };
        let Some(key_part) = rest
            .strip_prefix(&section.to_ascii_uppercase())
            .and_then(|r| r.strip_prefix('_'))
        else {
            continue;
        };
        if let Some(key) = keys.keys().find(|k| k.to_ascii_uppercase() == key_part) {
            return Ok((section.clone(), key.clone()));
        }
    }
    Err(ConfigError::UnknownKey {
        key: name.into(),
        origin: "the environment".into(),
    })
}

fn typed_env_value(
    name: &str,
    value: &str,
    default: &toml::Value,
) -> Result<toml::Value, ConfigError> {
    let mismatch = |expected| ConfigError::EnvType {
        name: name.into(),
        expected,
        value: value.into(),
    };
    Ok(match default {
        toml::Value::Integer(_) => toml::Value::Integer(
            value
                .trim()
                .parse()
                .map_err(|_| mismatch("a whole number"))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(match value.trim() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(mismatch("true or false")),
        }),
        _ => toml::Value::String(value.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_and_meet_the_owasp_argon2_minimum() {
        let s = Settings::from_layers(None, env(&[])).unwrap();
        assert_eq!(s.server.public_url, "http://127.0.0.1:8080");
        assert_eq!(s.redis.url, "memory://");
        assert!(s.password.argon2_memory_kib >= 19456);
        assert!(s.password.argon2_iterations >= 2);
        assert!(s.password.argon2_parallelism >= 1);
    }

    #[test]
    fn spec_environment_names_and_generic_names_both_work() {
        let s = Settings::from_layers(
            None,
            env(&[
                ("LATCHKEY_PUBLIC_URL", "https://id.example.com"),
                ("LATCHKEY_DATABASE_URL", "postgres://x@y/z"),
                ("LATCHKEY_SESSION_IDLE_TIMEOUT_SECONDS", "60"),
                ("LATCHKEY_DEV_SEED_DEMO", "false"),
                ("LATCHKEY_TEST_WHATEVER", "ignored"),
            ]),
        )
        .unwrap();
        assert!(s.is_https());
        assert_eq!(s.database.url, "postgres://x@y/z");
        assert_eq!(s.session.idle_timeout_seconds, 60);
        assert!(!s.dev.seed_demo);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = Settings::from_layers(Some(("site.toml", "[server]\nbnd = \"x\"\n")), env(&[]))
            .unwrap_err();
        assert!(err.to_string().contains("server.bnd"), "{err}");
        let err =
            Settings::from_layers(Some(("site.toml", "[nope]\na = 1\n")), env(&[])).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = Settings::from_layers(None, env(&[("LATCHKEY_SESSION_IDLE", "1")])).unwrap_err();
        assert!(err.to_string().contains("LATCHKEY_SESSION_IDLE"), "{err}");
    }

    #[test]
    fn nonsense_log_settings_and_bind_addresses_are_refused() {
        for (name, value) in [
            ("LATCHKEY_LOG_FORMAT", "xml"),
            ("LATCHKEY_LOG_LEVEL", "[[["),
            ("LATCHKEY_BIND", "8080"),
        ] {
            let err = Settings::from_layers(None, env(&[(name, value)])).unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { .. }),
                "{name}={value}: {err}"
            );
        }
        assert!(Settings::from_layers(None, env(&[("LATCHKEY_BIND", "localhost:9000")])).is_ok());
    }

    #[test]
    fn badly_typed_environment_values_are_refused() {
        let err = Settings::from_layers(
            None,
            env(&[("LATCHKEY_SESSION_IDLE_TIMEOUT_SECONDS", "soon")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("whole number"), "{err}");
    }
}
