//! Hides the password from `/proc/PID/cmdline` (and so from `ps`) after start-up,
//! by rewriting the process's own argument area in place.

use std::fs;

/// Replaces the argument `secret_arg` (exactly as it was given) by `replacement`
/// in the memory that `/proc/self/cmdline` shows. Returns whether it worked.
pub fn replace_arg(secret_arg: &str, replacement: &str) -> bool {
    let Ok(stat) = fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // arg_start and arg_end are fields 48 and 49 of stat(5); field 3 is fields[0].
    let (Some(start), Some(end)) = (
        fields.get(45).and_then(|v| v.parse::<usize>().ok()),
        fields.get(46).and_then(|v| v.parse::<usize>().ok()),
    ) else {
        return false;
    };
    let Ok(cmdline) = fs::read("/proc/self/cmdline") else {
        return false;
    };
    if start == 0 || end <= start || end - start != cmdline.len() {
        return false;
    }
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let mut out = Vec::with_capacity(cmdline.len());
    let mut found = false;
    for (i, a) in args.iter().enumerate() {
        if i + 1 == args.len() && a.is_empty() {
            break; // after the final NUL
        }
        if *a == secret_arg.as_bytes() {
            out.extend_from_slice(replacement.as_bytes());
            found = true;
        } else {
            out.extend_from_slice(a);
        }
        out.push(0);
    }
    if !found || out.len() > cmdline.len() {
        return false;
    }
    out.resize(cmdline.len(), 0);
    // SAFETY: [start, end) is this process's own argument area, as the kernel reports
    // it, and its current content was just checked to be exactly /proc/self/cmdline.
    // Nothing else in the program reads argv after std's start-up copy.
    unsafe {
        let area = std::slice::from_raw_parts_mut(start as *mut u8, end - start);
        if area != cmdline.as_slice() {
            return false;
        }
        area.copy_from_slice(&out);
    }
    true
}
