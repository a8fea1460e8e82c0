//! Reference material generated from the command line definition: the man
//! page (`ftpfs man`) and shell completion scripts (`ftpfs completions SHELL`).
//!
//! `docs/ftpfs.1` and `completions/` in the repository are these outputs,
//! written by `scripts/gen-reference.sh`; tests/reference.rs keeps them fresh.

use std::io;

use clap::{Arg, Command, CommandFactory};
use clap_mangen::Man;
use roff::{bold, italic, roman, Inline, Roff};

use crate::cli::{Cli, Shell, OPTIONS, URL_HELP};

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> Vec<u8> {
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(generator, &mut Cli::command(), "ftpfs", &mut out);
    out
}

/// The man page, ftpfs(1), in roff.
pub fn man_page() -> io::Result<Vec<u8>> {
    let mut cmd = Cli::command();
    cmd.build();
    let version = cmd.get_version().unwrap_or_default().to_string();
    let mut page = AQ_PREAMBLE.to_vec();
    // Written here rather than by clap_mangen, which drops an empty date.
    page.extend(format!(".TH FTPFS 1 \"\" \"ftpfs {version}\" \"User Commands\"\n").bytes());
    let mut chunk = Vec::new();
    head_sections(&cmd).to_writer(&mut chunk)?;
    append(&mut page, &mut chunk);
    Man::new(cmd.clone()).render_options_section(&mut chunk)?;
    append(&mut page, &mut chunk);
    tail_sections(&cmd).to_writer(&mut chunk)?;
    append(&mut page, &mut chunk);
    Ok(page)
}

/// The definition of `\*(Aq` (a straight apostrophe) that roff writes before
/// every rendered chunk; the page needs it once, at the top.
const AQ_PREAMBLE: &[u8] = b".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

/// Moves `chunk` to the end of `page`, without a repeated preamble.
fn append(page: &mut Vec<u8>, chunk: &mut Vec<u8>) {
    page.extend_from_slice(chunk.strip_prefix(AQ_PREAMBLE).unwrap_or(chunk));
    chunk.clear();
}

/// NAME, SYNOPSIS and DESCRIPTION.
fn head_sections(cmd: &Command) -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["NAME"]);
    let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
    let mut chars = about.chars();
    let about: String = chars
        .next()
        .map(|c| c.to_ascii_lowercase())
        .into_iter()
        .chain(chars)
        .collect();
    r.text([roman(format!("ftpfs - {about}"))]);

    r.control("SH", ["SYNOPSIS"]);
    let mut lines = vec![usage(&["ftpfs"], cmd)];
    lines.extend(
        cmd.get_subcommands()
            .map(|sub| usage(&["ftpfs", sub.get_name()], sub)),
    );
    lines.push(vec![bold("ftpfs"), roman(" "), bold("--help")]);
    lines.push(vec![bold("ftpfs"), roman(" "), bold("--version")]);
    for (i, line) in lines.into_iter().enumerate() {
        if i > 0 {
            r.control("br", []);
        }
        r.text(line);
    }

    r.control("SH", ["DESCRIPTION"]);
    r.text([
        bold("ftpfs"),
        roman(" mounts the directory that "),
        italic("URL"),
        roman(" names on an FTP server at "),
        italic("MOUNTPOINT"),
        roman(", through FUSE. It logs in once to check the login, mounts, and then goes to the background (unless "),
        bold("-f"),
        roman(" or "),
        bold("-d"),
        roman(" is given). Listings and attributes are cached for "),
        bold("cache_timeout"),
        roman(" seconds; files are read and written through a pool of FTP connections."),
    ]);
    for paragraph in URL_HELP {
        r.control("PP", []);
        r.text([roman(*paragraph)]);
    }
    r.control("PP", []);
    r.text([
        roman("Unmount with "),
        bold("fusermount3 -u"),
        roman(" "),
        italic("MOUNTPOINT"),
        roman(", or stop ftpfs with SIGTERM or SIGINT: either unmounts cleanly, after pending uploads. A mount can also come from "),
        italic("/etc/fstab"),
        roman(" with the type "),
        bold("fuse.ftpfs"),
        roman(" (see EXAMPLES)."),
    ]);
    r
}

