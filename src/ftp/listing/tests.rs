//! Fixture-driven tests (listings captured from real servers, see
//! tests/fixtures/listings/README.md) and robustness properties across all the
//! parsers.

use super::time::utc;
use super::*;
use crate::remote::EntryKind;
use proptest::prelude::*;
use std::time::{Duration, UNIX_EPOCH};

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_string).collect()
}

fn find<'a>(entries: &'a [Entry], name: &str) -> &'a Entry {
    entries
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no entry {name:?} in {entries:#?}"))
}

/// When the fixtures were captured (a few minutes after the files were made).
fn capture_time() -> SystemTime {
    utc(2026, 11, 23, 16, 20, 0)
}

const PYFTPDLIB_MLSD: &str = include_str!("../../../tests/fixtures/listings/pyftpdlib-mlsd.txt");
const PYFTPDLIB_MLSD_UNIX: &str =
    include_str!("../../../tests/fixtures/listings/pyftpdlib-mlsd-unix.txt");
const PYFTPDLIB_LIST: &str = include_str!("../../../tests/fixtures/listings/pyftpdlib-list.txt");
const VSFTPD_LIST: &str = include_str!("../../../tests/fixtures/listings/vsftpd-list.txt");
const DOS_IIS: &str = include_str!("../../../tests/fixtures/listings/dos-iis.txt");
const RFC3659_MLSD: &str = include_str!("../../../tests/fixtures/listings/rfc3659-mlsd.txt");
const HANDWRITTEN_MLSD: &str =
    include_str!("../../../tests/fixtures/listings/handwritten-mlsd.txt");
const PUREFTPD_MLSD: &str = include_str!("../../../tests/fixtures/listings/pureftpd-mlsd.txt");
const PUREFTPD_LIST: &str = include_str!("../../../tests/fixtures/listings/pureftpd-list.txt");
const PROFTPD_MLSD: &str = include_str!("../../../tests/fixtures/listings/proftpd-mlsd.txt");
const PROFTPD_LIST: &str = include_str!("../../../tests/fixtures/listings/proftpd-list.txt");

/// Names in the captured scratch directory that every real-server listing shows.
const COMMON_NAMES: [&str; 16] = [
    " leading-space-dir",
    ".hidden",
    "big.bin",
    "empty.txt",
    "link-abs",
    "link-rel",
    "link-to-dir",
    "name with  spaces.txt",
    "numeric-owner.txt",
    "old.txt",
    "private.txt",
    "recent.txt",
    "semi;colon.txt",
    "setuid.bin",
    "small.txt",
    "ünïcødé-日本.txt",
];

#[test]
fn fixture_pyftpdlib_mlsd() {
    let entries = parse_mlsd(&lines(PYFTPDLIB_MLSD));
    // pyftpdlib stats through symlinks, so the dangling one is missing.
    assert_eq!(entries.len(), 17);
    for name in COMMON_NAMES {
        find(&entries, name);
    }
    assert!(entries.iter().all(|e| e.kind != EntryKind::Symlink));
    let e = find(&entries, "big.bin");
    assert_eq!(
        (e.kind, e.size, e.mode),
        (EntryKind::File, 5_000_000, Some(0o444))
    );
    assert_eq!(find(&entries, "empty.txt").size, 0);
    let e = find(&entries, " leading-space-dir");
    assert_eq!((e.kind, e.mode), (EntryKind::Dir, Some(0o555)));
    assert_eq!(find(&entries, "link-to-dir").kind, EntryKind::Dir);
    assert_eq!(find(&entries, "link-rel").size, 6);
    assert_eq!(
        find(&entries, "old.txt").mtime,
        Some(utc(2019, 1, 1, 0, 0, 0))
    );
    assert_eq!(
        find(&entries, "recent.txt").mtime,
        Some(utc(2026, 11, 23, 16, 13, 16))
    );
    assert_eq!(find(&entries, "ünïcødé-日本.txt").size, 1);
}

#[test]
fn fixture_pyftpdlib_mlsd_with_unix_mode() {
    let entries = parse_mlsd(&lines(PYFTPDLIB_MLSD_UNIX));
    assert_eq!(entries.len(), 17);
    assert_eq!(find(&entries, "private.txt").mode, Some(0o600));
    assert_eq!(find(&entries, "small.txt").mode, Some(0o644));
    assert_eq!(find(&entries, "subdir").mode, Some(0o755));
    // pyftpdlib masks unix.mode with 0o777: the setuid bit is lost.
    assert_eq!(find(&entries, "setuid.bin").mode, Some(0o755));
    assert_eq!(find(&entries, "name with  spaces.txt").size, 3);
    assert_eq!(find(&entries, "semi;colon.txt").size, 4);
}

