//! The command line: `serve`, `migrate`, and the administration verbs of SPEC §6.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::domain::Role;
use crate::idm::clients::NewClient;
use crate::idm::ports::{Clock, SystemClock};
use crate::idm::staff::{DemoSeed, NewStaff};
use crate::startup::{self, Application};

#[derive(Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Sign-in service for estate agency staff"
)]
pub struct Cli {
    /// A configuration file layered over the built-in defaults (or LATCHKEY_CONFIG).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the server (migrates the database first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage agencies.
    Agency {
        #[command(subcommand)]
        command: AgencyCommand,
    },
    /// Manage staff accounts.
    Staff {
        #[command(subcommand)]
        command: StaffCommand,
    },
    /// Register the company's apps (OAuth clients).
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// An agency's corporate single sign-on.
    Sso {
        #[command(subcommand)]
        command: SsoCommand,
    },
    /// Token signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Register an app; prints JSON with client_id and client_secret (shown once).
    Create {
        #[arg(long)]
        name: String,
        /// Exact redirect URI; repeat for several.
        #[arg(long = "redirect-uri", required = true)]
        redirect_uris: Vec<String>,
        /// Where the app may be sent after sign-out; repeat for several.
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        /// A browser or native app without a secret (PKCE only).
        #[arg(long)]
        public: bool,
        /// Not one of the company's own apps: people are asked for consent.
        #[arg(long)]
        third_party: bool,
        /// Allowed grant type (authorization_code, refresh_token, client_credentials);
        /// repeat for several. Default: all that fit the client.
        #[arg(long = "grant")]
        grants: Vec<String>,
        /// Allowed scope (openid, profile, email, offline_access, staff:admin); repeat
        /// for several. Default: openid profile email offline_access.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// The algorithm that signs this app's ID tokens: RS256 (default) or ES256.
        #[arg(long)]
        id_token_alg: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum SsoCommand {
    /// Connect (or replace) the agency's upstream OpenID Connect provider. The issuer's
    /// discovery document is fetched and must name exactly this issuer.
    Set {
        /// The agency's slug.
        #[arg(long)]
        agency: String,
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        client_id: String,
        #[arg(long)]
        client_secret: String,
        /// An email domain the agency owns; repeat for several.
        #[arg(long = "domain", required = true)]
        domains: Vec<String>,
        /// Scopes to ask for (default: openid email profile); repeat for several.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Password sign-in and reset off for these domains (owners keep break-glass).
        #[arg(long)]
        enforce: bool,
        /// Create a staff account on first sign-in for unknown people.
        #[arg(long)]
        create_accounts: bool,
    },
    /// Show the agency's connection (never the secret).
    Show {
        #[arg(long)]
        agency: String,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Publish new signing keys now; they sign after oidc.key_activation_delay_seconds.
    Rotate,
}

#[derive(Subcommand)]
pub enum AgencyCommand {
    /// Create an agency.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        slug: String,
        /// Staff reset their own password through an emailed link.
        #[arg(long)]
        sso: bool,
    },
}

#[derive(Subcommand)]
pub enum StaffCommand {
    /// Create a staff account.
    Create {
        /// The agency's slug.
        #[arg(long)]
        agency: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        /// owner, client_admin or staff.
        #[arg(long)]
        role: Role,
        /// A temporary password the person must change at first sign-in.
        #[arg(long)]
        temporary_password: Option<String>,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    crate::telemetry::init(&settings.log);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now();
    match cli.command {
        Command::Serve => {
            warn_if_development(&settings);
            let seed_demo = settings.dev.seed_demo;
            let components = startup::build(settings, clock.clone()).await?;
            // Listen first: if the address is taken, nothing is seeded and no demo password
            // is printed that a second start would not print again.
            let app = Application::start(components).await?;
            if seed_demo && let Some(seed) = app.idm.seed_demo_if_empty(now).await? {
                print_demo(&seed, app.settings.public_base());
            }
            app.run_until_stopped().await
        }
        command @ (Command::Client { .. } | Command::Keys { .. } | Command::Sso { .. }) => {
            run_oidc_command(command, settings, clock).await
        }
        Command::Migrate => {
            let components = startup::build(settings, clock).await?;
            components.store.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::Agency {
            command: AgencyCommand::Create { name, slug, sso },
        } => {
            let components = startup::build(settings, clock).await?;
            let agency = components.idm.create_agency(&name, &slug, sso).await?;
            println!(
                "{}",
                serde_json::json!({ "id": agency.id.0, "slug": agency.slug, "name": agency.name, "sso": agency.sso_enabled })
            );
            Ok(())
        }
        Command::Staff {
            command:
                StaffCommand::Create {
                    agency,
                    email,
                    name,
                    role,
                    temporary_password,
                },
        } => {
            let components = startup::build(settings, clock).await?;
            let account = components
                .idm
                .create_staff(
                    &NewStaff {
                        agency_slug: &agency,
                        email: &email,
                        name: &name,
                        role,
                        temporary_password: temporary_password.as_deref(),
                    },
                    now,
                )
                .await
                .map_err(describe_cli_error)?;
            println!(
                "{}",
                serde_json::json!({ "id": account.id.0, "email": account.email.as_str(), "role": account.role.as_str() })
            );
            Ok(())
        }
    }
}

async fn run_oidc_command(
    command: Command,
    settings: Settings,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    let now = clock.now();
    let components = startup::build(settings, clock).await?;
    match command {
        Command::Client {
            command:
                ClientCommand::Create {
                    name,
                    redirect_uris,
                    post_logout_redirect_uris,
                    public,
                    third_party,
                    grants,
                    scopes,
                    id_token_alg,
                },
        } => {
            let (client, secret) = components
                .idm
                .register_client(
                    &NewClient {
                        name: &name,
                        redirect_uris: &redirect_uris,
                        post_logout_redirect_uris: &post_logout_redirect_uris,
                        public,
                        third_party,
                        grant_types: &grants,
                        scopes: &scopes,
                        id_token_alg: id_token_alg.as_deref(),
                    },
                    now,
                )
                .await?;
            println!(
                "{}",
                serde_json::json!({
                    "client_id": client.id,
                    "client_secret": secret.as_ref().map(|s| s.expose()),
                    "redirect_uris": client.redirect_uris,
                    "post_logout_redirect_uris": client.post_logout_redirect_uris,
                    "grant_types": client.grant_types,
                    "scopes": client.scopes,
                    "public": client.is_public(),
                    "first_party": client.first_party,
                    "id_token_signed_response_alg": client.id_token_alg,
                })
            );
        }
        Command::Keys {
            command: KeysCommand::Rotate,
        } => {
            let kids = components.idm.rotate_keys(now).await?;
            println!(
                "{}",
                serde_json::json!({
                    "published": kids,
                    "signing_from": now + components.idm.rules.key_activation_delay_seconds,
                })
            );
        }
        Command::Sso { command } => run_sso_command(&components, command, now).await?,
        _ => {}
    }
    components.store.close().await;
    Ok(())
}

async fn run_sso_command(
    components: &startup::Components,
    command: SsoCommand,
    now: i64,
) -> anyhow::Result<()> {
    let idm = &components.idm;
    let agency_of = async |slug: &str| {
        idm.directory
            .agency_by_slug(slug)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no agency with slug {slug:?}"))
    };
    let show = |c: &crate::domain::sso::SsoConnection, slug: &str| {
        serde_json::json!({
            "agency": slug,
            "issuer": c.issuer,
            "client_id": c.client_id,
            "client_secret": "[stored, not shown]",
            "domains": c.domains,
            "scopes": c.scopes,
            "enforce": c.enforce,
            "create_accounts": c.create_accounts,
            "redirect_uri": idm.sso_redirect_uri(),
        })
    };
    match command {
        SsoCommand::Set {
            agency,
            issuer,
            client_id,
            client_secret,
            domains,
            scopes,
            enforce,
            create_accounts,
        } => {
            let found = agency_of(&agency).await?;
            let connection = idm
                .configure_sso(
                    None,
                    &found.id,
                    &crate::idm::sso::SsoSettingsInput {
                        issuer: &issuer,
                        client_id: &client_id,
                        client_secret: &client_secret,
                        domains: &domains,
                        scopes: &scopes,
                        enforce,
                        create_accounts,
                    },
                    &crate::idm::RequestContext {
                        now,
                        ip: "cli".into(),
                        user_agent: "latchkey cli".into(),
                    },
                )
                .await
                .map_err(|e| match e {
                    crate::idm::IdmError::SsoSetup(problems) => anyhow::anyhow!(problems.join(" ")),
                    other => anyhow::anyhow!(other),
                })?;
            println!("{}", show(&connection, &agency));
        }
        SsoCommand::Show { agency } => {
            let found = agency_of(&agency).await?;
            match idm.sso_connection_of(&found.id).await? {
                Some(connection) => println!("{}", show(&connection, &agency)),
                None => anyhow::bail!("agency {agency:?} has no single sign-on connection"),
            }
        }
    }
    Ok(())
}

fn describe_cli_error(err: crate::idm::IdmError) -> anyhow::Error {
    match err {
        crate::idm::IdmError::PasswordPolicy(violations) => anyhow::anyhow!(
            "password_policy: {}",
            violations
                .iter()
                .map(|v| format!("{} ({})", v.message(), v.code()))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        other => anyhow::anyhow!(other),
    }
}

fn warn_if_development(settings: &Settings) {
    let defaults = Settings::from_layers(None, std::iter::empty()).ok();
    if let Some(defaults) = defaults
        && settings.server.public_url == defaults.server.public_url
        && settings.server.bind != defaults.server.bind
    {
        tracing::warn!(
            bind = %settings.server.bind,
            public_url = %settings.server.public_url,
            "LATCHKEY_BIND changed but LATCHKEY_PUBLIC_URL did not: links and the issuer still name the default address"
        );
    }
    let mut parts = Vec::new();
    if settings.database.url.starts_with("sqlite:") {
        parts.push("SQLite database");
    }
    if settings.redis.url.starts_with("memory://") {
        parts.push("in-process session store (one process only)");
    }
    if settings.mail.smtp_url.starts_with("outbox://") {
        parts.push("mail written to an outbox folder (see /dev/mail)");
    }
    if !parts.is_empty() {
        tracing::warn!(
            embedded = %parts.join(", "),
            "DEVELOPMENT SETUP: not for production; set LATCHKEY_DATABASE_URL, LATCHKEY_REDIS_URL and LATCHKEY_SMTP_URL"
        );
    }
}

/// Printed to standard output (never to the log) on the first start of an empty database.
fn print_demo(seed: &DemoSeed, public_base: &str) {
    println!();
    println!(
        "Latchkey demo agency \"{}\" created (self-service reset enabled).",
        seed.agency.name
    );
    println!("Sign in at {public_base}/login with a temporary password; you will choose your own.");
    println!(
        "  owner:     {}  temporary password: {}",
        seed.owner.0.email, seed.owner.1
    );
    println!(
        "  colleague: {}  temporary password: {}",
        seed.colleague.0.email, seed.colleague.1
    );
    println!(
        "  demo app:  client_id {}  client_secret {}  redirect_uri {}",
        seed.client.0.id,
        seed.client.1,
        seed.client.0.redirect_uris.join(" ")
    );
    println!("Mail is shown at {public_base}/dev/mail.");
    println!();
}
