//! Small lexical helpers the parsers share: field splitting, digit runs and
//! case-insensitive prefixes. Nothing here allocates beyond the field list.

/// Byte ranges of the first `max` space/tab-separated fields of `line`.
pub(super) fn split_fields(line: &str, max: usize) -> Vec<(usize, usize)> {
    let mut fields = Vec::with_capacity(max.min(16));
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() && fields.len() < max {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let start = i;
        while i < b.len() && b[i] != b' ' && b[i] != b'\t' {
            i += 1;
        }
        fields.push((start, i));
    }
    fields
}

pub(super) fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())
}

/// The value of a short run of ASCII digits (at most 18, so it cannot overflow).
pub(super) fn digits_value(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    digits.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

pub(super) fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}