#[test]
fn fixture_rfc3659_mlsd() {
    let entries = parse_mlsd(&lines(RFC3659_MLSD));
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "foobar",
            "device",
            "block",
            "writable",
            "promiscuous",
            "no-exec",
            "two words",
            " leading space",
            "file1",
            "incoming",
            "capmux.tar.z",
            "hatch.c",
            "MacIP-02.txt"
        ]
    );
    let e = find(&entries, "foobar");
    assert_eq!(
        (e.kind, e.target.as_deref()),
        (EntryKind::Symlink, Some("/foobar"))
    );
    assert_eq!(find(&entries, "device").kind, EntryKind::File);
    assert_eq!(find(&entries, "writable").mode, Some(0o644));
    assert_eq!(find(&entries, "promiscuous").mode, Some(0o755));
    assert_eq!(find(&entries, "no-exec").mode, Some(0));
    let e = find(&entries, "capmux.tar.z");
    assert_eq!(
        (e.size, e.mtime),
        (25_730, Some(utc(1994, 7, 28, 9, 58, 54)))
    );
}

#[test]
fn fixture_handwritten_mlsd() {
    let entries = parse_mlsd(&lines(HANDWRITTEN_MLSD));
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "projects",
            "abc.txt",
            "run; me.sh",
            "latest",
            "current",
            "tmp",
            "absurd-size.bin",
            "far-future.txt",
            "year-zero.txt",
            "no-facts-at-all"
        ]
    );
    let e = find(&entries, "projects");
    assert_eq!(
        (e.kind, e.size, e.mode),
        (EntryKind::Dir, 4096, Some(0o750))
    );
    let e = find(&entries, "run; me.sh");
    assert_eq!((e.size, e.mode), (1234, Some(0o4755)));
    assert_eq!(
        e.mtime,
        Some(utc(2024, 1, 15, 10, 30, 0) + Duration::from_millis(123))
    );
    let e = find(&entries, "latest");
    assert_eq!((e.kind, e.target.as_deref()), (EntryKind::Symlink, None));
    let e = find(&entries, "current");
    assert_eq!(
        (e.kind, e.target.as_deref()),
        (EntryKind::Symlink, Some("releases/v1.2"))
    );
    assert_eq!(find(&entries, "tmp").mode, Some(0o1777));
    assert_eq!(find(&entries, "absurd-size.bin").size, 0);
    assert_eq!(
        find(&entries, "far-future.txt").mtime,
        Some(utc(9999, 12, 31, 23, 59, 59))
    );
    assert_eq!(find(&entries, "year-zero.txt").mtime, None);
}

#[test]
fn fixture_pyftpdlib_list() {
    let entries = parse_list(&lines(PYFTPDLIB_LIST), capture_time());
    assert_eq!(entries.len(), 18);
    check_unix_fixture(&entries);
}

#[test]
fn fixture_vsftpd_list() {
    let all = lines(VSFTPD_LIST);
    assert!(
        all.iter().any(|l| l.ends_with(" ..")),
        "fixture shows . and .."
    );
    let entries = parse_list(&all, capture_time());
    assert_eq!(entries.len(), all.len() - 2);
    check_unix_fixture(&entries);
}

/// Every name of the scratch directory but `hidden` is listed, `.` and `..`
/// are not, and big.bin is a plain 0644 file of 5,000,000 bytes.
fn check_common_names(entries: &[Entry], hidden: &[&str]) {
    for name in COMMON_NAMES {
        if hidden.contains(&name) {
            assert!(!entries.iter().any(|e| e.name == name), "{name}");
        } else {
            find(entries, name);
        }
    }
    assert!(!entries.iter().any(|e| e.name == "." || e.name == ".."));
    let e = find(entries, "big.bin");
    assert_eq!(
        (e.kind, e.size, e.mode),
        (EntryKind::File, 5_000_000, Some(0o644))
    );
}

