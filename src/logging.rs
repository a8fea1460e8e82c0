//! Logging through `log` and env_logger, with one guarantee on top: the
//! password never reaches the log, even at trace level from suppaftp.

use log::{Log, Metadata, Record};

struct Masking {
    inner: env_logger::Logger,
}

impl Log for Masking {
    fn enabled(&self, m: &Metadata) -> bool {
        self.inner.enabled(m)
    }

    fn log(&self, record: &Record) {
        if !self.inner.matches(record) {
            return;
        }
        let text = record.args().to_string();
        if let Some(i) = text.find("PASS ") {
            // suppaftp traces every command line it sends, the password included.
            let masked = format!("{}PASS ****", &text[..i]);
            self.inner.log(
                &Record::builder()
                    .args(format_args!("{masked}"))
                    .level(record.level())
                    .target(record.target())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build(),
            );
        } else {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

/// Installs the logger: `RUST_LOG` if set, else warnings only (the FTP dialogue with `debug`).
pub fn init(debug: bool) {
    // suppaftp logs TLS shutdown hiccups as errors; ftpfs reports what matters itself.
    let default = if debug {
        "ftpfs=debug,info"
    } else {
        "warn,suppaftp=off"
    };
    let mut b = env_logger::Builder::new();
    b.parse_filters(default);
    if let Ok(s) = std::env::var("RUST_LOG") {
        b.parse_filters(&s);
    }
    b.format_timestamp_millis();
    let inner = b.build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Masking { inner })).is_ok() {
        log::set_max_level(max);
    }
}
