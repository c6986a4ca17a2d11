//! Server addresses (`[USER@]HOST[:PORT]`, `[V6]:PORT`) and scp-style remote specs in path
//! arguments (`USER@HOST:PATH`).

use crate::error::CliError;

/// Port used when an address names none.
pub const DEFAULT_PORT: u16 = 7070;

/// A parsed `--server` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    pub user: Option<String>,
    /// Host as written, IPv6 in brackets.
    pub host: String,
    pub port: u16,
}

impl ServerSpec {
    /// `HOST:PORT`, as connected to and as keyed in `known_hosts`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Parses `[USER@]HOST[:PORT]`; HOST may be `[IPv6]` or a bare IPv6 address (then no port).
pub fn parse_server(s: &str) -> Result<ServerSpec, CliError> {
    let bad = |why: &str| CliError::usage(format!("invalid server address {s:?}: {why}"));
    let (user, rest) = match s.split_once('@') {
        Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
        Some(_) => return Err(bad("empty user name before '@'")),
        None => (None, s),
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (inside, after) = v6.split_once(']').ok_or_else(|| bad("missing ']'"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad("expected ':PORT' after ']'"))?),
        };
        (format!("[{inside}]"), port)
    } else if rest.matches(':').count() > 1 {
        (format!("[{rest}]"), None)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(bad("no host"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| bad("the port must be 1-65535"))?,
    };
    Ok(ServerSpec { user, host, port })
}

/// A path argument split into an optional `USER@HOST` and the remote path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteArg {
    pub login: Option<(String, String)>,
    pub path: String,
}

/// Reads a remote path argument. `USER@HOST:PATH` names the server (scp syntax); `HOST:PATH`
/// without a user is ambiguous with a file name holding a colon and is refused; anything that
/// starts with `/` or `./`, or has a `/` before the first `:`, is a plain path.
pub fn remote_arg(arg: &str) -> Result<RemoteArg, CliError> {
    let plain = || Ok(RemoteArg { login: None, path: arg.to_string() });
    if let Some((user, rest)) =
        arg.split_once('@').filter(|(u, r)| !u.is_empty() && !u.contains('/') && r.starts_with('['))
    {
        if let Some((host, path)) = rest.split_once("]:") {
            return Ok(RemoteArg { login: Some((user.to_string(), format!("{host}]"))), path: path.to_string() });
        }
    }
    let Some((before, path)) = arg.split_once(':') else { return plain() };
    if before.is_empty() || before.contains('/') || arg.starts_with("./") {
        return plain();
    }
    match before.split_once('@') {
        Some((user, host)) if !user.is_empty() && !host.is_empty() => {
            Ok(RemoteArg { login: Some((user.to_string(), host.to_string())), path: path.to_string() })
        }
        _ => Err(CliError::usage(format!(
            "{arg:?} looks like HOST:PATH; write USER@HOST:PATH to name a server, or ./{arg} for a file of that name"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> (Option<String>, String) {
        let p = parse_server(s).unwrap();
        (p.user.clone(), p.addr())
    }

    #[test]
    fn accepts_hosts_with_and_without_port_user_and_ipv6() {
        assert_eq!(spec("localhost"), (None, "localhost:7070".into()));
        assert_eq!(spec("localhost:9000"), (None, "localhost:9000".into()));
        assert_eq!(spec("alice@files.lab"), (Some("alice".into()), "files.lab:7070".into()));
        assert_eq!(spec("alice@10.0.0.1:7"), (Some("alice".into()), "10.0.0.1:7".into()));
        assert_eq!(spec("[::1]:8080"), (None, "[::1]:8080".into()));
        assert_eq!(spec("bob@[::1]"), (Some("bob".into()), "[::1]:7070".into()));
        assert_eq!(spec("::1"), (None, "[::1]:7070".into()));
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in ["", "@host", "host:", "host:0", "host:99999", "host:x", "[::1", "[::1]x", "[]:1"] {
            assert!(parse_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_scp_style_specs_and_refuses_ambiguous_ones() {
        let r = remote_arg("alice@host:dir/x").unwrap();
        assert_eq!(r.login, Some(("alice".into(), "host".into())));
        assert_eq!(r.path, "dir/x");
        assert_eq!(remote_arg("alice@host:").unwrap().path, "");
        let v6 = remote_arg("bob@[::1]:d/f").unwrap();
        assert_eq!((v6.login, v6.path.as_str()), (Some(("bob".into(), "[::1]".into())), "d/f"));
        for plain in ["file", "dir/a:b", "./a:b", "/a:b", ":x"] {
            let r = remote_arg(plain).unwrap();
            assert_eq!((r.login, r.path.as_str()), (None, plain), "{plain}");
        }
        assert!(remote_arg("notes:2024").is_err());
    }
}