/// The pure-ftpd and ProFTPD fixtures were captured from the same scratch
/// directory (tests/fixtures/listings/README.md), at 18:11 UTC that day.
fn check_second_capture(entries: &[Entry], symlinks_have_targets: bool, hidden: &[&str]) {
    check_common_names(entries, hidden);
    let e = find(entries, "big.bin");
    assert_eq!(
        e.mtime,
        Some(utc(
            2026,
            11,
            23,
            18,
            11,
            if symlinks_have_targets { 0 } else { 32 }
        ))
    );
    let e = find(entries, " leading-space-dir");
    assert_eq!((e.kind, e.mode), (EntryKind::Dir, Some(0o755)));
    assert_eq!(find(entries, "private.txt").mode, Some(0o600));
    assert_eq!(find(entries, "small.txt").size, 6);
    assert_eq!(find(entries, "empty.txt").size, 0);
    assert_eq!(
        find(entries, "old.txt").mtime,
        Some(utc(2019, 1, 1, 0, 0, 0))
    );
    for (name, target) in [("link-rel", "small.txt"), ("link-to-dir", "subdir")] {
        let e = find(entries, name);
        assert_eq!(e.kind, EntryKind::Symlink, "{name}");
        if symlinks_have_targets {
            assert_eq!(e.target.as_deref(), Some(target), "{name}");
        }
    }
}

#[test]
fn fixture_pureftpd_mlsd() {
    // Upper-case UNIX.* facts, "sizd" for directories, OS.unix=slink: types.
    let all = lines(PUREFTPD_MLSD);
    let entries = parse_mlsd(&all);
    assert_eq!(entries.len(), all.len() - 2, "cdir and pdir are dropped");
    check_second_capture(&entries, false, &[]);
    assert_eq!(find(&entries, "dangling").kind, EntryKind::Symlink);
    assert_eq!(find(&entries, "subdir").kind, EntryKind::Dir);
    assert_eq!(find(&entries, "setuid.bin").mode, Some(0o755));
}

#[test]
fn fixture_proftpd_mlsd() {
    // Facts in another order, no size for directories, OS.unix=symlink types.
    let all = lines(PROFTPD_MLSD);
    let entries = parse_mlsd(&all);
    assert_eq!(entries.len(), all.len() - 2, "cdir and pdir are dropped");
    // ProFTPD leaves out symlinks that point outside the root or nowhere.
    check_second_capture(&entries, false, &["link-abs"]);
    assert!(!entries.iter().any(|e| e.name == "dangling"));
    assert_eq!(find(&entries, "subdir").size, 0);
    assert_eq!(find(&entries, "numeric-owner.txt").size, 2);
}

#[test]
fn fixture_pureftpd_and_proftpd_list() {
    for fixture in [PUREFTPD_LIST, PROFTPD_LIST] {
        let all = lines(fixture);
        let entries = parse_list(&all, utc(2026, 11, 23, 18, 20, 0));
        assert_eq!(entries.len(), all.len() - 2, "{fixture}");
        check_second_capture(&entries, true, &[]);
        let e = find(&entries, "dangling");
        assert_eq!(e.target.as_deref(), Some("does-not-exist"));
        assert_eq!(find(&entries, "setuid.bin").mode, Some(0o755));
    }
}

/// What both captured Unix-style listings of the scratch directory must give.
fn check_unix_fixture(entries: &[Entry]) {
    check_common_names(entries, &[]);
    assert_eq!(find(entries, "empty.txt").size, 0);
    let e = find(entries, " leading-space-dir");
    assert_eq!((e.kind, e.mode), (EntryKind::Dir, Some(0o755)));
    assert_eq!(find(entries, "subdir").kind, EntryKind::Dir);
    for (name, target) in [
        ("link-rel", "small.txt"),
        ("link-abs", "/etc/hostname"),
        ("link-to-dir", "subdir"),
        ("dangling", "does-not-exist"),
    ] {
        let e = find(entries, name);
        assert_eq!(
            (e.kind, e.target.as_deref()),
            (EntryKind::Symlink, Some(target))
        );
        assert_eq!(e.size, target.len() as u64);
    }
    assert_eq!(find(entries, "private.txt").mode, Some(0o600));
    assert_eq!(find(entries, "setuid.bin").mode, Some(0o4755));
    assert_eq!(
        find(entries, "old.txt").mtime,
        Some(utc(2019, 1, 1, 0, 0, 0))
    );
    assert_eq!(
        find(entries, "recent.txt").mtime,
        Some(utc(2026, 11, 23, 16, 13, 0))
    );
    assert_eq!(find(entries, "numeric-owner.txt").size, 1);
    assert_eq!(find(entries, "name with  spaces.txt").size, 3);
    assert_eq!(find(entries, "semi;colon.txt").size, 4);
    assert_eq!(find(entries, "ünïcødé-日本.txt").size, 1);
}

