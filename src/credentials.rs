//! The mount's target and login: parses the ftp:// URL and finds the password
//! (URL, password file, FTPFS_PASSWORD, ~/.netrc, prompt), in that order.

use std::path::Path;

use percent_encoding::percent_decode_str;

use crate::ftp::conn::Secret;
use crate::ftp::tls::TlsMode;

/// Where to connect and which remote directory to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// Relative to the login directory, or absolute when it starts with `/`.
    pub path: String,
    /// TLS the scheme asks for: `ftpes://` explicit, `ftps://` implicit, `ftp://` none
    /// (then `-o tls` decides).
    pub tls: TlsMode,
}

impl Target {
    /// The URL without the password, for messages and /proc/mounts.
    pub fn display(&self, user: &str) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let path = format!("/{}", self.path);
        let scheme = match self.tls {
            TlsMode::Implicit => "ftps",
            TlsMode::Explicit => "ftpes",
            TlsMode::Off | TlsMode::Try => "ftp",
        };
        format!(
            "{scheme}://{user}@{host}:{}{}",
            self.port,
            path.trim_end_matches('/')
        )
    }
}

fn decode(s: &str, what: &str) -> Result<String, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("the URL's {what} is not valid UTF-8 after percent-decoding"))
}

/// Parses `ftp://[user[:password]@]host[:port][/path]`.
pub fn parse_url(s: &str) -> Result<Target, String> {
    let url = url::Url::parse(s).map_err(|e| format!("malformed URL {:?}: {e}", redact(s)))?;
    let tls = match url.scheme() {
        "ftp" => TlsMode::Off,
        "ftpes" => TlsMode::Explicit,
        "ftps" => TlsMode::Implicit,
        other => {
            return Err(format!(
                "unsupported URL scheme {other:?}; use ftp://, ftpes:// (explicit TLS) or ftps:// (implicit TLS)"
            ))
        }
    };
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err(format!("the URL {:?} has no host", redact(s))),
    };
    if host.is_empty() {
        return Err(format!("the URL {:?} has no host", redact(s)));
    }
    let user = match url.username() {
        "" => None,
        u => Some(decode(u, "user name")?),
    };
    let password = url
        .password()
        .map(|p| decode(p, "password"))
        .transpose()?
        .map(Secret::new);
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the URL must not have a query (?) or fragment (#)".into());
    }
    // RFC 1738: the path is relative to the login directory; "//x" or "/%2Fx" is absolute.
    let raw_path = url.path();
    let rel = raw_path.strip_prefix('/').unwrap_or(raw_path);
    let path = decode(rel, "path")?;
    if path.contains(['\r', '\n', '\0']) {
        return Err("the URL's path contains a control character".into());
    }
    Ok(Target {
        host,
        port: url
            .port()
            .unwrap_or(if tls == TlsMode::Implicit { 990 } else { 21 }),
        user,
        password,
        path,
        tls,
    })
}

/// The URL with any password replaced, for error messages.
pub fn redact(s: &str) -> String {
    match (s.find("://"), s.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &s[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(c) => format!(
                    "{}{}:****{}",
                    &s[..scheme_end + 3],
                    &userinfo[..c],
                    &s[at..]
                ),
                None => s.to_string(),
            }
        }
        _ => s.to_string(),
    }
}

/// One entry found in a netrc file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetrcEntry {
    pub login: Option<String>,
    pub password: Option<String>,
}

/// Finds `host` (or `default`) in netrc text; with `user` given, the entry must match it.
pub fn netrc_lookup(text: &str, host: &str, user: Option<&str>) -> Option<NetrcEntry> {
    let mut tokens = text.split_whitespace().peekable();
    let mut entries: Vec<(Option<String>, NetrcEntry)> = Vec::new();
    while let Some(tok) = tokens.next() {
        match tok {
            "machine" => {
                let m = tokens.next().map(str::to_string);
                entries.push((
                    m,
                    NetrcEntry {
                        login: None,
                        password: None,
                    },
                ));
            }
            "default" => entries.push((
                None,
                NetrcEntry {
                    login: None,
                    password: None,
                },
            )),
            "login" | "password" | "account" => {
                let v = tokens.next().map(str::to_string);
                if let Some((_, e)) = entries.last_mut() {
                    match tok {
                        "login" => e.login = v,
                        "password" => e.password = v,
                        _ => {}
                    }
                }
            }
            "macdef" => {
                // A macro runs to the next blank line; token-wise, skip to the next keyword.
                let _ = tokens.next();
                while let Some(t) = tokens.peek() {
                    if matches!(*t, "machine" | "default") {
                        break;
                    }
                    tokens.next();
                }
            }
            _ => {}
        }
    }
    let fits = |e: &NetrcEntry| user.is_none() || e.login.as_deref() == user;
    entries
        .iter()
        .find(|(m, e)| m.as_deref() == Some(host) && fits(e))
        .or_else(|| entries.iter().find(|(m, e)| m.is_none() && fits(e)))
        .map(|(_, e)| e.clone())
}

