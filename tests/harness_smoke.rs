//! Smoke tests for the integration-test harness itself (tests/support):
//! both server kinds start, accept logins, and record the commands they get.

mod support;

use std::fs;
use std::time::Duration;

use support::{FtpServer, RawFtp, ServerKind};

fn login_feat_quit(server: &FtpServer) {
    let (mut ftp, code, greeting) =
        RawFtp::connect(server.port, Duration::from_secs(10)).expect("connect");
    assert_eq!(code, 220, "greeting: {greeting}");

    ftp.login(&server.user, &server.password)
        .unwrap_or_else(|e| panic!("login as {}: {e}\n{}", server.user, server.log()));

    let (code, feat) = ftp.cmd("FEAT").expect("FEAT");
    assert_eq!(code, 211, "FEAT reply: {feat}");
    assert!(feat.contains("SIZE"), "FEAT reply: {feat}");

    let (code, reply) = ftp.cmd("QUIT").expect("QUIT");
    assert_eq!(code, 221, "QUIT reply: {reply}");
}

fn check_commands(server: &FtpServer) {
    let cmds = server.commands();
    for expected in [
        format!("USER {}", server.user),
        "PASS ****".to_string(),
        "FEAT".to_string(),
        "QUIT".to_string(),
    ] {
        assert!(
            cmds.contains(&expected),
            "{:?}: {expected:?} not in {cmds:?}\n{}",
            server.kind,
            server.log()
        );
    }
    assert!(
        !cmds.iter().any(|c| c.contains(&server.password)),
        "password leaked into {cmds:?}"
    );
    assert_eq!(server.commands_named("feat"), vec!["FEAT".to_string()]);

    server.clear_commands();
    assert!(server.commands().is_empty(), "{:?}", server.commands());
}

#[test]
fn pyftpdlib_records_commands_and_masks_password() {
    let server = FtpServer::pyftpdlib();
    assert_eq!(server.kind, ServerKind::Pyftpdlib);
    assert_eq!(
        server.url(),
        format!("ftp://ftpuser@127.0.0.1:{}/", server.port)
    );
    assert!(server.root.is_dir());

    login_feat_quit(&server);
    check_commands(&server);

    // The raw command log on disk must not contain the password either.
    let raw = fs::read_to_string(server.cmdlog_path()).expect("read cmdlog");
    assert!(raw.lines().any(|l| l == "PASS ****"), "cmdlog:\n{raw}");
    assert!(!raw.contains(&server.password), "cmdlog:\n{raw}");

    // Commands after clear_commands() are recorded again.
    let mut ftp = server.raw_login().expect("login");
    let (code, _) = ftp.cmd("NOOP").expect("NOOP");
    assert_eq!(code, 200);
    let cmds = server.commands();
    assert!(cmds.contains(&"NOOP".to_string()), "{cmds:?}");
    assert!(!cmds.contains(&"FEAT".to_string()), "{cmds:?}");
}

#[test]
fn pyftpdlib_no_mlsd_option() {
    let server = FtpServer::pyftpdlib_with_args(&["--no-mlsd"]);
    let mut ftp = server.raw_login().expect("login");
    let (_, feat) = ftp.cmd("FEAT").expect("FEAT");
    assert!(!feat.contains("MLST"), "FEAT still lists MLST: {feat}");
    let (code, _) = ftp.cmd("MLSD").expect("MLSD");
    assert_eq!(code, 500, "MLSD must be unknown");

    let full = FtpServer::pyftpdlib();
    let mut ftp = full.raw_login().expect("login");
    let (_, feat) = ftp.cmd("FEAT").expect("FEAT");
    assert!(feat.contains("MLST"), "FEAT lacks MLST: {feat}");
}

#[test]
fn pyftpdlib_anonymous_is_read_only() {
    let server = FtpServer::pyftpdlib_anonymous();
    assert_eq!(server.url(), format!("ftp://127.0.0.1:{}/", server.port));
    let mut ftp = server.raw_login().expect("anonymous login");
    let (code, reply) = ftp.cmd("MKD newdir").expect("MKD");
    assert_eq!(code, 550, "anonymous MKD must be refused: {reply}");
    assert!(!server.path("newdir").exists());
}

#[test]
fn vsftpd_records_commands() {
    let server = FtpServer::vsftpd();
    assert_eq!(server.kind, ServerKind::Vsftpd);
    assert_eq!(
        server.url(),
        format!("ftp://ftpfstest@127.0.0.1:{}/", server.port)
    );

    login_feat_quit(&server);
    check_commands(&server);

    // Chrooted into our root, and files we create are usable by the server.
    server.create_file("dir/hello.txt", b"hello\n");
    let mut ftp = server.raw_login().expect("login");
    let (code, reply) = ftp.cmd("PWD").expect("PWD");
    assert_eq!(code, 257, "{reply}");
    assert!(reply.contains("\"/\""), "{reply}");
    let (code, reply) = ftp.cmd("SIZE dir/hello.txt").expect("SIZE");
    assert_eq!((code, reply.trim()), (213, "213 6"));
    let (code, reply) = ftp.cmd("RNFR dir/hello.txt").expect("RNFR");
    assert_eq!(code, 350, "{reply}");
    let (code, reply) = ftp.cmd("RNTO dir/renamed.txt").expect("RNTO");
    assert_eq!(code, 250, "{reply}");
    assert!(server.path("dir/renamed.txt").is_file());
    let (code, reply) = ftp.cmd("MKD made by vsftpd").expect("MKD");
    assert_eq!(code, 257, "{reply}");
    assert!(server.path("made by vsftpd").is_dir());

    let cmds = server.commands();
    assert!(cmds.contains(&"SIZE dir/hello.txt".to_string()), "{cmds:?}");
    assert!(cmds.contains(&"MKD made by vsftpd".to_string()), "{cmds:?}");
}

#[test]
fn vsftpd_rejects_wrong_password() {
    let server = FtpServer::vsftpd();
    let (mut ftp, code, _) = RawFtp::connect(server.port, Duration::from_secs(10)).unwrap();
    assert_eq!(code, 220);
    assert!(ftp.login(&server.user, "not-the-password").is_err());
}

#[test]
fn helpers_work() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let c = dir.path().join("c");
    support::write_file(&a, 300_001, 7);
    support::write_file(&b, 300_001, 7);
    support::write_file(&c, 300_001, 8);
    assert_eq!(fs::metadata(&a).unwrap().len(), 300_001);
    assert_eq!(fs::read(&a).unwrap(), support::gen_bytes(300_001, 7));
    assert!(support::files_equal(&a, &b));
    assert!(!support::files_equal(&a, &c));
    support::write_file(&b, 300_000, 7);
    assert!(!support::files_equal(&a, &b));
    assert_eq!(support::first_difference(&a, &b).unwrap(), Some(300_000));
    assert!(!support::is_mounted(dir.path()));
    assert!(support::mount_fstype(std::path::Path::new("/")).is_some());
}