#[test]
fn fixture_dos_iis() {
    let entries = parse_list(&lines(DOS_IIS), capture_time());
    assert_eq!(entries.len(), 14);
    let e = find(&entries, "dirname");
    assert_eq!(
        (e.kind, e.mtime),
        (EntryKind::Dir, Some(utc(2024, 1, 15, 10, 30, 0)))
    );
    let e = find(&entries, "file name.txt");
    assert_eq!((e.kind, e.size), (EntryKind::File, 1234));
    assert_eq!(
        find(&entries, "$LDR$").mtime,
        Some(utc(1995, 5, 26, 10, 57, 0))
    );
    assert_eq!(
        find(&entries, "bin").mtime,
        Some(utc(1997, 1, 20, 12, 48, 0))
    );
    assert_eq!(
        find(&entries, "midnight.log").mtime,
        Some(utc(2024, 2, 29, 0, 5, 0))
    );
    assert_eq!(find(&entries, "Dir With Spaces").kind, EntryKind::Dir);
    assert_eq!(find(&entries, "four-digit-year.exe").size, 143_712);
    let e = find(&entries, "logs-24h");
    assert_eq!(
        (e.kind, e.mtime),
        (EntryKind::Dir, Some(utc(2024, 1, 15, 14, 5, 0)))
    );
    assert_eq!(find(&entries, "huge.iso").size, 5_000_000_000);
    assert_eq!(find(&entries, "Ünïcödé räksmörgås.txt").size, 42);
}

proptest! {
    #[test]
    fn parsers_never_panic_on_arbitrary_text(s in "\\PC{0,200}", secs in any::<i64>()) {
        let now = if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs() >> 2)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs() >> 30)
        };
        check_entries(parse_mlsd_line(&s).into_iter().collect());
        check_entries(parse_list_line(&s, now).into_iter().collect());
        check_entries(parse_mlsd(&[s.clone(), s.clone()]));
        check_entries(parse_list(std::slice::from_ref(&s), now));
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let s = String::from_utf8_lossy(&bytes).into_owned();
        check_entries(parse_mlsd(std::slice::from_ref(&s)));
        check_entries(parse_list(std::slice::from_ref(&s), SystemTime::now()));
    }

    #[test]
    fn parsers_never_panic_on_listing_shaped_text(
        unix in "[-dlcbps?][rwxsStTl-]{9}[+.@ ]? {1,3}[0-9]{1,3} [a-z0-9]{0,8} ?[a-z0-9]{0,8} [0-9]{1,25} [A-Za-z]{3} [0-9]{1,3} ([0-9]{1,2}:[0-9]{2}(:[0-9]{2})?|[0-9]{1,6}) [ \\PC]{0,20}",
        dos in "[0-9]{1,2}[-/][0-9]{1,2}[-/][0-9]{1,5} {1,3}[0-9]{1,2}:[0-9]{1,3}([AaPp][Mm])? {1,9}(<DIR>|[0-9]{1,25}) {1,9}[ \\PC]{0,20}",
        mlsd in "(([A-Za-z.]{1,9}=[\\PC&&[^; ]]{0,20};){0,6}|(type=OS\\.unix=s(lin|ym)k:[a-z/]{0,9};)) ?[ ;\\PC]{0,20}",
    ) {
        let now = SystemTime::now();
        check_entries(parse_list(&[unix, dos.clone()], now));
        check_entries(parse_list(std::slice::from_ref(&dos), UNIX_EPOCH));
        check_entries(parse_mlsd(&[mlsd]));
    }
}

/// Whatever comes out must satisfy the [`Entry`] invariants.
fn check_entries(entries: Vec<Entry>) {
    for e in entries {
        assert!(is_valid_name(&e.name), "{e:?}");
        assert!(e.mode.is_none_or(|m| m <= 0o7777), "{e:?}");
        if let Some(t) = e.mtime {
            assert!(t >= UNIX_EPOCH && t <= utc(9999, 12, 31, 23, 59, 59) + Duration::from_secs(1));
        }
    }
}
