//! The character set of names on the server (`-o encoding=NAME`): UTF-8 by
//! default, exact ISO-8859-1, or any ASCII-compatible codepage that
//! encoding_rs knows (windows-1251, shift_jis, gbk, koi8-r...). suppaftp
//! applies it to every command sent and to every listing line received.

use std::fmt;
use std::io;

/// How names are written on the server.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub enum NameEncoding {
    /// UTF-8, the FTP default (RFC 2640).
    #[default]
    Utf8,
    /// ISO-8859-1: each byte is the code point of the same value (so every
    /// byte string round-trips). encoding_rs maps the label "latin1" to
    /// windows-1252 instead, as browsers do; ftpfs keeps the exact meaning.
    Latin1,
    /// Another ASCII-compatible codepage.
    Codepage(&'static encoding_rs::Encoding),
}

impl NameEncoding {
    /// Parses the value of `-o encoding=`: a WHATWG label (case-insensitive).
    pub fn from_label(label: &str) -> Result<NameEncoding, String> {
        let l = label.trim().to_ascii_lowercase();
        match l.as_str() {
            "utf8" | "utf-8" => return Ok(NameEncoding::Utf8),
            "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" | "iso_8859-1" | "l1" => {
                return Ok(NameEncoding::Latin1)
            }
            _ => {}
        }
        match encoding_rs::Encoding::for_label_no_replacement(l.as_bytes()) {
            Some(e) if e == encoding_rs::UTF_8 => Ok(NameEncoding::Utf8),
            // FTP commands are ASCII: UTF-16 and ISO-2022-JP cannot carry them.
            Some(e) if !e.is_ascii_compatible() => Err(format!(
                "option encoding: {label:?} ({}) cannot be used on FTP: commands are ASCII",
                e.name()
            )),
            Some(e) => Ok(NameEncoding::Codepage(e)),
            None => Err(format!(
                "option encoding: {label:?} is not a known character set \
                 (examples: utf8, latin1, windows-1251, shift_jis, gbk, koi8-r)"
            )),
        }
    }

    /// The canonical name, for logs and `ftpfs status`.
    pub fn name(&self) -> &'static str {
        match self {
            NameEncoding::Utf8 => "UTF-8",
            NameEncoding::Latin1 => "ISO-8859-1",
            NameEncoding::Codepage(e) => e.name(),
        }
    }

    /// Whether names are UTF-8 (then `OPTS UTF8 ON` is worth sending).
    pub fn is_utf8(&self) -> bool {
        *self == NameEncoding::Utf8
    }
}

impl fmt::Debug for NameEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn unwritable(c: impl fmt::Debug, enc: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{c:?} cannot be written in {enc}"),
    )
}

impl suppaftp::Encoding for NameEncoding {
    fn decode(&self, bytes: &[u8]) -> String {
        match self {
            NameEncoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
            NameEncoding::Latin1 => bytes.iter().map(|&b| b as char).collect(),
            NameEncoding::Codepage(e) => {
                let (text, had_errors) = e.decode_without_bom_handling(bytes);
                if had_errors {
                    log::warn!(
                        "a server line is not valid {}: {:?}",
                        e.name(),
                        String::from_utf8_lossy(bytes)
                    );
                }
                text.into_owned()
            }
        }
    }

    fn encode(&self, text: &str) -> io::Result<Vec<u8>> {
        match self {
            NameEncoding::Utf8 => Ok(text.as_bytes().to_vec()),
            NameEncoding::Latin1 => text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).map_err(|_| unwritable(c, "ISO-8859-1")))
                .collect(),
            NameEncoding::Codepage(e) => {
                let (bytes, _, unmappable) = e.encode(text);
                if unmappable {
                    return Err(unwritable(text, e.name()));
                }
                Ok(bytes.into_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use suppaftp::Encoding;

    #[test]
    fn labels() {
        assert_eq!(NameEncoding::from_label("UTF-8"), Ok(NameEncoding::Utf8));
        assert_eq!(NameEncoding::from_label("latin1"), Ok(NameEncoding::Latin1));
        assert_eq!(
            NameEncoding::from_label("cp1251").map(|e| e.name()),
            Ok("windows-1251")
        );
        assert_eq!(
            NameEncoding::from_label("Shift_JIS").map(|e| e.name()),
            Ok("Shift_JIS")
        );
        assert!(NameEncoding::from_label("utf-16le")
            .unwrap_err()
            .contains("ASCII"));
        assert!(NameEncoding::from_label("iso-2022-jp").is_err());
        assert!(NameEncoding::from_label("klingon")
            .unwrap_err()
            .contains("not a known"));
    }

    #[test]
    fn latin1_round_trips_every_byte_and_refuses_what_it_cannot_write() {
        let all: Vec<u8> = (0..=255).collect();
        let l = NameEncoding::Latin1;
        assert_eq!(l.encode(&l.decode(&all)).unwrap(), all);
        assert_eq!(l.decode(&l.encode("café").unwrap()), "café");
        assert!(l.encode("日本").is_err());
    }

    #[test]
    fn codepages_translate_both_ways() {
        let cp1251 = NameEncoding::from_label("windows-1251").unwrap();
        let bytes = b"\xcf\xf0\xe8\xe2\xe5\xf2.txt";
        assert_eq!(cp1251.decode(bytes), "Привет.txt");
        assert_eq!(cp1251.encode("Привет.txt").unwrap(), bytes);
        assert!(cp1251.encode("日本").is_err());

        let sjis = NameEncoding::from_label("sjis").unwrap();
        let bytes = sjis.encode("日本語.txt").unwrap();
        assert_eq!(bytes, b"\x93\xfa\x96\x7b\x8c\xea.txt");
        assert_eq!(sjis.decode(&bytes), "日本語.txt");
        // ASCII (the commands themselves) is unchanged.
        assert_eq!(sjis.encode("RETR /a b").unwrap(), b"RETR /a b");
    }
}