/// Reads the first line of a password file. A regular file that group or others
/// may access is refused, as ssh refuses such a key: the password would not be secret.
/// (A pipe such as `password_file=/dev/stdin` is not checked.)
pub fn read_password_file(path: &Path) -> Result<Secret, String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let cannot = |e: std::io::Error| format!("cannot read password file {}: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    let mode = meta.permissions().mode() & 0o777;
    if meta.is_file() && mode & 0o077 != 0 {
        return Err(format!(
            "password file {} is accessible by group or others (mode {mode:04o}); run: chmod 600 {}",
            path.display(),
            path.display()
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(cannot)?;
    let line = text.lines().next().unwrap_or("");
    Ok(Secret::new(line.trim_end_matches('\r')))
}

/// Where the final login came from; never holds the password in Debug output.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub password: Secret,
}

/// Asks the user for a password, given a prompt; None when nobody can answer.
pub type Prompt<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Sources of a password other than the URL, so tests can supply them.
pub struct Sources<'a> {
    pub password_file: Option<&'a Path>,
    pub env_password: Option<String>,
    pub netrc: Option<String>,
    pub prompt: Option<Prompt<'a>>,
}

/// Resolves user and password in the documented order.
pub fn resolve_login(
    target: &Target,
    opt_user: Option<&str>,
    src: &Sources,
) -> Result<Login, String> {
    let mut user = target.user.clone().or_else(|| opt_user.map(str::to_string));
    if let Some(p) = &target.password {
        let user = user.unwrap_or_else(|| "anonymous".into());
        return Ok(Login {
            user,
            password: p.clone(),
        });
    }
    if let Some(f) = src.password_file {
        return Ok(Login {
            user: user.unwrap_or_else(|| "anonymous".into()),
            password: read_password_file(f)?,
        });
    }
    if let Some(p) = &src.env_password {
        return Ok(Login {
            user: user.unwrap_or_else(|| "anonymous".into()),
            password: Secret::new(p.clone()),
        });
    }
    if let Some(text) = &src.netrc {
        if let Some(e) = netrc_lookup(text, &target.host, user.as_deref()) {
            if user.is_none() {
                user = e.login.clone();
            }
            if let (Some(u), Some(p)) = (&user, e.password) {
                return Ok(Login {
                    user: u.clone(),
                    password: Secret::new(p),
                });
            }
        }
    }
    match user {
        None => Ok(Login {
            user: "anonymous".into(),
            password: Secret::new("ftpfs@"),
        }),
        Some(u) if u == "anonymous" || u == "ftp" => Ok(Login {
            user: u,
            password: Secret::new("ftpfs@"),
        }),
        Some(u) => match src.prompt.and_then(|p| p(&format!("Password for {u}@{}: ", target.host))) {
            Some(p) => Ok(Login { user: u, password: Secret::new(p) }),
            None => Err(format!(
                "no password for {u:?}: give it with -o password_file=FILE, FTPFS_PASSWORD, ~/.netrc, or in the URL"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_sources() -> Sources<'static> {
        Sources {
            password_file: None,
            env_password: None,
            netrc: None,
            prompt: None,
        }
    }

    #[test]
    fn url_parts_are_decoded() {
        let t = parse_url("ftp://us%40er:p%3Ass%2Fw@example.com:2121/my%20site/").unwrap();
        assert_eq!(t.host, "example.com");
        assert_eq!(t.port, 2121);
        assert_eq!(t.user.as_deref(), Some("us@er"));
        assert_eq!(t.password.as_ref().map(|p| p.expose()), Some("p:ss/w"));
        assert_eq!(t.path, "my site/");
    }

    #[test]
    fn url_defaults_and_absolute_paths() {
        let t = parse_url("ftp://host").unwrap();
        assert_eq!((t.port, t.user.clone(), t.path.as_str()), (21, None, ""));
        assert_eq!(parse_url("ftp://host//var/www").unwrap().path, "/var/www");
        assert_eq!(parse_url("ftp://host/%2Fvar").unwrap().path, "/var");
        assert_eq!(parse_url("ftp://[::1]:99/").unwrap().host, "::1");
    }

    #[test]
    fn malformed_urls_are_refused_without_leaking_the_password() {
        assert!(parse_url("http://host/").is_err());
        assert_eq!(parse_url("ftpes://host/").unwrap().tls, TlsMode::Explicit);
        assert_eq!(parse_url("ftp://host/").unwrap().tls, TlsMode::Off);
        let implicit = parse_url("ftps://host/").unwrap();
        assert_eq!((implicit.tls, implicit.port), (TlsMode::Implicit, 990));
        assert_eq!(parse_url("ftps://host:2990/").unwrap().port, 2990);
        assert_eq!(parse_url("ftpes://host/").unwrap().port, 21);
        assert!(parse_url("sftp://host/").unwrap_err().contains("ftps://"));
        assert!(parse_url("ftp://").is_err());
        assert!(parse_url("not a url").is_err());
        assert!(parse_url("ftp://h/a%0Ab").is_err());
        let e = parse_url("ftp://u:secret@host:99999/").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        assert_eq!(redact("ftp://u:secret@h/"), "ftp://u:****@h/");
    }

    #[test]
    fn display_hides_the_password() {
        let t = parse_url("ftp://u:secret@h:21/x").unwrap();
        assert_eq!(t.display("u"), "ftp://u@h:21/x");
    }

    #[test]
    fn netrc_machine_login_and_default() {
        let text = "machine a.com login alice password pa\n\
                    machine b.com\n  login bob\n  password pb\n\
                    macdef init\ncd /\n\n\
                    default login anon password pd\n";
        let e = netrc_lookup(text, "b.com", None).unwrap();
        assert_eq!(
            (e.login.as_deref(), e.password.as_deref()),
            (Some("bob"), Some("pb"))
        );
        assert_eq!(
            netrc_lookup(text, "c.com", None)
                .unwrap()
                .password
                .as_deref(),
            Some("pd")
        );
        assert!(netrc_lookup(text, "a.com", Some("mallory")).is_none());
        assert_eq!(
            netrc_lookup(text, "a.com", Some("alice"))
                .unwrap()
                .password
                .as_deref(),
            Some("pa")
        );
    }

    #[test]
    fn password_sources_in_order() {
        let t = parse_url("ftp://bob@b.com/").unwrap();
        let netrc = Some("machine b.com login bob password fromnetrc".to_string());
        let mut src = Sources {
            env_password: Some("fromenv".into()),
            netrc,
            ..no_sources()
        };
        assert_eq!(
            resolve_login(&t, None, &src).unwrap().password.expose(),
            "fromenv"
        );
        src.env_password = None;
        assert_eq!(
            resolve_login(&t, None, &src).unwrap().password.expose(),
            "fromnetrc"
        );
        let with_pw = parse_url("ftp://bob:inurl@b.com/").unwrap();
        assert_eq!(
            resolve_login(&with_pw, None, &src)
                .unwrap()
                .password
                .expose(),
            "inurl"
        );
    }

    /// A password file with `mode`, in a fresh directory.
    fn password_file(text: &str, mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, text).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, f)
    }

    #[test]
    fn password_file_readable_by_group_or_others_is_refused() {
        for mode in [0o640, 0o604, 0o660, 0o606, 0o644] {
            let (_dir, f) = password_file("secret\n", mode);
            let e = read_password_file(&f).unwrap_err();
            assert!(
                e.contains(&f.display().to_string()) && e.contains("chmod 600"),
                "{e}"
            );
            assert!(!e.contains("secret") && !e.contains('\n'), "{e}");
        }
        for mode in [0o600, 0o400] {
            let (_dir, f) = password_file("secret\n", mode);
            assert_eq!(read_password_file(&f).unwrap().expose(), "secret");
        }
        let (_dir, f) = password_file("secret\n", 0o640);
        let t = parse_url("ftp://bob@b.com/").unwrap();
        let src = Sources {
            password_file: Some(&f),
            ..no_sources()
        };
        assert!(resolve_login(&t, None, &src)
            .unwrap_err()
            .contains("chmod 600"));
    }

    #[test]
    fn password_file_comes_before_the_environment() {
        let (_dir, f) = password_file("filepw\nignored\n", 0o600);
        let t = parse_url("ftp://bob@b.com/").unwrap();
        let src = Sources {
            password_file: Some(&f),
            env_password: Some("env".into()),
            ..no_sources()
        };
        assert_eq!(
            resolve_login(&t, None, &src).unwrap().password.expose(),
            "filepw"
        );
    }

    #[test]
    fn netrc_supplies_the_user_too() {
        let t = parse_url("ftp://b.com/").unwrap();
        let src = Sources {
            netrc: Some("machine b.com login carol password pc".into()),
            ..no_sources()
        };
        let l = resolve_login(&t, None, &src).unwrap();
        assert_eq!((l.user.as_str(), l.password.expose()), ("carol", "pc"));
    }

    #[test]
    fn anonymous_without_user_and_prompt_or_error_with_one() {
        let t = parse_url("ftp://h/").unwrap();
        assert_eq!(
            resolve_login(&t, None, &no_sources()).unwrap().user,
            "anonymous"
        );
        let t = parse_url("ftp://bob@h/").unwrap();
        assert!(resolve_login(&t, None, &no_sources())
            .unwrap_err()
            .contains("no password"));
        let prompt = |_: &str| Some("typed".to_string());
        let src = Sources {
            prompt: Some(&prompt),
            ..no_sources()
        };
        assert_eq!(
            resolve_login(&t, None, &src).unwrap().password.expose(),
            "typed"
        );
        let l = resolve_login(&parse_url("ftp://h/").unwrap(), Some("opt"), &src).unwrap();
        assert_eq!(l.user, "opt");
    }
}
