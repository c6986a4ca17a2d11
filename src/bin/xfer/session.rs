//! Where and as whom to connect, and a session that connects (and reconnects) on demand.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use xfer::client::{Client, ConnectOptions};
use xfer::config::{client_config_dir, ClientConfig};

use crate::address::{parse_server, ServerSpec};
use crate::args::Global;
use crate::error::CliError;

/// Server used when neither flags, environment nor a profile name one.
const DEFAULT_SERVER: &str = "127.0.0.1:7070";

/// Where and as whom to connect, resolved from flags, environment and profile.
#[derive(Clone)]
pub struct Target {
    pub server: ServerSpec,
    pub user: String,
    pub config_dir: PathBuf,
    pub accept_new_host: bool,
}

impl Target {
    /// `USER@HOST` from an scp-style path overrides the configured login; the port is the
    /// configured one when the host is the same, else the default.
    pub fn resolve(g: &Global, login: Option<&(String, String)>) -> Result<Target, CliError> {
        let config_dir = client_config_dir();
        let config = ClientConfig::load(&config_dir).map_err(|e| CliError::usage(e.to_string()))?;
        let profile = config.profile(g.profile.as_deref());
        if let (Some(name), None) = (&g.profile, profile) {
            return Err(CliError::usage(format!(
                "no profile {name:?} in {}",
                config_dir.join("config.toml").display()
            )));
        }
        let server_text = g.server.clone().or_else(|| profile.and_then(|p| p.server.clone()));
        let mut server = parse_server(server_text.as_deref().unwrap_or(DEFAULT_SERVER))?;
        let mut user = g.user.clone().or_else(|| server.user.clone()).or_else(|| profile.and_then(|p| p.user.clone()));
        if let Some((u, host)) = login {
            if *host != server.host {
                server = parse_server(host)?;
            }
            user = Some(u.clone());
        }
        let user = user.ok_or_else(|| {
            CliError::usage("no user: pass --user NAME or --server USER@HOST, set XFER_USER, or set one in a profile")
        })?;
        Ok(Target { server, user, config_dir, accept_new_host: g.accept_new_host })
    }

    /// Connects and sends the login; the first command goes out behind it without waiting
    /// (CTRL-AUTH-6), and a refused login is what that command reports.
    pub async fn login(&self, password: &str) -> Result<Client, CliError> {
        Ok(Client::connect_and_login(&self.connect_options(), &self.user, password).await?)
    }

    /// Connects without logging in: [`Client::send_login`] sends it later.
    pub async fn connect(&self) -> Result<Client, CliError> {
        Ok(Client::connect(&self.connect_options()).await?)
    }

    fn connect_options(&self) -> ConnectOptions {
        ConnectOptions {
            server: self.server.addr(),
            config_dir: self.config_dir.clone(),
            accept_new_host: self.accept_new_host,
            confirm_new_host: std::io::stdin().is_terminal().then(|| Box::new(ask_trust) as _),
        }
    }
}

fn ask_trust(host: &str, fingerprint: &str) -> bool {
    let _ = write!(
        std::io::stderr(),
        "The server {host} is not known yet.\nIts certificate fingerprint is {fingerprint}.\nTrust it and continue? [y/N] "
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes" | "YES")
}

/// The password from `XFER_PASSWORD`, else a prompt in a terminal.
pub fn password(user: &str) -> Result<String, CliError> {
    if let Ok(pw) = std::env::var("XFER_PASSWORD") {
        return Ok(pw);
    }
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password(format!("Password for {user}: "))
            .map_err(|e| CliError::usage(format!("reading the password: {e}")));
    }
    Err(CliError::usage("no password: set XFER_PASSWORD or run in a terminal"))
}

/// A login that is made when first needed and made again after the connection is lost,
/// returning to the last working directory.
pub struct Session {
    pub target: Target,
    password: String,
    client: Option<Client>,
    /// The client is connected but has not sent its login yet ([`Session::connect_ahead`]).
    login_deferred: bool,
    /// The remote working directory to restore after a reconnect.
    pub cwd: Option<String>,
}

impl Session {
    pub fn new(target: Target, password: String) -> Session {
        Session { target, password, client: None, login_deferred: false, cwd: None }
    }

    /// Another session of the same login in the same directory, not connected yet.
    pub fn sibling(&self) -> Session {
        Session {
            target: self.target.clone(),
            password: self.password.clone(),
            client: None,
            login_deferred: false,
            cwd: self.cwd.clone(),
        }
    }

    /// The logged-in client, connecting (and restoring the directory) if needed.
    pub async fn client(&mut self) -> Result<&mut Client, CliError> {
        if self.client.as_ref().is_some_and(|c| !c.is_usable()) {
            self.client = None;
        }
        let mut c = match self.client.take() {
            Some(mut c) if self.login_deferred => {
                self.login_deferred = false;
                c.send_login(&self.target.user, &self.password).await?;
                c
            }
            Some(c) => {
                self.client = Some(c);
                return self.client.as_mut().ok_or_else(|| CliError::general("not connected"));
            }
            None => self.target.login(&self.password).await?,
        };
        if let Some(cwd) = &self.cwd {
            c.cd(cwd).await?;
        }
        Ok(self.client.insert(c))
    }

    /// Connects (TCP, TLS, the version preamble) without logging in: the login goes out with
    /// the first request after [`Session::client`], so a session opened ahead of its work
    /// costs the server no password check until it has some.
    pub async fn connect_ahead(&mut self) -> Result<(), CliError> {
        if self.client.is_none() {
            self.client = Some(self.target.connect().await?);
            self.login_deferred = true;
        }
        Ok(())
    }

    /// True while a login is held (for completion, which must not connect by itself).
    pub fn is_connected(&self) -> bool {
        self.client.as_ref().is_some_and(|c| c.is_usable())
    }

    /// Forgets the connection (after an interrupted command or a lost connection).
    pub fn drop_connection(&mut self) {
        self.client = None;
    }

    pub async fn close(&mut self) {
        if let Some(c) = self.client.take() {
            c.bye().await;
        }
    }
}