/// One synopsis line: `words`, then the options and positionals of `cmd`.
fn usage(words: &[&str], cmd: &Command) -> Vec<Inline> {
    let mut items: Vec<Vec<Inline>> = words.iter().map(|w| vec![bold(*w)]).collect();
    let shown = |a: &&Arg| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version");
    for arg in cmd.get_arguments().filter(shown) {
        if let Some(short) = arg.get_short() {
            let mut item = vec![roman("["), bold(format!("-{short}"))];
            if arg.get_action().takes_values() {
                item.extend([roman(" "), italic(value_name(arg)), roman("]...")]);
            } else {
                item.push(roman("]"));
            }
            items.push(item);
        }
    }
    for arg in cmd.get_positionals().filter(shown) {
        items.push(vec![italic(value_name(arg))]);
    }
    items.join(&roman(" "))
}

/// `arg`'s value name, as the help shows it.
fn value_name(arg: &Arg) -> String {
    match arg.get_value_names() {
        Some(names) => names.join(" "),
        None => arg.get_id().as_str().to_uppercase(),
    }
}

/// MOUNT OPTIONS, COMMANDS, EXIT STATUS, ENVIRONMENT, FILES, EXAMPLES and SEE ALSO.
fn tail_sections(cmd: &Command) -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["MOUNT OPTIONS"]);
    r.text([
        roman("Given with "),
        bold("-o"),
        roman(", comma separated, as in mount(8). The options that mount(8) and mount.fuse3(8) handle themselves (such as noauto, _netdev, nofail, user, defaults, nodev, nosuid and x-*) are accepted and ignored."),
    ]);
    for (name, default, help) in OPTIONS {
        r.control("TP", []);
        r.text(match name.split_once('=') {
            Some((key, value)) => vec![bold(key), roman("="), italic(value)],
            None => vec![bold(*name)],
        });
        r.text([roman(format!("{help} [default: {default}]"))]);
    }

    r.control("SH", ["COMMANDS"]);
    r.text([roman(
        "Instead of URL, the first argument may name one of these commands:",
    )]);
    for sub in cmd.get_subcommands() {
        r.control("TP", []);
        r.text(usage(&["ftpfs", sub.get_name()], sub));
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        r.text([roman(format!("{about}."))]);
    }

    r.control("SH", ["EXIT STATUS"]);
    r.text([roman("0 when the mount ends cleanly (or a command succeeds); 1 on an error, which is one line on standard error starting with \"ftpfs: \"; 2 for a command line that does not parse.")]);

    r.control("SH", ["ENVIRONMENT"]);
    let env = [
        ("FTPFS_PASSWORD", "The password, when neither the URL nor password_file gives one."),
        ("NETRC", "The netrc file to read instead of ~/.netrc."),
        ("RUST_LOG", "What to log, as env_logger reads it; for example RUST_LOG=ftpfs=debug. The log goes to standard error in the foreground, and to syslog (facility daemon, tag ftpfs) in the background."),
        ("FTPFS_SYSLOG_SOCKET", "The syslog socket used in the background, instead of /dev/log."),
    ];
    for (name, text) in env {
        r.control("TP", []);
        r.text([bold(name)]);
        r.text([roman(text)]);
    }

    r.control("SH", ["FILES"]);
    r.control("TP", []);
    r.text([italic("~/.netrc")]);
    r.text([roman("Logins and passwords, one \"machine HOST login USER password PASSWORD\" entry per server (or a \"default\" entry); used when the URL has no password. See netrc(5).")]);

    r.control("SH", ["EXAMPLES"]);
    let examples = [
        ("Mount a directory; the password is asked for on the terminal:", "ftpfs ftp://alice@ftp.example.com/pub /mnt/site"),
        ("Mount an anonymous server read-only, in the foreground:", "ftpfs -f -o ro,cache_timeout=300 ftp://ftp.example.com/ /mnt/site"),
        ("A line for /etc/fstab (then: mount /mnt/site):", "ftp://user@host/path /mnt/site fuse.ftpfs noauto,_netdev,user=NAME,password_file=/etc/ftpfs/site.pass 0 0"),
        ("Unmount:", "fusermount3 -u /mnt/site"),
        ("Install the bash completion for the current user:", "ftpfs completions bash > ~/.local/share/bash-completion/completions/ftpfs"),
    ];
    for (i, (what, command)) in examples.into_iter().enumerate() {
        if i > 0 {
            r.control("PP", []);
        }
        r.text([roman(what)]);
        r.control("RS", ["4"]);
        r.control("nf", []);
        r.text([roman(command)]);
        r.control("fi", []);
        r.control("RE", []);
    }

    r.control("SH", ["SEE ALSO"]);
    r.text([roman(
        "fusermount3(1), mount.fuse3(8), mount(8), fstab(5), netrc(5)",
    )]);
    r
}
